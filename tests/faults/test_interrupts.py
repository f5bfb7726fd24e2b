"""Ctrl-C while a cell runs: a real SIGINT from another thread, as IPython's own tests send it."""

from __future__ import annotations

import os
import threading
import time

import pyro
import pytest
import torch
from IPython.utils.capture import capture_output
from patches import assert_nothing_patched

SETUP = """
import pyro, torch
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
import models
data = models.data()
svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
svi.step(data)  # an earlier cell trained it: params exist
"""

# long enough for the signal to land while steps run, short if it never came
LOOP = "for _ in range(200_000):\n    svi.step(data)\n"


@pytest.fixture
def ip(shell, shell_with):
    return shell_with(shell, SETUP)


@pytest.mark.parametrize("flags", ["", "--compare", "--backend step"])
def test_sigint_during_steps_restores_everything(ip, flags, patched_targets, ctrl_c):
    before = {k: v.detach().clone() for k, v in pyro.get_param_store().items()}
    ctrl_c(1.0)
    with capture_output() as captured:
        result = ip.run_cell(f"%%pyrojit {flags} -o interrupted\nmarker = 1\n{LOOP}")

    assert isinstance(result.error_in_exec, KeyboardInterrupt)  # what makes Jupyter stop queued cells
    # shown to the user: in IPython's traceback (stdout), or, when IPython's own formatting fails
    # ("Unexpected exception formatting exception", seen once under load), in the plain one it
    # falls back to (stderr), which says what failed
    shown = captured.stdout + captured.stderr
    assert shown.count("KeyboardInterrupt") >= 1, shown[-3000:]
    assert_nothing_patched(patched_targets)
    report = ip.user_ns["interrupted"]
    assert report.error == "KeyboardInterrupt"
    if flags == "--compare":
        # interrupted in the eager half: everything as before the cell
        assert "marker" not in ip.user_ns
        after = dict(pyro.get_param_store().items())
        assert before.keys() == after.keys()
        assert all(torch.equal(before[k], after[k].detach()) for k in before)
    elif not flags:  # (with --backend step it may land in the capture: tested below)
        assert len(report.svi_runs[0].steps) > 0  # what ran so far is reported
    # and the next cell works normally
    result = ip.run_cell("%%pyrojit --backend pyro -q -o again\nsvi.step(data)")
    assert result.success and ip.user_ns["again"].switches[0].compiled


def test_an_interrupt_stops_the_cells_queued_after_it(tmp_path):
    """In a real kernel: interrupt a %%pyrojit cell, and the cell queued behind it is aborted."""
    import sys

    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    # this environment's kernel, whatever other "python3" kernels the machine knows of
    specs = KernelSpecManager(kernel_dirs=[os.path.join(sys.prefix, "share", "jupyter", "kernels")])
    km = KernelManager(kernel_name="python3", kernel_spec_manager=specs)
    km.start_kernel(cwd=str(tmp_path))
    kc = km.client()
    kc.start_channels()
    try:
        kc.wait_for_ready(timeout=120)
        tests = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        kc.execute_interactive(f"import sys; sys.path.insert(0, {tests!r})\n%load_ext pyro_jitmagic\n"
                               + SETUP, timeout=120)
        running = kc.execute(f"%%pyrojit --backend pyro\n{LOOP}")
        queued = kc.execute("queued_ran = True")
        time.sleep(5)  # the loop is under way
        km.interrupt_kernel()
        replies = {}
        deadline = time.monotonic() + 60
        while len(replies) < 2 and time.monotonic() < deadline:
            reply = kc.get_shell_msg(timeout=60)
            replies[reply["parent_header"]["msg_id"]] = reply["content"]
        assert replies[running]["status"] == "error"
        assert replies[running]["ename"] == "KeyboardInterrupt"
        assert replies[queued]["status"] == "aborted"
        check = kc.execute_interactive("print('queued_ran' in dir())", timeout=60)
        assert check["content"]["status"] == "ok"
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)


