"""Every private Pyro and torch name the package uses is where it was checked: one test each.

When an upgrade of Pyro or torch moves one, its test fails naming it, and
``pyro_jitmagic/compat/`` is the one folder to change. Then what compat's
functions rebuild by hand (Pyro's cache key, the capture's fake values, the C++
compiler search) is checked against the libraries' own.
"""

from __future__ import annotations

import functools
import warnings

import models
import pyro
import pyro.infer.mcmc.util
import pyro.ops.jit
import pytest
import torch
from pyro import infer
from pyro.infer.autoguide import AutoNormal
from pyro.infer.mcmc import HMC, NUTS
from pyro.optim import Adam

import pyro_jitmagic.compat as private
from pyro_jitmagic.compat import capture
from pyro_jitmagic.compat import jit as compat


def _quietly(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the JIT's warnings, traced by hand
            return fn(*args, **kwargs)

    return run


@_quietly
def _stepped(elbo_class, model=models.gaussian, guide=models.gaussian_guide, data=None):
    """A Jit* ELBO after one SVI step: it holds its compiled function."""
    elbo = elbo_class()
    infer.SVI(model, guide, Adam({"lr": 0.01}), elbo).step(models.data() if data is None else data)
    return elbo


@_quietly
def _nuts_setup(jit_compile=True):
    """A NUTS kernel after its setup, and the names of the functions torch traced meanwhile."""
    traced, trace = [], torch.jit.trace

    def watched(fn, *args, **kwargs):
        traced.append(getattr(fn, "__name__", ""))
        return trace(fn, *args, **kwargs)

    kernel = NUTS(models.gaussian, jit_compile=jit_compile, ignore_jit_warnings=True)
    torch.jit.trace = watched
    try:
        kernel.setup(0, models.data())
    finally:
        torch.jit.trace = trace
    return kernel, traced


def _optimizer():
    return torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)


def _baseline_params():
    pyro.clear_param_store()
    elbo = infer.TraceGraph_ELBO()
    svi = infer.SVI(models.coin_model, models.coin_guide, Adam({"lr": 0.01}), elbo)
    svi.step(models.COINS)
    return list(pyro.get_param_store().keys())


# (what it belongs to, name) -> what should hold it (a truthy check where it is a value)
CHECKS = {
    ("pyro.ops.jit", "_hashable_args_kwargs"): lambda: pyro.ops.jit,
    ("pyro.ops.jit.CompiledFunction", "_param_names"):
        lambda: compat.compiled_function(_stepped(infer.JitTrace_ELBO)),
    ("pyro.infer.Jit*_ELBO", "_loss_and_surrogate_loss"): lambda: vars(_stepped(infer.JitTrace_ELBO)),
    ("pyro.infer.JitTraceMeanField_ELBO", "_differentiable_loss"):
        lambda: vars(_stepped(infer.JitTraceMeanField_ELBO)),
    ("pyro.infer.JitTraceGraph_ELBO", "_jit_loss_and_surrogate_loss"):
        lambda: vars(_stepped(infer.JitTraceGraph_ELBO)),
    ("pyro.infer.tracegraph_elbo", "__baseline_avg_downstream_cost_"):
        lambda: {name[:len(compat.BASELINE_PARAM_PREFIX)]: name for name in _baseline_params()},
    ("pyro.infer.mcmc.util", "_PEMaker"): lambda: pyro.infer.mcmc.util,
    ("pyro.infer.mcmc.util._PEMaker", "_compiled_fn"):
        lambda: {k: v for k, v in vars(compat.potential_maker(_nuts_setup()[0].potential_fn)).items()
                 if v is not None},
    ("pyro.infer.mcmc.util._PEMaker", "_potential_fn"): lambda: compat.potential_maker_class(),
    ("pyro.infer.mcmc.util._PEMaker", "_potential_fn_jit"): lambda: compat.potential_maker_class(),
    ("pyro.infer.mcmc.util", "_pe_jit"): lambda: dict.fromkeys(_nuts_setup()[1]),
    ("pyro.infer.mcmc.HMC", "_jit_compile"): lambda: HMC(models.gaussian),
    ("pyro.infer.mcmc.HMC", "_ignore_jit_warnings"): lambda: HMC(models.gaussian),
    ("pyro.infer.mcmc.HMC", "_jit_options"): lambda: HMC(models.gaussian),
    ("pyro.infer.mcmc.api", "_MultiSampler"): lambda: pyro.infer.mcmc.api,
    **{("pyro.infer.mcmc.HMC", name): lambda: _nuts_setup(jit_compile=False)[0]
       for name in ("_t", "_warmup_steps", "_accept_cnt", "_mean_accept_prob", "_divergences",
                    "_adapter")},
    ("pyro.infer.mcmc.NUTS", "_max_tree_depth"): lambda: NUTS(models.gaussian),
    ("pyro.infer.mcmc.NUTS", "_max_sliced_energy"): lambda: NUTS(models.gaussian),
    ("pyro.infer.autoguide.AutoGuide", "_setup_prototype"): lambda: AutoNormal(models.gaussian),
    ("pyro.infer.ELBO", "_guess_max_plate_nesting"): lambda: infer.TraceEnum_ELBO(),
    ("pyro.optim.PyroOptim", "_state_waiting_to_be_consumed"): lambda: Adam({"lr": 0.01}),
    ("torch._C", "_get_graph_executor_optimize"): lambda: torch._C,
    ("torch._C", "_set_graph_executor_optimize"): lambda: torch._C,
    ("torch._C", "_jit_set_profiling_executor"): lambda: torch._C,
    ("torch._C", "_jit_set_profiling_mode"): lambda: torch._C,
    ("torch._C", "_get_tracing_state"): lambda: torch._C,
    ("torch.Tensor", "_version"): lambda: torch.ones(1),
    ("pyro.poutine.runtime", "_PYRO_STACK"): lambda: pyro.poutine.runtime,
    ("pyro.params.param_store.ParamStoreDict", "_constraints"): lambda: pyro.get_param_store(),
    ("pyro.params.param_store.ParamStoreDict", "_params"): lambda: pyro.get_param_store(),
    ("torch.optim.Optimizer", "_optimizer_step_pre_hooks"): lambda: _optimizer(),
    ("torch.optim.Optimizer", "_optimizer_step_post_hooks"): lambda: _optimizer(),
}


