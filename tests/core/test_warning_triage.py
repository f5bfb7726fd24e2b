"""Which reads while tracing are risky: values the user's code reads, and library reads nobody reviewed.

Each benign class below was found by tracing realistic models (see
``pyro_jitmagic.run.jit_warnings.REVIEWED_READS``); each test traces the smallest model
that triggers it and checks it is reported benign, with the library function
that read it. Reads of sizes are benign wherever they happen. The risky ones
must stay risky and name the user's line.
"""

from __future__ import annotations

import re
import warnings

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from patches import assert_nothing_patched
from pyro import poutine
from pyro.infer import SVI, Trace_ELBO, TraceGraph_ELBO
from pyro.infer.autoguide import AutoLowRankMultivariateNormal, AutoNormal
from pyro.optim import Adam

from pyro_jitmagic import compiled
from pyro_jitmagic.run.jit_warnings import INTEGER_READ, REVIEWED_READS, SIZE_READ


def _trace(model, guide, *args, elbo=Trace_ELBO, **kwargs):
    """Compile one step of ``model``; the report."""
    svi = SVI(model, guide, Adam({"lr": 0.01}), elbo())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", category=UserWarning)  # the twin's RiskyTraceWarning
        with compiled(backend="pyro") as run:
            svi.step(*args, **kwargs)
    assert run.report.error is None
    assert run.report.compile_count == 1
    return run.report


def _no_guide(*args, **kwargs):
    pass


def _benign_from(report, origin):
    found = [w for w in report.warnings if w.origin == origin]
    assert found, f"no warning read in {origin}: {[(w.kind, w.origin) for w in report.warnings]}"
    assert {w.kind for w in found} == {"benign"}
    assert all(w.why for w in found)
    return found


# -- benign: torch's and Pyro's own checks ----------------------------------------


def bernoulli_logits(data):
    logits = pyro.param("logits", torch.zeros(data.size(0)))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Bernoulli(logits=logits), obs=data)


def test_bernoullis_shape_check_is_benign():
    report = _trace(bernoulli_logits, _no_guide, torch.ones(4))
    _benign_from(report, "torch/nn/functional.py: binary_cross_entropy_with_logits")
    assert report.risky_warnings == ()


def validated(data):
    loc = pyro.param("loc", torch.tensor(0.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, 1.0, validate_args=True), obs=data)


def test_distribution_validation_is_benign():
    report = _trace(validated, _no_guide, models.data())
    _benign_from(report, "torch/distributions/distribution.py: Distribution.__init__")
    _benign_from(report, "torch/distributions/distribution.py: Distribution._validate_sample")
    assert report.risky_warnings == ()


def test_the_low_rank_normals_shape_checks_are_benign():
    report = _trace(models.gaussian, AutoLowRankMultivariateNormal(models.gaussian), models.data())
    _benign_from(report, "torch/distributions/lowrank_multivariate_normal.py: "
                         "LowRankMultivariateNormal.__init__")
    assert report.risky_warnings == ()


def correlated(data):
    corr = pyro.sample("corr", dist.LKJCholesky(2, torch.tensor(1.0)))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.MultivariateNormal(torch.zeros(2), scale_tril=corr), obs=data)


def test_a_cholesky_factors_size_from_its_length_is_benign():
    report = _trace(correlated, AutoNormal(correlated), torch.randn(5, 2))
    _benign_from(report, "torch/distributions/utils.py: vec_to_tril_matrix")
    assert report.risky_warnings == ()


class _Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.rnn = torch.nn.RNN(input_size=1, hidden_size=2, batch_first=True)

    def forward(self, x):
        out, _ = self.rnn(x.unsqueeze(-1))
        return out[:, -1, 0]


ENCODER = _Encoder()


def rnn_guide(data):
    pyro.module("encoder", ENCODER)
    with pyro.plate("data", data.size(0)):
        pyro.sample("z", dist.Normal(ENCODER(data), 1.0))


def rnn_model(data):
    with pyro.plate("data", data.size(0)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(z.unsqueeze(-1).expand(data.shape), 1.0).to_event(1), obs=data)


def test_an_rnns_shape_checks_are_benign():
    report = _trace(rnn_model, rnn_guide, torch.randn(3, 4))
    _benign_from(report, "torch/nn/modules/rnn.py: RNNBase.check_input")
    _benign_from(report, "torch/nn/modules/rnn.py: RNNBase.check_hidden_size")
    assert report.risky_warnings == ()


def printing(data):
    loc = pyro.param("loc", torch.tensor(0.0))
    print(f"loc is {loc:.3f}", loc)
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=data)