def test_sigint_while_a_trace_is_built_stops_once_the_trace_is_done(ip, patched_targets, ctrl_c):
    # torch.jit.trace runs on a thread of its own (a shallow stack traces faster); Ctrl-C lands in
    # the cell's thread, which waits for the trace to finish, then stops with nothing left running
    ip.run_cell(
        "import pyro.distributions as dist\n"
        "def slow_to_trace(data):\n"
        "    loc = pyro.sample('loc', dist.Normal(0., 10.))\n"
        "    for _ in range(15_000):\n"
        "        loc = loc * 1.0 + 0.0\n"
        "    with pyro.plate('data', data.size(0)):\n"
        "        pyro.sample('obs', dist.Normal(loc, 1.), obs=data)\n"
        "def slow_guide(data):\n"
        "    pyro.sample('loc', dist.Normal(pyro.param('slow_loc', torch.tensor(0.)), 1.))\n"
        "slow_svi = SVI(slow_to_trace, slow_guide, Adam({'lr': 0.01}), Trace_ELBO())\n")
    seen: list[list[str]] = []

    def interrupt_while_tracing() -> None:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            names = [t.name for t in threading.enumerate()]
            if "pyrojit-trace" in names:
                seen.append(names)
                ctrl_c(0.0)
                return
            time.sleep(0.005)

    watcher = threading.Thread(target=interrupt_while_tracing)
    watcher.start()
    with capture_output():
        result = ip.run_cell("%%pyrojit --backend pyro -q -o interrupted\nslow_svi.step(data)\nafter = 1")
    watcher.join()

    assert seen, "the trace never ran on its own thread"
    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert "after" not in ip.user_ns
    assert not [t for t in threading.enumerate() if t.name == "pyrojit-trace"]
    assert_nothing_patched(patched_targets)
    assert ip.user_ns["interrupted"].error == "KeyboardInterrupt"
    result = ip.run_cell("%%pyrojit --backend pyro -q -o again\nsvi.step(data)")
    assert result.success and ip.user_ns["again"].switches[0].compiled
    for name in ("slow_to_trace", "slow_guide", "slow_svi", "dist"):
        ip.user_ns.pop(name, None)


def test_an_interrupt_while_the_whole_step_is_captured_loses_nothing(ip, patched_targets, monkeypatch):
    """Ctrl-C inside the capture (make_fx runs the model for real): the params, the optimizer's
    state and the random stream are as before that step, and the next cell compiles."""
    from pyro_jitmagic.compat import capture as compat

    ip.run_cell("svi.step(data)")  # the optimizer has its state
    store = pyro.get_param_store()
    before = {k: v.detach().clone() for k, v in store.items()}
    optim_before = {k: {n: t.clone() for n, t in s.items()} for k, s in
                    ((k, o.state[p]) for k, p, o in _optimizers(ip.user_ns["svi"]))}
    real = compat.make_fx

    def interrupted(fn):
        def run(*inputs):
            real(fn)(*inputs)  # the model ran, the inputs were written: then Ctrl-C
            raise KeyboardInterrupt
        return run

    monkeypatch.setattr(compat, "make_fx", interrupted)
    rng = torch.get_rng_state()
    result = ip.run_cell("%%pyrojit --backend step -q\nsvi.step(data)\n")

    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    assert_nothing_patched(patched_targets)
    assert torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v.detach()) for k, v in store.items())
    for k, p, o in _optimizers(ip.user_ns["svi"]):
        assert all(torch.equal(optim_before[k][n], t) for n, t in o.state[p].items())
    monkeypatch.setattr(compat, "make_fx", real)
    result = ip.run_cell("%%pyrojit --backend step -q -o again\nfor _ in range(3):\n    svi.step(data)\n")
    assert result.success and ip.user_ns["again"].compilations


def _optimizers(svi):
    """(param name, param, its torch optimizer) for each param of ``svi``'s optimizer."""
    store = pyro.get_param_store()
    objs = svi.optim.optim_objs
    return [(name, p, objs[p]) for name, p in store._params.items() if p in objs]