@pytest.mark.parametrize(("where", "name", "use"), private.PRIVATE_NAMES,
                         ids=[f"{where}.{name}" for where, name, _ in private.PRIVATE_NAMES])
def test_each_private_name_is_where_it_was_checked(where, name, use):
    checked = f"checked against torch {private.TORCH_CHECKED} and pyro {private.PYRO_CHECKED}"
    if (where, name) in CHECKS:  # on an instance, or on a class found by a pattern
        holder = CHECKS[(where, name)]()
        present = name in holder if isinstance(holder, dict) else hasattr(holder, name)
        assert present, f"{where}.{name} ({use}) is gone or moved ({checked}): update pyro_jitmagic/compat/"
        return
    try:
        private.resolve(where, name)
    except (AttributeError, ImportError) as exc:
        pytest.fail(f"{where}.{name} ({use}) is gone: {exc} ({checked}): update pyro_jitmagic/compat/")


def test_every_check_is_of_a_listed_name():
    assert set(CHECKS) <= {(where, name) for where, name, _ in private.PRIVATE_NAMES}


def test_resolve_names_what_is_missing():
    with pytest.raises(AttributeError, match=r"pyro\.infer\.util\._no_such_helper is gone"):
        private.resolve("pyro.infer.util", "_no_such_helper")


def test_versions_checked_are_the_ones_installed():
    # when these differ, read the names above against the new versions and update the two constants
    assert torch.__version__.split("+")[0] == private.TORCH_CHECKED
    assert pyro.__version__ == private.PYRO_CHECKED


def test_the_key_rebuilt_by_hand_is_pyros():
    args, kwargs = (torch.ones(2), torch.zeros(3)), {"length": 24, "name": "x"}
    assert compat.fast_key(args, kwargs) == pyro.ops.jit._hashable_args_kwargs(args, kwargs), (
        "pyro.ops.jit._hashable_args_kwargs keys hashable keyword values another way now: "
        "update compat.fast_key")


def test_a_jit_elbo_keeps_the_model_and_guide_of_its_first_call_where_compat_looks():
    elbo = _stepped(infer.JitTrace_ELBO)
    assert compat.bound_model_and_guide(elbo) == (models.gaussian, models.gaussian_guide), (
        "Jit*_ELBO's compiled closure no longer holds 'model' and 'guide': "
        "update compat.bound_model_and_guide")


def test_a_potential_is_found_behind_its_compiled_and_eager_forms():
    compiled, _ = _nuts_setup(jit_compile=True)
    eager, _ = _nuts_setup(jit_compile=False)
    assert compat.is_compiled_potential(compiled.potential_fn)
    assert not compat.is_compiled_potential(eager.potential_fn)
    for kernel in (compiled, eager):
        assert isinstance(compat.potential_maker(kernel.potential_fn), compat.potential_maker_class())