def test_printing_a_tensor_is_benign(capsys):
    report = _trace(printing, _no_guide, models.data())
    assert [w for w in report.warnings if w.origin.startswith("torch/_tensor_str.py: ")]
    _benign_from(report, "torch/_tensor.py: Tensor.__format__")
    assert report.risky_warnings == ()
    assert "loc is 0.000" in capsys.readouterr().out


def masked(data, mask):
    # as a deep Markov model masks each time step: a (batch, 1) mask on a (batch, dim) distribution
    loc = pyro.param("loc", torch.zeros(2))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc.expand(data.size(0), 2), 1.0).mask(mask[:, None]).to_event(1),
                    obs=data)


def test_a_masks_shape_handling_is_benign():
    mask = torch.tensor([True, False] * 3)
    report = _trace(masked, _no_guide, torch.randn(6, 2), mask)
    _benign_from(report, "pyro/distributions/util.py: broadcast_shape")
    _benign_from(report, "pyro/distributions/torch_distribution.py: MaskedDistribution.__init__")
    assert report.risky_warnings == ()


def local_latents(data):
    with pyro.plate("data", data.size(0)):
        z = pyro.sample("z", dist.Normal(0.0, 1.0))
        pyro.sample("obs", dist.Normal(z, 1.0), obs=data)


def test_a_plates_check_of_a_params_size_is_benign():
    # AutoNormal's params have the plate's dim: the plate compares their size with its own
    report = _trace(local_latents, AutoNormal(local_latents), models.data())
    _benign_from(report, "pyro/poutine/subsample_messenger.py: SubsampleMessenger._postprocess_message")
    assert report.risky_warnings == ()


def coin(data):
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("data", data.size(0)):
        c = pyro.sample("c", dist.Bernoulli(p))
        pyro.sample("obs", dist.Normal(c * 2.0, 1.0), obs=data)


