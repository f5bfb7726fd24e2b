"""Everyday ``torch.nn`` layers in a whole step: what they write in place, and ops torch cannot trace.

A BatchNorm moves its running statistics once a step in eager. The whole step takes them as inputs,
fetched from the module on each step, and writes them once, as eager does; capturing leaves them as
they were; a step a guard declines writes nothing, and eager's step then writes them once. A
convolution's or a normalisation's gradient, which TorchScript cannot trace, runs as captured; a
graph that cannot run even so (an LSTM's gradient on oneDNN) is refused, never a failing step.
"""

from __future__ import annotations

import types

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from agreement import rounding_atol
from pyro.infer import SVI, Trace_ELBO

from pyro_jitmagic.wholestep import CannotCompile, compile_svi_step

STEPS = 12


def _batches(n=STEPS, size=16):
    generator = torch.Generator().manual_seed(1)
    xs = [torch.randn(size, 1, generator=generator) * (1 + k % 3) + k % 2 for k in range(n)]
    return [(x, 2 * x[:, 0] + 1 + 0.1 * torch.randn(size, generator=generator)) for x in xs]


def _net_svi(net):
    def model(x, y):
        pyro.module("net", net)
        with pyro.plate("n", len(x)):
            pyro.sample("obs", dist.Normal(net(x)[:, 0], 0.5), obs=y)

    def guide(x, y):
        pass

    return SVI(model, guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())


def _statistics(bn):
    return [bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone()]


def _train(backend, batches):
    """Losses and the BatchNorm's statistics after training on ``batches``: the first step eager,
    the rest eager (``backend`` None) or on one compiled step."""
    pyro.clear_param_store()
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(1), torch.nn.Linear(1, 1))
    svi = _net_svi(net)
    losses = [svi.step(*batches[0])]
    step = svi.step if backend is None else compile_svi_step(svi, batches[0], backend=backend)
    losses += [step(*batch) for batch in batches[1:]]
    return losses, _statistics(net[0]), step


NAMES = ("running_mean", "running_var", "num_batches_tracked")


def _assert_statistics_agree(compiled, eager):
    for name, a, b in zip(NAMES, compiled, eager, strict=True):
        # (to float rounding: the compiled step's kernels may sum the batch in another order)
        torch.testing.assert_close(a, b, rtol=1e-5, atol=rounding_atol(b, STEPS),
                                   msg=lambda m, n=name: f"{n}: {m}")


@pytest.mark.parametrize("backend", ["step", pytest.param("inductor", marks=pytest.mark.slow)])
def test_batchnorm_statistics_move_once_a_step_as_eager_moves_them(backend):
    batches = _batches()
    eager_losses, eager_stats, _ = _train(None, batches)
    losses, stats, step = _train(backend, batches)
    assert step.steps == STEPS - 1  # every step after the first ran on the graph
    assert losses == pytest.approx(eager_losses, rel=1e-5)
    assert int(stats[2]) == STEPS
    _assert_statistics_agree(stats, eager_stats)


def _stepped_net(batches):
    """A BatchNorm net and its SVI after one eager step on the first batch."""
    pyro.clear_param_store()
    net = torch.nn.Sequential(torch.nn.BatchNorm1d(1), torch.nn.Linear(1, 1))
    svi = _net_svi(net)
    svi.step(*batches[0])
    return net, svi


def test_capturing_leaves_the_statistics_as_the_eager_step_left_them():
    batches = _batches(2)
    net, svi = _stepped_net(batches)
    before = _statistics(net[0])
    compile_svi_step(svi, batches[1])  # runs the model twice: once to find the params, once to trace
    for a, b in zip(_statistics(net[0]), before, strict=True):
        assert torch.equal(a, b)


def test_a_buffer_the_user_replaces_is_the_one_the_next_step_writes():
    batches = _batches(4)
    net, svi = _stepped_net(batches)
    step = compile_svi_step(svi, batches[1])
    step(*batches[1])
    old = net[0].running_mean
    kept = old.clone()
    net[0].running_mean = torch.zeros(1)  # (a new tensor, as reset code or load_state_dict with assign does)
    step(*batches[2])
    assert step.steps == 2
    assert torch.equal(old, kept)  # the old tensor is left alone
    assert not torch.equal(net[0].running_mean, torch.zeros(1))  # the new one moved


def test_a_step_its_guard_declines_leaves_the_statistics_to_eager_which_moves_them_once():
    net = torch.nn.BatchNorm1d(1)

    def model(x):
        pyro.module("net", net)
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        scale = 1.0 if loc > 0 else 2.0  # a value read: the graph checks it on every step
        with pyro.plate("n", len(x)):
            pyro.sample("obs", dist.Normal(loc + net(x)[:, 0], scale), obs=x[:, 0])

    def guide(x):
        pyro.sample("loc", dist.Normal(pyro.param("loc_loc", torch.tensor(0.0)), 1.0))

    pyro.clear_param_store()
    x = torch.randn(8, 1)
    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    pyro.set_rng_seed(0)
    svi.step(x)
    step = compile_svi_step(svi, (x,))
    for _ in range(40):
        step(x)
    assert step.guard_failures > 0 and step.steps > 0  # (both sides of the branch were met)
    assert int(net.num_batches_tracked) == 41  # one a step, whichever way it ran