def test_the_model_is_found_inside_the_handlers_pyro_puts_around_it():
    from pyro_jitmagic.compat import capture

    for jit_compile in (True, False):
        kernel, _ = _nuts_setup(jit_compile=jit_compile)
        parts = capture.potential_parts(kernel.potential_fn)
        model, handlers, model_args, model_kwargs, transforms, _ = parts
        assert model is models.gaussian, (
            "initialize_model no longer wraps the model in poutine.enum(config_enumerate(model)) as "
            "compat reads it: update compat.capture.potential_parts")
        assert [h[0] for h in handlers] == ["enum", "infer_config"]
        assert len(model_args) == 1 and torch.equal(model_args[0], models.data())
        assert model_kwargs == {} and set(transforms) == {"loc", "scale"}
    assert capture.potential_parts(lambda params: 0.0) is None  # a potential of the user's own


def test_a_capture_records_the_same_graph_and_values_as_make_fx_alone(monkeypatch):
    """Captures make each node's fake value directly (one fake mode per capture, for speed): the
    graph and every node's recorded shape, strides, dtype and device are make_fx's own."""
    import contextlib

    import models
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer import SVI, TraceEnum_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from torch.fx.experimental import proxy_tensor

    from pyro_jitmagic.wholestep.capture import capture_svi_step

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    sequence = torch.randn(6)
    guide = AutoDiagonalNormal(poutine.block(models.hmm, expose=["trans", "emit_scale", "emit_loc"]))
    svi = SVI(models.hmm, guide, pyro.optim.Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=1))
    kwargs = {"num_sequences": 10, "length": 6}
    svi.step(sequence, **kwargs)
    extract_val = proxy_tensor.extract_val

    def values(captured):
        return [(n.name, tuple(v.shape), v.stride(), v.dtype, v.device, type(v).__name__)
                for n in captured.graph.graph.nodes
                if isinstance(v := n.meta.get("val"), torch.Tensor)]

    fast = capture_svi_step(svi, (sequence,), kwargs)
    assert proxy_tensor.extract_val is extract_val  # put back
    monkeypatch.setattr(capture, "_one_fake_mode", contextlib.nullcontext)
    plain = capture_svi_step(svi, (sequence,), kwargs)
    assert fast.graph.code == plain.graph.code
    assert values(fast) == values(plain) and len(values(fast)) > 100
    assert all(kind == "FakeTensor" for *_, kind in values(fast))
    pyro.clear_param_store()


@pytest.mark.skipif(__import__("sys").platform != "linux", reason="the search is done here on Linux only")
def test_the_cxx_compiler_is_found_as_inductor_finds_it_without_importing_inductor(monkeypatch):
    import sys

    import torch._inductor.codecache
    import torch._inductor.config

    inductors = capture.cxx_compiler()  # inductor's own search (its code cache is loaded), then ours
    monkeypatch.delitem(sys.modules, "torch._inductor.codecache")  # ours, by inductor's config
    assert capture.cxx_compiler() == inductors
    assert "torch._inductor.codecache" not in sys.modules  # (its import is what the search saves)
    with torch._inductor.config.patch({"cpp.cxx": (None, "no-such-compiler-here")}):  # (torch's own way)
        assert capture.cxx_compiler() == (None, "no-such-compiler-here")
    monkeypatch.delitem(sys.modules, "torch._inductor.config")  # ours, before inductor's config
    monkeypatch.setenv("CXX", "no-such-compiler-either")
    assert capture.cxx_compiler() == (None, "no-such-compiler-either")
    monkeypatch.delenv("CXX")
    assert capture.cxx_compiler() == inductors


def test_the_one_call_tensor_check_tells_apart_what_a_compiled_step_binds():
    examples = [torch.nn.Parameter(torch.zeros(2)), torch.tensor(1.0), torch.zeros(4, 3).t()]
    check = capture.tensor_check(examples)
    assert check is not None and check(*examples)
    assert check(torch.nn.Parameter(torch.ones(2)), torch.tensor(5.0), torch.ones(4, 3).t())
    for i, other in enumerate([torch.nn.Parameter(torch.zeros(3)), torch.tensor(1.0, dtype=torch.float64),
                               torch.zeros(3, 4)]):
        assert not check(*examples[:i], other, *examples[i + 1:]), f"argument {i}"
    assert not check(examples[0], 1.0, examples[2])  # not a tensor


