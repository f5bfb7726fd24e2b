"""Where ``%%pyrojit`` spends time that the hand-written JIT does not, on the tutorial's simple SVI model.

``bench_svi.py`` compares whole cells; this script takes the difference apart:

1. steady-state steps: one compiled SVI (hand-written ``JitTrace_ELBO``),
   stepped in blocks alternately as written and inside
   ``pyro_jitmagic.compiled()``, so the only difference is the run's
   per-step bookkeeping;
2. the compiling step, in one IPython shell: the hand-written cell as is,
   under ``%%nest`` (a cell magic that does nothing but run the cell with a
   nested ``shell.run_cell``, as ``%%pyrojit`` does), under ``%%pyrojit``,
   and the eager cell under ``%%pyrojit``;
3. why nesting matters: ``torch.jit.trace`` records the Python call stack of
   every op it traces, so tracing the same function costs more the deeper
   the stack it is called from; and what tracing on a thread of its own (as
   ``%%pyrojit`` does) costs from the deepest of them.

Usage::

    python bench/overhead_svi.py            # about a minute
    python bench/overhead_svi.py --quick    # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

# a sibling script, not a package
import bench_svi


def _interleaved(ways: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[Any]]:
    results: dict[str, list[Any]] = {name: [] for name in ways}
    names = list(ways)
    for r in range(rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            results[name].append(ways[name]())
    return results


def steady_steps(block: int, rounds: int) -> list[str]:
    import pyro
    from pyro.infer import SVI, JitTrace_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from pyro.optim import Adam

    import pyro_jitmagic

    namespace: dict[str, Any] = {}
    exec(bench_svi.SETUP_CELL, namespace)
    model, data = namespace["model"], namespace["data"]
    pyro.clear_param_store()
    guide = AutoDiagonalNormal(model)
    guide(data)
    svi = SVI(model, guide, Adam({"lr": 0.01}), JitTrace_ELBO())
    # past the compile and the executor's profiling runs
    for _ in range(max(block, 50)):
        svi.step(data)

    def plain() -> float:
        start = time.perf_counter()
        for _ in range(block):
            svi.step(data)
        return (time.perf_counter() - start) / block

    def in_run() -> float:
        with pyro_jitmagic.compiled(names={}):
            return plain()

    res = _interleaved({"as written": plain, "inside compiled()": in_run}, rounds)
    base = statistics.median(res["as written"])
    lines = [f"1. steady-state step, same compiled SVI, {rounds} blocks of {block} steps each way "
             "(median per step)"]
    for name, values in res.items():
        m = statistics.median(values)
        lines.append(f"   {name:<20} {m * 1e6:8.1f} us   {(m - base) * 1e6:+6.1f} us  "
                     f"({(m / base - 1) * 100:+.2f}%)")
    return lines


def compile_step(shell: Any, rounds: int) -> list[str]:
    def nest(line: str, cell: str) -> None:
        shell.run_cell(cell, store_history=False)

    shell.register_magic_function(nest, "cell", "nest")
    cells = {
        "hand JIT cell": bench_svi.HAND_JIT_CELL,
        "  under %%nest": "%%nest\n" + bench_svi.HAND_JIT_CELL,
        "  under %%pyrojit": "%%pyrojit -q\n" + bench_svi.HAND_JIT_CELL,
        "eager cell under %%pyrojit": "%%pyrojit -q\n" + bench_svi.EAGER_CELL,
    }

    def runner(cell: str) -> Callable[[], tuple[float, float]]:
        code = cell.format(steps=1)

        def run() -> tuple[float, float]:
            start = time.perf_counter()
            result = shell.run_cell(code)
            total = time.perf_counter() - start
            if not result.success:
                raise RuntimeError(f"cell failed: {result.error_in_exec!r}")
            return total, shell.user_ns["_bench_steps"][0]
        return run

    ways = {name: runner(cell) for name, cell in cells.items()}
    try:
        for run in ways.values():
            run()
        res = _interleaved(ways, rounds)
    finally:
        shell.magics_manager.magics["cell"].pop("nest", None)
    lines = [f"2. the compiling step in one IPython shell, cells of 1 step, {rounds} rounds (medians)",
             "   (the hand cell's guide(data) runs outside its step; the eager cell's warm-up inside it)"]
    base = statistics.median(first for _, first in res["hand JIT cell"])
    for name, values in res.items():
        total = statistics.median(t for t, _ in values)
        first = statistics.median(f for _, f in values)
        lines.append(f"   {name:<28} first step {first * 1e3:6.2f} ms ({(first - base) * 1e3:+5.2f})   "
                     f"cell {total * 1e3:6.2f} ms")
    return lines


def trace_depth(ops: int, rounds: int, depths: Sequence[int] = (0, 10, 20, 30, 60)) -> list[str]:
    import torch

    from pyro_jitmagic.run.stack import call_shallow

    def f(x: Any) -> Any:
        for _ in range(ops // 2):
            x = x * 1.0001 + 0.5
        return x

    def trace() -> float:
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.jit.trace(f, (torch.ones(3),), check_trace=False)
        return time.perf_counter() - start

    def at_depth(n: int) -> Callable[[], float]:
        def down(k: int) -> float:
            return trace() if k == 0 else down(k - 1)
        return lambda: down(n)

    def shallow_from(n: int) -> Callable[[], float]:  # what %%pyrojit does: trace on a fresh thread
        def down(k: int) -> float:
            return call_shallow(trace) if k == 0 else down(k - 1)
        return lambda: down(n)

    ways = {f"+{d} frames": at_depth(d) for d in depths}
    ways[f"+{depths[-1]}, own thread"] = shallow_from(depths[-1])
    res = _interleaved(ways, rounds)
    lines = [f"3. torch.jit.trace of a {ops}-op function, called from deeper Python stacks "
             f"({rounds} rounds, medians)"]
    base = statistics.median(res[f"+{depths[0]} frames"])
    for name, values in res.items():
        m = statistics.median(values)
        lines.append(f"   {name:<18} {m * 1e3:7.2f} ms  ({(m - base) * 1e3:+6.2f} ms)")
    return lines


def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    """Print the three breakdowns; ``shell`` defaults to the process's IPython shell."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts: checks the script runs, measures nothing")
    args = parser.parse_args(argv)
    block, step_rounds, cell_rounds, ops, trace_rounds = (
        (5, 2, 1, 20, 1) if args.quick else (200, 60, 30, 600, 20))

    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        shell = shell if shell is not None else bench_svi.process_shell()
        shell.run_line_magic("load_ext", "pyro_jitmagic")
        if not shell.run_cell(bench_svi.SETUP_CELL).success:
            raise RuntimeError("the setup cell failed")
        for line in bench_svi.machine_lines(1):
            print(line)
        print(f"load average before: {bench_svi.load_average()}")
        print()
        for section in (steady_steps(block, step_rounds), compile_step(shell, cell_rounds),
                        trace_depth(ops, trace_rounds)):
            for line in section:
                print(line)
            print()
        print(f"load average after:  {bench_svi.load_average()}")
    finally:
        torch.set_num_threads(threads_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
