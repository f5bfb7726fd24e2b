"""Eager, hand-written JIT and ``%%pyrojit``, side by side on the Pyro JIT tutorial's simple SVI model.

The workload is the tutorial's "simple model": a Gaussian with an
``AutoDiagonalNormal`` guide, ``Adam({'lr': 0.01})``, 100 data points and
``svi.step(data)`` run 1000 times. It runs three ways:

* eager: the tutorial's ``Trace_ELBO`` cell as written;
* hand JIT: the tutorial's compiled cell (``guide(data)`` warm-up, ``JitTrace_ELBO()``);
* %%pyrojit: the eager cell, unchanged, under ``%%pyrojit -q --backend pyro`` (Pyro's JIT, as
  the hand-written cell uses).

All three are cells run by one real IPython shell (``shell.run_cell``) in one
process, so each pays the same cell-execution cost, and they are interleaved:
every round runs each way once, in an order rotated from round to round, so
drift in the machine's speed falls on all three alike. Every repetition starts
fresh (param store cleared; new guide, ELBO and SVI), so both compiled ways
compile anew each time and the totals include compiling.

Usage::

    python bench/bench_svi.py              # 1000 steps, 7 rounds
    python bench/bench_svi.py --quick      # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

# The magic should cost at most 3% more than the hand-written JIT, and speed
# the cell up over eager at least as much as it does.
OVERHEAD_TARGET = 1.03

SETUP_CELL = """\
from time import perf_counter as _bench_clock

import pyro
import pyro.distributions as dist
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

def model(data):
    loc = pyro.sample("loc", dist.Normal(0., 10.))
    scale = pyro.sample("scale", dist.LogNormal(0., 3.))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)

pyro.set_rng_seed(0)
data = dist.Normal(0.5, 2.).sample((100,))
"""

# The tutorial's cells, plus a fresh guide and seed per repetition and two
# clock reads around each step (the same in every way, a fraction of a
# microsecond against steps of hundreds of microseconds).
_STEP_LOOP = """\
_bench_steps = []
for i in range({steps}):
    _bench_t0 = _bench_clock()
    svi.step(data)
    _bench_steps.append(_bench_clock() - _bench_t0)
"""

EAGER_CELL = """\
pyro.clear_param_store()
pyro.set_rng_seed(1)
guide = AutoDiagonalNormal(model)
elbo = Trace_ELBO()
svi = SVI(model, guide, Adam({{'lr': 0.01}}), elbo)
""" + _STEP_LOOP

HAND_JIT_CELL = """\
pyro.clear_param_store()
pyro.set_rng_seed(1)
guide = AutoDiagonalNormal(model)
guide(data)  # Do any lazy initialization before compiling.
elbo = JitTrace_ELBO()
svi = SVI(model, guide, Adam({{'lr': 0.01}}), elbo)
""" + _STEP_LOOP

REPORT_NAME = "_bench_report"
PYROJIT_CELL = f"%%pyrojit -q --backend pyro -o {REPORT_NAME}\n" + EAGER_CELL

WAYS = ("eager", "hand JIT", "%%pyrojit")
CELLS = dict(zip(WAYS, (EAGER_CELL, HAND_JIT_CELL, PYROJIT_CELL), strict=True))


@dataclass
class Timings:
    """What one way measured, one entry per repetition."""

    totals: list[float] = field(default_factory=list)
    first_steps: list[float] = field(default_factory=list)
    step_medians: list[float] = field(default_factory=list)
    outside_steps: list[float] = field(default_factory=list)
    report_step_medians: list[float] = field(default_factory=list)


@dataclass(frozen=True)
class CellTiming:
    """One run of one way's cell."""

    total: float
    first_step: float  # in the JIT ways, the step that compiles
    step_median: float
    outside_steps: float  # the cell's time outside svi.step: setup, hand warm-up, the magic itself
    report_step_median: float | None = None


def machine_lines(threads: int) -> list[str]:
    import IPython
    import pyro
    import torch

    import pyro_jitmagic

    return [
        f"machine:  {_cpu_model()}, {os.cpu_count()} cores",
        f"python:   {platform.python_version()} ({platform.python_implementation()})",
        f"torch:    {torch.__version__} (torch.set_num_threads({threads}))",
        f"pyro-ppl: {pyro.__version__}",
        f"IPython:  {IPython.__version__}",
        f"pyro_jitmagic: {pyro_jitmagic.__version__}{_commit_of(pyro_jitmagic.__file__)}",
    ]