def test_a_dicts_version_changes_whenever_the_dict_does_and_only_then():
    import collections

    version = capture.dict_version()
    assert version is not None  # (torch 2.13 on this Python has one)
    group = {"lr": 0.01, "betas": (0.9, 0.999)}
    state = collections.defaultdict(dict)  # (torch's optimizer state)
    seen = {version(group), version(state)}
    assert len(seen) == 2  # (no two dicts share one)
    before = version(group)
    _ = group["lr"], group.get("eps"), list(group.items())
    assert version(group) == before  # read, not changed
    changes = [(group, lambda: group.__setitem__("lr", 0.02)), (group, lambda: group.pop("betas")),
               (group, lambda: group.update(eps=1e-8)),
               (state, lambda: state[0])]  # (a defaultdict's missing key, looked up, is added)
    for target, change in changes:
        before = version(target)
        change()
        assert version(target) != before


GENERATED = '''
import torch
from torch import empty_strided as _empty

def empty_strided_cpu(size, stride, dtype):
    ALLOCATED.append(size)
    return _empty(size, stride, dtype=dtype)

ALLOCATED = []

def cpp_fused_add_0(out, a, scratch):
    scratch.fill_(2.0)  # (what a kernel writes before it reads)
    out.copy_(a + scratch)

def cpp_fused_mul_1(scratch, out):
    scratch.copy_(out * 3.0)

class Runner:
    def call(self, args):
        arg0_1, = args
        args.clear()
        buf0 = empty_strided_cpu((3, ), (1, ), torch.float32)
        buf1 = empty_strided_cpu((3, ), (1, ), torch.float32)
        cpp_fused_add_0(buf0, arg0_1, buf1)
        buf2 = buf1; del buf1  # reuse
        cpp_fused_mul_1(buf2, buf0)
        buf3 = empty_strided_cpu((3, ), (1, ), torch.float32)
        cpp_fused_add_0(buf3, arg0_1, buf2)
        buf4 = torch.ops.aten.neg.default(buf3)
        del buf2
        return (buf0, buf3, buf4)
'''


