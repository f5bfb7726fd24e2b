"""What plain ``%%pyrojit`` adds to a short cell of a real model: per step, and once per cell.

A real model of the test suite (``tests/realmodels/zoo.py``) runs its cell in one IPython shell,
eager and under plain ``%%pyrojit -q``, interleaved, each way fresh from its set-up; each step is
timed around ``svi.step`` by the cell itself. Printed per way: the cell's wall time, the median step
from the fourth on (the climb's first three measure a key), the first step, and the rest of the
cell (the cell less its steps: the magic's set-up and report). The difference of the medians is
what the climb adds to a step that stays on its tier; docs/real-models.md quotes it.

Usage::

    python bench/climb_overhead.py [--models control_branch net_empty_guide] [--rounds 7]

A model whose steps are in a comprehension shows its cells' times only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent / "tests"), str(HERE.parent / "tests" / "realmodels")]

from bench_svi import load_average, machine_lines, process_shell  # noqa: E402
from zoo import BY_NAME  # noqa: E402

TIMED_STEP = "_t = _clock(); svi.step({args}); _steps.append(_clock() - _t)"


def timed_cell(run: str) -> str:
    """The model's cell with each ``svi.step(...)`` statement timed into ``_steps``."""
    lines = []
    for line in run.splitlines():
        stripped = line.strip()
        if stripped.startswith("svi.step(") and stripped.endswith(")"):
            indent = line[: len(line) - len(line.lstrip())]
            lines.append(indent + TIMED_STEP.format(args=stripped[len("svi.step("):-1]))
        else:
            lines.append(line)
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    """Run the models and print their figures; ``shell`` defaults to the process's IPython shell."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["control_branch", "net_empty_guide"],
                        choices=sorted(BY_NAME))
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--quick", action="store_true", help="one round of control_branch: checks the "
                        "script runs, measures nothing")
    options = parser.parse_args(argv)
    if options.quick:
        options.models, options.rounds = ["control_branch"], 1
    import torch

    shell = shell if shell is not None else process_shell()
    shell.run_line_magic("load_ext", "pyro_jitmagic")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for line in machine_lines(1):
            print(line)
        for name in options.models:
            _measure(shell, name, options.rounds)
    finally:
        torch.set_num_threads(threads)
    print(f"\nload:     {load_average()}")
    return 0


def _measure(shell: Any, name: str, rounds: int) -> None:
    """One model's cell, eager and under plain ``%%pyrojit``, interleaved over ``rounds``: printed."""
    model = BY_NAME[name]
    cell = timed_cell(model.run)  # (a step in a comprehension is not timed: its cell only)
    ways = {"eager": cell, "plain %%pyrojit": "%%pyrojit -q\n" + cell}
    cells: dict[str, list[float]] = {w: [] for w in ways}
    steps: dict[str, list[float]] = {w: [] for w in ways}
    firsts: dict[str, list[float]] = {w: [] for w in ways}
    rest: dict[str, list[float]] = {w: [] for w in ways}
    for round_ in range(rounds + 1):  # (the first round warms the process up, unrecorded)
        for way, text in ways.items():
            shell.run_cell("import torch, pyro; torch.set_num_threads(1)\n" + model.setup)
            taken: list[float] = []
            shell.user_ns["_steps"], shell.user_ns["_clock"] = taken, time.perf_counter
            start = time.perf_counter()
            result = shell.run_cell(text)
            seconds = time.perf_counter() - start
            if not result.success:
                raise SystemExit(f"{name}, {way}: the cell failed: {result.error_in_exec!r}")
            if round_:
                cells[way].append(seconds)
                steps[way].extend(taken[3:])
                firsts[way].extend(taken[:1])
                rest[way].append(seconds - sum(taken))
    for variable in ("_steps", "_clock"):
        shell.user_ns.pop(variable, None)
    ratio = statistics.median(cells["plain %%pyrojit"]) / statistics.median(cells["eager"])
    print(f"\n{name}: {rounds} rounds; medians; the cell takes {ratio:.2f}x eager's")
    if not all(steps.values()):
        for way in ways:
            print(f"  {way:16s} {statistics.median(cells[way]) * 1e3:7.2f} ms (its steps are not timed)")
        return
    print(f"  {'way':16s} {'cell':>9s} {'step (4th on)':>14s} {'first step':>11s} {'cell less steps':>16s}")
    for way in ways:
        cell_ms, step_us = statistics.median(cells[way]) * 1e3, statistics.median(steps[way]) * 1e6
        first_ms, rest_ms = statistics.median(firsts[way]) * 1e3, statistics.median(rest[way]) * 1e3
        print(f"  {way:16s} {cell_ms:7.2f} ms {step_us:11.1f} us {first_ms:8.2f} ms {rest_ms:13.2f} ms")
    eager, plain = (statistics.median(steps[w]) for w in ways)
    print(f"  the climb adds {(plain - eager) * 1e6:.1f} us a step")


if __name__ == "__main__":
    sys.exit(main())