def _commit_of(module_file: str) -> str:
    # The package is usually installed editable, so the figures belong to
    # whatever commit its checkout is at, not to this script's.
    here = os.path.dirname(os.path.abspath(module_file))
    try:
        out = subprocess.run(["git", "-C", here, "log", "-1", "--format=%h"],
                             capture_output=True, text=True, timeout=10, check=True)
        dirty = subprocess.run(["git", "-C", here, "status", "--porcelain", "--", "."],
                               capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return ""
    commit = out.stdout.strip()
    if not commit:
        return ""
    return f" (commit {commit}{', with uncommitted changes' if dirty.stdout.strip() else ''})"


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def load_average() -> str:
    # Other processes on a small machine are the main source of noise; the
    # load average says how busy it was while the rounds ran.
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1, 5, 15 min)"
    except OSError:
        return "unavailable"


def process_shell() -> Any:
    from IPython.core.interactiveshell import InteractiveShell

    # The process's shell: a new one when run as a script, the one already
    # started when imported under pytest or IPython (a second would clash).
    return InteractiveShell.instance()


def run_way(shell: Any, way: str, steps: int) -> CellTiming:
    """Run one way's cell once and read its timings."""
    cell = CELLS[way].format(steps=steps)
    shell.user_ns.pop(REPORT_NAME, None)
    start = time.perf_counter()
    result = shell.run_cell(cell)
    total = time.perf_counter() - start
    if not result.success:
        raise RuntimeError(f"the {way} cell failed: {result.error_before_exec or result.error_in_exec!r}")
    step_seconds = shell.user_ns["_bench_steps"]
    timing = CellTiming(total, step_seconds[0], statistics.median(step_seconds), total - sum(step_seconds))
    if way != "%%pyrojit":
        return timing
    # A %%pyrojit that silently ran eager would make every figure below meaningless.
    report = shell.user_ns.get(REPORT_NAME)
    run = report.svi_runs[0] if report is not None and len(report.svi_runs) == 1 else None
    if run is None or run.elbo != "JitTrace_ELBO" or report.compile_count != 1:
        raise RuntimeError(f"%%pyrojit did not compile the cell's SVI once:\n{report}")
    return dataclasses.replace(timing, report_step_median=run.median_step_seconds)


def method_lines(shell: Any, rounds: int, warmup_rounds: int) -> list[str]:
    return [
        f"method:   one process; each way is a cell run by one {type(shell).__name__} "
        "(shell.run_cell);",
        f"          %%pyrojit runs the eager cell under '%%pyrojit -q --backend pyro -o {REPORT_NAME}';",
        f"          {rounds} rounds, each running every way once, order rotated each round; "
        f"{warmup_rounds} warm-up round(s) first, not counted;",
        "          every repetition fresh (param store cleared; new guide, ELBO, SVI): "
        "both JIT ways compile each time;",
        "          total = wall clock of shell.run_cell; steps timed inside the cell "
        "(the JIT ways compile in the first);",
        "          outside steps = total - sum of the steps (setup, the hand warm-up, the magic's own work)",
    ]


def rotated(round_index: int) -> tuple[str, ...]:
    k = round_index % len(WAYS)
    return WAYS[k:] + WAYS[:k]


def measure(shell: Any, steps: int, rounds: int, warmup_rounds: int,
            log: Callable[[str], None] | None = None) -> dict[str, Timings]:
    timings = {way: Timings() for way in WAYS}
    for r in range(warmup_rounds + rounds):
        counted = r >= warmup_rounds
        line = []
        for way in rotated(r):
            cell = run_way(shell, way, steps)
            line.append(f"{way} {cell.total:.3f}s")
            if counted:
                t = timings[way]
                t.totals.append(cell.total)
                t.first_steps.append(cell.first_step)
                t.step_medians.append(cell.step_median)
                t.outside_steps.append(cell.outside_steps)
                if cell.report_step_median is not None:
                    t.report_step_medians.append(cell.report_step_median)
        if log is not None:
            label = f"round {r - warmup_rounds + 1}" if counted else "warm-up (not counted)"
            log(f"  {label:>22}: " + ", ".join(line))
    return timings


def _summary(values: Sequence[float], scale: float, fmt: str) -> str:
    return "  ".join(format(v * scale, fmt) for v in
                     (statistics.median(values), min(values), max(values)))