def test_a_tensor_written_in_place_that_the_guards_cannot_find_is_refused_and_left_as_it_was():
    hidden = types.SimpleNamespace(count=torch.zeros(1))

    def model(data):
        getattr(hidden, "count").add_(1)  # noqa: B009 (read through getattr: no guard sees it)
        pyro.sample("loc", dist.Normal(0.0, 1.0))

    def guide(data):
        pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
    svi.step(torch.zeros(1))
    with pytest.raises(CannotCompile, match="changes in place a tensor that is neither a param, an argument"):
        compile_svi_step(svi, (torch.zeros(1),))
    assert hidden.count.item() == 1  # the capture's runs of the model were put back


def test_a_convolution_runs_as_captured_where_torchscript_cannot_trace_its_gradient():
    x = torch.randn(10, 1, 8, generator=torch.Generator().manual_seed(4))
    y = x.sum((1, 2))

    def train(compiled):
        pyro.clear_param_store()
        torch.manual_seed(0)
        nn = torch.nn
        svi = _net_svi(nn.Sequential(nn.Conv1d(1, 2, 3, padding=1), nn.Flatten(), nn.Linear(16, 1)))
        losses = [svi.step(x, y)]
        step = compile_svi_step(svi, (x, y)) if compiled else svi.step
        return losses + [step(x, y) for _ in range(5)], step

    eager, _ = train(False)
    losses, step = train(True)
    assert "TorchScript's tracer cannot record convolution_backward (its bool[3] mask)" in step.fallback
    assert "runs as captured" in step.fallback
    assert step.steps == 5
    assert losses == pytest.approx(eager, rel=1e-5)


def test_statistics_written_through_a_view_move_as_eager_moves_them():
    """InstanceNorm writes its running statistics through an alias of them."""
    def make():
        return torch.nn.Sequential(torch.nn.Unflatten(1, (1, 4)),
                                   torch.nn.InstanceNorm1d(1, track_running_stats=True),
                                   torch.nn.Flatten(), torch.nn.Linear(4, 1))

    def train(compiled):
        pyro.clear_param_store()
        torch.manual_seed(0)
        net = make()
        svi = _net_svi(net)
        batches = [(x.expand(-1, 4) * torch.arange(1.0, 5.0), y) for x, y in _batches(8)]
        losses = [svi.step(*batches[0])]
        step = compile_svi_step(svi, batches[0]) if compiled else svi.step
        losses += [step(*batch) for batch in batches[1:]]
        return losses, [b.clone() for b in net[1].buffers()], step

    eager, eager_stats, _ = train(False)
    losses, stats, step = train(True)
    assert step.steps == 7
    assert losses == pytest.approx(eager, rel=1e-5)
    for a, b in zip(stats, eager_stats, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=rounding_atol(b, 8))


class _Recurrent(torch.nn.Module):
    """A recurrent layer's last output through a linear read-out."""

    def __init__(self, rnn, hidden):
        super().__init__()
        self.rnn = rnn
        self.out = torch.nn.Linear(hidden, 1)

    def forward(self, x):
        return self.out(self.rnn(x)[0][:, -1])


def _train_recurrent(make_rnn, hidden, compiled):
    """Five steps' losses of a recurrent net, the first eager, the rest eager or on one compiled step
    (eager where the capture refuses it: None then, else the compiled step)."""
    x = torch.randn(8, 4, 1, generator=torch.Generator().manual_seed(2))
    y = x.sum((1, 2))
    pyro.clear_param_store()
    torch.manual_seed(0)
    svi = _net_svi(_Recurrent(make_rnn(), hidden))
    losses = [svi.step(x, y)]
    step = svi.step
    if compiled:
        try:
            step = compile_svi_step(svi, (x, y))
        except CannotCompile as exc:
            assert exc.reason  # (said in the report: the SVI runs on Pyro's JIT)
            compiled = False
    return losses + [step(x, y) for _ in range(4)], step if compiled else None


def test_an_lstm_trains_as_eager_trains_whether_or_not_its_graph_can_run():
    """torch records an LSTM's gradient on oneDNN with an undefined workspace it cannot replay: the
    capture refuses the graph (CannotCompile), and the step is never a failing call."""
    def lstm():
        return torch.nn.LSTM(1, 5, batch_first=True)

    compiled, _ = _train_recurrent(lstm, 5, compiled=True)
    assert compiled == pytest.approx(_train_recurrent(lstm, 5, compiled=False)[0], rel=1e-5)


def test_a_gru_whose_kernels_resize_what_they_write_trains_as_eager_trains():
    """oneDNN's GRU writes into tensors it resizes: the capture puts each back as it was, shape too."""
    def gru():
        return torch.nn.GRU(1, 3, batch_first=True)

    compiled, step = _train_recurrent(gru, 3, compiled=True)
    assert step is not None and step.steps == 4  # (it compiles)
    assert compiled == pytest.approx(_train_recurrent(gru, 3, compiled=False)[0], rel=1e-5)