def coin_guide(data):
    q = pyro.param("q", torch.full((data.size(0),), 0.5), constraint=dist.constraints.unit_interval)
    pyro.sample("p", dist.Beta(2.0, 2.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("c", dist.Bernoulli(q))


def test_tracegraphs_sum_over_plates_is_benign():
    report = _trace(coin, coin_guide, models.data(), elbo=TraceGraph_ELBO)
    _benign_from(report, "pyro/infer/util.py: MultiFrameTensor.sum_to")
    assert report.risky_warnings == ()


FLOW = dist.transforms.affine_autoregressive(2, hidden_dims=[4])


def flow_model(data):
    # scoring the guide's sample under a flow inverts the flow
    pyro.module("flow", FLOW)
    base = dist.Normal(torch.zeros(2), 1.0).to_event(1)
    with pyro.plate("data", data.size(0)):
        pyro.sample("z", dist.TransformedDistribution(base, [FLOW]))


def flow_guide(data):
    with pyro.plate("data", data.size(0)):
        pyro.sample("z", dist.Normal(pyro.param("z_loc", torch.zeros(data.size(0), 2)), 1.0).to_event(1))


def test_an_autoregressive_flows_inverse_is_benign():
    report = _trace(flow_model, flow_guide, torch.randn(5, 2))
    reads = _benign_from(report, "pyro/distributions/transforms/affine_autoregressive.py: "
                                 "AffineAutoregressive._inverse")
    assert any("Iterating over a tensor" in w.message for w in reads)  # over its permutation
    assert report.risky_warnings == ()


def test_each_reviewed_read_has_a_test_here():
    import inspect
    import sys

    text = re.sub(r'"\s*\n\s*"', "", inspect.getsource(sys.modules[__name__]))  # join split strings
    for reviewed in REVIEWED_READS:
        named = reviewed.path + ": " + ("" if reviewed.function == "*" else reviewed.function)
        assert named in text, reviewed


# -- risky: the user's own reads --------------------------------------------------


def test_a_branch_on_a_tensor_stays_risky_at_its_line():
    report = _trace(models.branchy, models.branchy_guide, models.data())
    (risky,) = report.risky_warnings
    assert risky.source == "scale = 1.0 if loc > 0 else 2.0" and risky.origin == ""
    assert "Converting a tensor to a Python boolean" in risky.message


def _reading(line):
    source = (f"def model(data, lengths):\n"
              f"    loc = pyro.param('loc', torch.tensor(0.0))\n"
              f"    {line}\n"
              f"    with pyro.plate('data', data.size(0)):\n"
              f"        pyro.sample('obs', dist.Normal(loc, 1.0), obs=data)\n")
    namespace = {"pyro": pyro, "torch": torch, "dist": dist}
    exec(compile(source, "user_model.py", "exec"), namespace)
    return namespace["model"]


@pytest.mark.parametrize(("line", "says"), [
    ("n = int(lengths[0])", "Python integer"),
    ("x = float(loc)", "Python float"),
    ("x = loc.item()", "Python number"),
    ("x = lengths.tolist()", "Python list"),
    ("x = lengths.numpy()", "NumPy array"),
    ("x = 1.0 if loc > 0 else 2.0", "Python boolean"),
    ("x = [t for t in range(lengths.max())]", INTEGER_READ),
    ("x = [loc] * lengths[0]", INTEGER_READ),
    ("x = ['a', 'b', 'c', 'd', 'e', 'f'][lengths[1]]", INTEGER_READ),
    ("x = 2 if lengths.size(0) + lengths[0] > 4 else 3", "Python boolean"),  # a size and a value
])
def test_a_value_read_in_the_users_code_stays_risky_at_its_line(line, says):
    report = _trace(_reading(line), _no_guide, models.data(), torch.tensor([3, 5]))
    (risky,) = report.risky_warnings
    assert says in risky.message
    assert risky.where == "user_model.py:3" and risky.origin == ""


@pytest.mark.parametrize(("line", "says"), [
    ("x = len(lengths)", "Using len to get tensor shape"),
    ("x = [v for v in lengths]", "Iterating over a tensor"),
    ("x = 1 if data.size(0) == 20 else 2", "Python boolean"),
    ("x = int(data.shape[0])", "Python integer"),
    ("x = [t for t in range(data.size(0))]", None),  # no warning at all: a size
    ("x = [t for t in range(1, data.size(0) + 1)]", None),  # arithmetic on a size is a size
    ("x = [t for t in range(max(data.size(0) // 2, 1))]", "Python boolean"),  # max() compares sizes
])
def test_a_size_read_in_the_users_code_is_benign(line, says):
    # a trace assumes the shapes it was traced with, whatever reads them
    report = _trace(_reading(line), _no_guide, models.data(), torch.tensor([3, 5]))
    assert report.risky_warnings == ()
    reads = [w for w in report.warnings if w.where == "user_model.py:3"]
    if says is None:
        assert reads == []
    else:
        (read,) = reads
        assert says in read.message and (read.kind, read.why) == ("benign", SIZE_READ)


def loop_bound(seqs, lengths):
    loc = pyro.param("loc", torch.tensor(0.0))
    with pyro.plate("seqs", seqs.size(0)):
        for t in pyro.markov(range(lengths.max())):
            pyro.sample(f"obs_{t}", dist.Normal(loc, 1.0), obs=seqs[:, t])


def test_a_loop_bound_read_from_a_tensor_is_risky_though_torch_says_nothing(patched_targets):
    report = _trace(loop_bound, _no_guide, torch.randn(3, 5), torch.tensor([3, 5, 4]))
    (risky,) = report.risky_warnings
    assert risky.message == INTEGER_READ
    assert risky.source == "for t in pyro.markov(range(lengths.max())):"
    assert risky.category == "TracerWarning" and risky.count == 1
    assert_nothing_patched(patched_targets)  # torch.Tensor is as it was once the trace ended
    assert list(range(torch.tensor(3))) == [0, 1, 2]


def test_a_tensor_sliced_by_a_tensor_is_not_reported():
    # the trace keeps a slice's bound dynamic, so it stays right for other values
    def model(data, n):
        loc = pyro.param("loc", torch.tensor(0.0))
        head = data[:n]
        with pyro.plate("data", head.size(0)):
            pyro.sample("obs", dist.Normal(loc, 1.0), obs=head)

    report = _trace(model, _no_guide, models.data(), torch.tensor(5))
    assert report.risky_warnings == ()


def test_warnings_the_user_silenced_stay_silent():
    def quiet(data, lengths):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.util.ignore_jit_warnings():
            steps = list(range(lengths.max()))
        with pyro.plate("data", data.size(0)):
            pyro.sample("obs", dist.Normal(loc, float(len(steps))), obs=data)

    report = _trace(quiet, _no_guide, models.data(), torch.tensor([3, 5]))
    assert report.risky_warnings == ()


# -- risky: a library read nobody reviewed ---------------------------------------


def binomial_support(data, n):
    p = pyro.param("p", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
    support = dist.Binomial(total_count=n, probs=p).enumerate_support()
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(support.float().mean() * p, 1.0), obs=data)


def test_an_unreviewed_library_read_stays_risky_and_names_the_function():
    # Binomial.enumerate_support reads total_count as a Python int: a different n
    # would need a different trace, and torch's read is not one we reviewed
    report = _trace(binomial_support, _no_guide, models.data(), torch.tensor(3.0))
    risky = report.risky_warnings
    assert risky and {w.origin for w in risky} == {
        "torch/distributions/binomial.py: Binomial.enumerate_support"}
    assert {w.source for w in risky} == {
        "support = dist.Binomial(total_count=n, probs=p).enumerate_support()"}
    assert "read in torch/distributions/binomial.py: Binomial.enumerate_support" in str(report)


def test_a_library_read_through_a_provenance_tensor_is_judged_by_its_reader():
    # TraceGraph_ELBO wraps tensors in Pyro's provenance tensors, whose
    # __torch_function__ forwards Bernoulli's shape check: still the check's read
    report = _trace(coin, coin_guide, models.data(), elbo=TraceGraph_ELBO)
    assert not [w for w in report.warnings if w.origin.startswith("pyro/ops/provenance.py")]
    _benign_from(report, "torch/nn/functional.py: binary_cross_entropy_with_logits")


def test_scale_and_mask_handlers_raise_no_risky_warning():
    # a DMM's KL annealing and masks, with a tensor annealing factor
    def model(data, mask, annealing):
        loc = pyro.param("loc", torch.tensor(0.0))
        with pyro.plate("data", data.size(0)), poutine.scale(scale=annealing):
            pyro.sample("obs", dist.Normal(loc, 1.0).mask(mask), obs=data)

    report = _trace(model, _no_guide, models.data(), torch.tensor([True, False] * 10), torch.tensor(0.5))
    assert report.risky_warnings == ()


# -- deprecation notes ------------------------------------------------------------

# torch 2.13's texts (torch/jit/_trace.py, _script.py, _serialization.py, _freeze.py,
# _async.py, _fuser.py); torch 2.14 raises the same texts as FutureWarning.
DEPRECATION_TEXTS = [
    "`torch.jit.trace` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    "`torch.jit.trace` is not supported in Python 3.14+ and may break. "
    "Please switch to `torch.compile` or `torch.export`.",
    "`torch.jit.trace_method` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    "`torch.jit.trace_method` is not supported in Python 3.14+ and may break. "
    "Please switch to `torch.compile` or `torch.export`.",
    "`torch.jit.script` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    "`torch.jit.script` is not supported in Python 3.14+ and may break. "
    "Please switch to `torch.compile` or `torch.export`.",
    "`torch.jit.script_method` is deprecated. Please switch to `torch.compile` or `torch.export`.",
    "`torch.jit.save` is deprecated. Please switch to `torch.export`.",
    "`torch.jit.load` is not supported in Python 3.14+ and may break. Please switch to `torch.export`.",
    "`torch.jit.freeze` is deprecated. Please use `torch.compile` instead.",
    "`torch.jit.fork` is deprecated. Please use `torch.compile` instead.",
    "`optimize` is deprecated and has no effect. Use `with torch.jit.optimized_execution()` instead",
    "Lite Interpreter is deprecated. Please consider switching to ExecuTorch.",
]


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
@pytest.mark.parametrize("text", DEPRECATION_TEXTS)
def test_each_known_deprecation_text_is_a_deprecation_note(text, category):
    from pyro_jitmagic.run.jit_warnings import classify

    assert classify(category, text, "torch/jit/_trace.py") == "deprecation"


def test_every_deprecation_warning_in_the_installed_torch_jit_is_a_note():
    # read torch's own source, so that a text added by a newer torch fails here first
    import ast
    import pathlib

    from pyro_jitmagic.run.jit_warnings import classify

    categories = {"DeprecationWarning": DeprecationWarning, "FutureWarning": FutureWarning}
    found = []
    for path in sorted(pathlib.Path(torch.jit.__file__).parent.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "warn"
                    and node.args and isinstance(node.args[0], ast.Constant)):
                continue
            category = node.args[1] if len(node.args) > 1 else next(
                (k.value for k in node.keywords if k.arg == "category"), None)
            name = getattr(category, "id", None)
            if name in categories:
                found.append((path.name, node.args[0].value))
                assert classify(categories[name], node.args[0].value, str(path)) == "deprecation", (
                    path.name, node.args[0].value)
    assert any("`torch.jit.trace`" in text for _, text in found)


@pytest.mark.parametrize("category", [DeprecationWarning, FutureWarning])
def test_the_python_314_text_is_captured_not_shown(category):
    text = DEPRECATION_TEXTS[1]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with compiled(backend="pyro") as run:
            warnings.warn(text, category, stacklevel=1)
    assert not shown
    (note,) = run.report.warnings
    assert (note.kind, note.category, note.message) == ("deprecation", category.__name__, text)