def verdict_lines(timings: dict[str, Timings]) -> list[str]:
    total = {way: statistics.median(t.totals) for way, t in timings.items()}
    step = {way: statistics.median(t.step_medians) for way, t in timings.items()}
    ratio = total["%%pyrojit"] / total["hand JIT"]
    speedup = {way: total["eager"] / total[way] for way in ("hand JIT", "%%pyrojit")}
    step_speedup = {way: step["eager"] / step[way] for way in ("hand JIT", "%%pyrojit")}
    step_ratio = step["%%pyrojit"] / step["hand JIT"]
    paired = [p / h for p, h in zip(timings["%%pyrojit"].totals, timings["hand JIT"].totals, strict=True)]

    def mark(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    return [
        f"%%pyrojit / hand JIT (total time): {ratio:.4f}   target <= {OVERHEAD_TARGET:.2f}   "
        f"{mark(ratio <= OVERHEAD_TARGET)}",
        f"speedup over eager (total time): hand JIT {speedup['hand JIT']:.3f}x, "
        f"%%pyrojit {speedup['%%pyrojit']:.3f}x   target: %%pyrojit >= hand JIT   "
        f"{mark(speedup['%%pyrojit'] >= speedup['hand JIT'])}",
        "",
        "for information (no target):",
        f"  %%pyrojit / hand JIT (median step): {step_ratio:.3f}",
        f"  speedup over eager (median step): hand JIT {step_speedup['hand JIT']:.2f}x, "
        f"%%pyrojit {step_speedup['%%pyrojit']:.2f}x",
        "  %%pyrojit / hand JIT (total time), per round: " + ", ".join(f"{p:.3f}" for p in paired),
    ]


def table_lines(timings: dict[str, Timings]) -> list[str]:
    header = ("", "total s", "first step ms", "median step ms", "outside steps ms")
    rows = [header] + [
        (way, _summary(t.totals, 1, ".3f"), _summary(t.first_steps, 1e3, ".2f"),
         _summary(t.step_medians, 1e3, ".4f"), _summary(t.outside_steps, 1e3, ".2f"))
        for way, t in timings.items()]
    reported = timings["%%pyrojit"].report_step_medians
    if reported:
        rows.append(("(report)", "", "", _summary(reported, 1e3, ".4f"), ""))
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["each column: median  min  max over the rounds"]
    lines += ["   ".join(f"{cell:<{w}}" for cell, w in zip(row, widths, strict=True)).rstrip()
              for row in rows]
    if reported:
        lines.append("(report): the median step of %%pyrojit's own report "
                     "(svi_runs[0].median_step_seconds, timed inside its SVI.step wrapper)")
    return lines


def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    """Run the benchmark and print its report; ``shell`` defaults to the process's IPython shell."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=1000, help="svi.step calls per cell (default 1000)")
    parser.add_argument("--rounds", type=int, default=7, help="counted rounds (default 7)")
    parser.add_argument("--warmup-rounds", type=int, default=1,
                        help="rounds run first and not counted: imports, first compile (default 1)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for the run (default 1: steadier on a small machine)")
    parser.add_argument("--quick", action="store_true",
                        help="5 steps, 1 round, no warm-up round: checks the script runs, measures nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.rounds, args.warmup_rounds = 5, 1, 0
    if args.steps < 1 or args.rounds < 1 or args.warmup_rounds < 0 or args.threads < 1:
        parser.error("--steps, --rounds and --threads must be >= 1, --warmup-rounds >= 0")

    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        shell = shell if shell is not None else process_shell()
        shell.run_line_magic("load_ext", "pyro_jitmagic")
        result = shell.run_cell(SETUP_CELL)
        if not result.success:
            raise RuntimeError("the setup cell failed")
        print("pyro_jitmagic benchmark: the Pyro JIT tutorial's simple SVI model")
        for line in machine_lines(args.threads):
            print(line)
        print(f"workload: Gaussian model, AutoDiagonalNormal, Adam({{'lr': 0.01}}), 100 data points, "
              f"{args.steps} svi.step(data) per cell")
        for line in method_lines(shell, args.rounds, args.warmup_rounds):
            print(line)
        print()
        print(f"load average before: {load_average()}")
        timings = measure(shell, args.steps, args.rounds, args.warmup_rounds, log=print)
        print(f"load average after:  {load_average()}")
        print()
        for line in table_lines(timings):
            print(line)
        print()
        for line in verdict_lines(timings):
            print(line)
    finally:
        torch.set_num_threads(threads_before)
    return 0


if __name__ == "__main__":
    sys.exit(main())
