"""Where a warm compiled SVI step's time goes: its pieces timed alone, beside the whole step.

The simple SVI of ``bench_backends.py`` runs inside ``pyro_jitmagic.compiled(backend="inductor")``
until inductor's kernels have taken over and the step has settled; then each piece of the work a
step does is called alone in a loop, in rounds, and the medians are printed: the graph's call, what
the step checks before it (the world's guards, the call's signature, the binding of the live
tensors), what it does around it (the random state kept for an in-graph guard that fails, grad mode
where it matters, the float loss), the compiled step's short way, and ``svi.step`` as the cell calls it.

Usage::

    python bench/step_pieces.py [--rounds 7] [--calls 3000]

The pieces overlap (the short way holds the binding and the graph's call); their sum is not the
step. The world's guards and the binding are timed as the long way runs them: the short way checks
the same inline, and does not read again a dict unchanged since it was made (an optimizer's state
and param group, the param store, the SVI's and the ELBO's attributes). docs/benchmarks.md, The step
around the graph, quotes them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def settled_step() -> tuple[Any, Any, Any, Any]:
    """(the run, the SVI, its data, its compiled step) once inductor's kernels run the step directly."""
    import pyro
    import torch
    from bench_backends import simple_data, simple_model
    from pyro.infer import SVI, Trace_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from pyro.optim import Adam

    import pyro_jitmagic
    from pyro_jitmagic.run.process import PROCESS

    torch.set_num_threads(1)
    data = simple_data()
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    svi = SVI(simple_model, AutoDiagonalNormal(simple_model), Adam({"lr": 0.01}), Trace_ELBO())
    run = pyro_jitmagic.compiled(backend="inductor", names={})
    run.__enter__()
    for _ in range(3):
        svi.step(data)
    (entry,) = PROCESS.session.whole_steps.of(svi).values()
    step = entry.compiled
    deadline = time.time() + 600
    while not step.settled and time.time() < deadline:  # inductor's kernels load in the background
        time.sleep(0.01)
        svi.step(data)
    if not step.settled:
        raise SystemExit(f"the step did not settle: {step!r}")
    return run, svi, data, step


def pieces(svi: Any, data: Any, step: Any) -> dict[str, tuple[Callable[[], Any], bool]]:
    """Each piece, and whether it runs with grad mode off (as the graph's call does)."""
    args: tuple[Any, ...] = (data,)
    kwargs: dict[str, Any] = {}
    graph, inputs = step._run, step._inputs
    short = step.short_way()

    def grad_mode() -> None:
        was = step._grad_mode()
        step._set_grad(False)
        step._set_grad(was)

    return {
        "graph's call": (lambda: graph(*inputs), True),
        "graph's call and its floats": (lambda: graph(*inputs)[0].tolist(), True),
        "world's guards": (step.world.holds, False),
        "call's signature": (lambda: step._same_call(args, kwargs), False),
        "binding": (lambda: step._bound_now(args, kwargs), False),
        # (only where a guard that fails runs the step eagerly: Pyro's NaN and inf checks do not)
        **({"random state kept": (step._rng_state, False)} if step._save_rng else {}),
        # (only where an op outside inductor's kernels takes an input: compat.capture.pooled)
        **({} if getattr(step._run, "grad_mode_free", False)
           else {"grad mode off and on": (grad_mode, False)}),
        "short way (CompiledStep.short_way)": (lambda: short(args, kwargs), False),
        "svi.step": (lambda: svi.step(data), False),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--calls", type=int, default=3000)
    options = parser.parse_args(argv)
    import torch

    run, svi, data, step = settled_step()
    try:
        ways = pieces(svi, data, step)
        times: dict[str, list[float]] = {name: [] for name in ways}
        for _ in range(options.rounds):
            for name, (call, no_grad) in ways.items():
                torch.set_grad_enabled(not no_grad)
                # (no check of the sentinel falls due in a loop: the short way would hand it on)
                step.sentinel.next_check = step.sentinel.calls + 10 * options.calls
                start = time.perf_counter()
                for _ in range(options.calls):
                    call()
                times[name].append((time.perf_counter() - start) / options.calls)
            torch.set_grad_enabled(True)
    finally:
        run.__exit__(None, None, None)
    print(f"simple SVI, inductor warm, settled: medians of {options.rounds} rounds of {options.calls} calls")
    for name, seconds in times.items():
        print(f"  {name:34s} {statistics.median(seconds) * 1e6:7.2f} us  (min {min(seconds) * 1e6:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