def _generated(tmp_path, monkeypatch, source, name):
    """A module of inductor-shaped generated code, imported, and its Runner."""
    import importlib

    (tmp_path / f"{name}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module(name)
    return module, module.Runner()


def test_pooled_holds_over_only_the_buffers_that_the_kernels_alone_use(tmp_path, monkeypatch):
    module, runner = _generated(tmp_path, monkeypatch, GENERATED, "generated_call")
    pooled = capture.pooled(runner.call)
    assert pooled is not None
    x = torch.tensor([1.0, 2.0, 3.0])
    expected = runner.call([x])
    module.ALLOCATED.clear()
    first, second = pooled([x]), pooled([x])
    # buf1 (and its alias buf2) only the kernels see: allocated once, when pooled; buf0 is returned,
    # buf3 is returned and passed to an op that may alias it: both allocated on every call
    assert len(module.ALLOCATED) == 4
    for got in (first, second):
        for a, b in zip(got, expected, strict=True):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert first[0] is not second[0]  # what a call returns is its own


GENERATED_DRAWS = '''
import torch
from torch import empty_strided as _empty

def empty_strided_cpu(size, stride, dtype):
    ALLOCATED.append(size)
    return _empty(size, stride, dtype=dtype)

ALLOCATED = []

def cpp_fused_noise_0(out, a, noise, scratch):
    scratch.copy_(noise * 2.0)
    out.copy_(a + scratch)

def cpp_fused_more_noise_1(out, noise):
    out.add_(noise)

class Runner:
    def call(self, args):
        arg0_1, = args
        args.clear()
        buf0 = empty_strided_cpu((3, ), (1, ), torch.float32)
        buf1 = torch.ops.aten.normal_functional.default(buf0)
        buf2 = buf1; del buf1
        buf3 = buf0; del buf0  # reuse
        buf4 = empty_strided_cpu((3, ), (1, ), torch.float32)
        cpp_fused_noise_0(buf4, arg0_1, buf2, buf3)
        buf7 = torch.ops.aten.normal_functional.default(buf3)
        cpp_fused_more_noise_1(buf4, buf7)
        buf5 = empty_strided_cpu((2, ), (1, ), torch.float32)
        buf6 = torch.ops.aten.normal_functional.default(buf5)
        return (buf4, buf6)
'''


def test_pooled_for_a_caller_that_reads_at_once_holds_the_returned_buffers_too(tmp_path, monkeypatch):
    module, runner = _generated(tmp_path, monkeypatch, GENERATED, "generated_once")
    x = torch.tensor([1.0, 2.0, 3.0])
    expected = [t.tolist() for t in runner.call([x])]
    pooled = capture.pooled(runner.call, read_at_once=True)
    module.ALLOCATED.clear()
    first = [t.tolist() for t in pooled([x])]
    second = pooled([x])
    assert first == expected and [t.tolist() for t in second] == expected
    # buf0, returned but otherwise only the kernels': held; buf3, which an op also sees: allocated
    assert len(module.ALLOCATED) == 2
    assert pooled([x])[0] is second[0]
    assert pooled.returns is None  # (what it returns is not all held: a caller cannot keep views)


def test_pooled_says_which_held_tensors_every_call_returns(tmp_path, monkeypatch):
    _, runner = _generated(tmp_path, monkeypatch, GENERATED_DRAWS, "generated_draws_once")
    x = torch.tensor([1.0, 2.0, 3.0])
    torch.manual_seed(0)
    expected = [[t.tolist() for t in runner.call([x])] for _ in range(2)]
    pooled = capture.pooled(runner.call, read_at_once=True)
    held = pooled.returns
    assert held is not None and len(held) == 2  # a kernel's buffer and a draw's, both held
    torch.manual_seed(0)
    for values in expected:
        returned = pooled([x])
        assert all(a is b for a, b in zip(returned, held, strict=True))
        assert [t.tolist() for t in held] == values  # written afresh by each call


def test_pooled_draws_in_place_what_the_kernels_alone_read(tmp_path, monkeypatch):
    module, runner = _generated(tmp_path, monkeypatch, GENERATED_DRAWS, "generated_draws")
    x = torch.tensor([1.0, 2.0, 3.0])
    torch.manual_seed(0)
    expected = [runner.call([x]) for _ in range(3)]
    stream = torch.get_rng_state()
    pooled = capture.pooled(runner.call)
    assert pooled is not None
    module.ALLOCATED.clear()
    torch.manual_seed(0)
    got = [pooled([x]) for _ in range(3)]
    # the same draws from the same stream, which is left where the generated code leaves it
    for a, b in zip(got, expected, strict=True):
        for u, v in zip(a, b, strict=True):
            torch.testing.assert_close(u, v, rtol=0, atol=0)
    assert torch.equal(torch.get_rng_state(), stream)
    # the draws buf2 and buf7 (drawn like buf0's alias) and buf0/buf3 only the kernels see: held;
    # buf4 and the draw buf6 are returned (and buf5, which buf6 is drawn like): allocated on every call
    assert module.ALLOCATED == [(3,), (2,)] * 3
    assert got[0][1] is not got[1][1]


def test_pooled_says_whether_the_inputs_go_to_the_kernels_alone(tmp_path, monkeypatch):
    # (then the call does the same under grad mode on: an op outside the kernels that took a param
    # which requires grad would record autograd's graph, or refuse to write it in place)
    cases = [("generated_alone", GENERATED, True), ("generated_draws_alone", GENERATED_DRAWS, True),
             ("generated_input_out", GENERATED.replace("neg.default(buf3)", "neg.default(arg0_1)"), False),
             ("generated_input_returned", GENERATED.replace("return (buf0,", "return (arg0_1,"), False)]
    for name, source, alone in cases:
        _, runner = _generated(tmp_path, monkeypatch, source, name)
        pooled = capture.pooled(runner.call)
        assert pooled is not None and pooled.grad_mode_free is alone, name


def test_pooled_declines_what_it_cannot_read():
    assert capture.pooled(len) is None  # no Python source


@pytest.mark.filterwarnings("ignore:Anomaly Detection has been enabled")
def test_a_compile_in_the_background_leaves_anomaly_detection_to_the_other_threads():
    """AOTAutograd traces under ``detect_anomaly()``, a switch of the whole process: on the compiling
    thread it is inert, so the cell's steps on the other threads never see it switched on."""
    import threading

    original = torch.autograd.detect_anomaly
    seen = {}

    def elsewhere():
        with torch.autograd.detect_anomaly(check_nan=False):
            seen["other thread"] = torch.is_anomaly_enabled()

    with capture._anomaly_left_alone():
        with torch.autograd.detect_anomaly(check_nan=False):
            seen["compiling thread"] = torch.is_anomaly_enabled()
        thread = threading.Thread(target=elsewhere)
        thread.start()
        thread.join()
    assert seen == {"compiling thread": False, "other thread": True}
    assert torch.autograd.detect_anomaly is original and not torch.is_anomaly_enabled()
