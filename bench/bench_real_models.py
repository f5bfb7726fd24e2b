"""Every real model of the test suite, run five ways in one process: a markdown table.

The models are those of ``tests/realmodels/zoo.py`` (retellings of Pyro's
examples and tutorials at toy size). Each runs, in one IPython shell, after a
fresh setup cell each time: eager as written; by hand with Pyro's own JIT;
under ``%%pyrojit --backend pyro``; under ``%%pyrojit --backend pyro --compare --seed 0``; under
``%%pyrojit --auto`` (``tests/realmodels/five_ways.py``). One row per model:

* compiled: ``yes``, or ``eager: <why>`` from the report (or the error that
  ended the ``%%pyrojit`` cell);
* verdict: ``--compare``'s outcome and its reason;
* eager / compiled and by hand / compiled: wall time of the run cell, eager or
  with Pyro's JIT by hand, over its time under ``%%pyrojit`` (compiling
  included; one run each, on toy sizes: a sign, not a benchmark);
* plain / best: plain ``%%pyrojit`` (the climb, run as ``--auto``) over the better of eager and
  Pyro's JIT by hand, medians over ``--rounds``; the promise is at most 1.15 on every model;
* risky: the risky JIT warnings ``%%pyrojit`` reported (groups of identical ones).

Usage::

    python bench/bench_real_models.py                  # every model (a few minutes)
    python bench/bench_real_models.py --skip-slow      # without the NUTS and HMC models
    python bench/bench_real_models.py --models hmm vae
    python bench/bench_real_models.py --quick          # a smoke test of the script, not a measurement
    python bench/bench_real_models.py --long 10        # long runs: each run's steps and samples x10

``--long K`` runs each model's run cell K times as long (its loops' counts, the epochs and steps of its
``args``, its MCMC samples and warm-up: :func:`longer`), the ways the promise compares only (eager, by
hand, plain ``%%pyrojit``), and prints a table of their times and of how far plain ``%%pyrojit`` climbed.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "tests" / "realmodels"))
from bench_svi import load_average, machine_lines, process_shell  # noqa: E402
from five_ways import WAYS, ModelRun, run_model  # noqa: E402
from zoo import BY_NAME, MODELS  # noqa: E402

QUICK_MODELS = ("net_empty_guide", "control_branch")
COLUMNS = ("model", "compiled", "verdict", "eager / compiled", "by hand / compiled", "plain / best", "risky")
#: plain %%pyrojit (the climb: ``--auto``) at most this many times the better of eager and Pyro's JIT
PLAIN_PROMISE = 1.15


#: the ways a long run takes: those the promise compares
LONG_WAYS = ("eager", "by hand", "auto")
LONG_COLUMNS = ("model", "made longer", "plain %%pyrojit ran", "eager", "by hand", "plain", "plain / best")
#: counts a run cell's length is made of: a loop at the cell's top level or a comprehension over
#: ``range(N)``, and the samples, warm-up, steps and epochs set in a setup's ``args`` or an ``MCMC(...)``
_TOP_LOOP = re.compile(r"^(for .+ in range\()(\d+)(\):)", re.MULTILINE)
_COMPREHENSION = re.compile(r"(for \w+ in range\()(\d+)(\)\])")
_COUNTS = re.compile(r"\b(num_samples=|warmup_steps=)(\d+)")
_SETUP_COUNTS = re.compile(r"\b(num_steps=|num_epochs=)(\d+)")


def longer(model: Any, factor: int) -> tuple[Any, list[str]]:
    """``model`` with its run ``factor`` times as long, and what was scaled (``"range(100) x10"``). A
    leapfrog's ``num_steps`` (in a run cell's ``HMC(...)``) is not a length: only a setup's counts are."""
    said: set[str] = set()

    def scaled(match: re.Match[str]) -> str:
        head, count = match.group(1), int(match.group(2))
        tail = match.group(3) if match.re.groups == 3 else ""
        said.add(f"{'range(' if head.startswith('for') else head}{count}{')' if tail else ''} x{factor}")
        return f"{head}{count * factor}{tail}"

    run = _COUNTS.sub(scaled, _COMPREHENSION.sub(scaled, _TOP_LOOP.sub(scaled, model.run)))
    setup, by_hand = (_SETUP_COUNTS.sub(scaled, _COUNTS.sub(scaled, text))
                      for text in (model.setup, model.by_hand))
    return dataclasses.replace(model, setup=setup, by_hand=by_hand, run=run), sorted(said)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def _first_line(text: str, limit: int = 110) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def compiled_column(run: ModelRun, way: str = "magic") -> str:
    magic = run[way]
    report = magic.result
    if not magic.ok:
        return f"error: {_first_line(magic.error)}"
    if report is None:
        return "no report"
    if not report.switches:
        return "eager: " + _first_line("; ".join(report.notes) or "nothing ran")
    on_pyro = [s for s in report.switches if s.compiled and s.reason.startswith("the whole step cannot")]
    if on_pyro:  # --backend step or inductor, and this one ran on Pyro's JIT instead
        return "Pyro's JIT: " + _first_line("; ".join(f"{s.target}: {s.reason}" for s in on_pyro))
    if all(s.compiled for s in report.switches):
        return "yes"
    eager = [s for s in report.switches if not s.compiled]
    said = "; ".join(f"{s.target}: {s.reason}" for s in eager if s.reason) or "; ".join(report.notes)
    head = "yes, but " if any(s.compiled for s in report.switches) else ""
    return f"{head}eager: " + _first_line(said or "(no reason given)")


def verdict_column(run: ModelRun) -> str:
    compare = run["compare"]
    comparison = compare.result
    if not compare.ok:
        return f"error: {_first_line(compare.error)}"
    if comparison is None:
        return "no comparison"
    outcome = getattr(comparison, "outcome", None)
    if outcome is not None:
        return f"{outcome}: {_first_line(comparison.outcome_reason)}"
    # before Comparison.outcome: the agree flag and the one-line verdict
    return f"{'agree' if comparison.agree else 'DISAGREE'} ({_first_line(comparison.verdict)})"


def ratio_column(run: ModelRun, way: str) -> str:
    numerator, magic = run[way], run["magic"]
    if not (numerator.ok and magic.ok) or magic.seconds <= 0:
        return "-"
    return f"{numerator.seconds / magic.seconds:.2f}"


def plain_over_best(rounds: Sequence[ModelRun]) -> float | None:
    """Plain ``%%pyrojit``'s run time over the better of eager's and Pyro's JIT by hand, each the
    median over rounds; None where a way failed. Where Pyro's JIT by hand computes something else
    (``Expect.by_hand_wrong``: a branch frozen), its speed is no bar to meet: eager's alone."""
    import statistics

    def median(way: str) -> float | None:
        seconds = [r[way].seconds for r in rounds if way in r.ways and r[way].ok]
        return statistics.median(seconds) if len(seconds) == len(rounds) else None

    plain, eager, by_hand = median("auto"), median("eager"), median("by hand")
    if rounds[0].model.expect.by_hand_wrong:
        by_hand = None
    if plain is None or eager is None:
        return None
    return plain / min(eager, by_hand if by_hand is not None else eager)


def climb_column(run: ModelRun) -> str:
    """Where plain ``%%pyrojit`` ran each key: its tiers in order (the climb's path), else its state."""
    auto = run["auto"]
    if not auto.ok:
        return f"error: {_first_line(auto.error)}"
    report = auto.result
    if report is None or not report.auto:
        return compiled_column(run, "auto")
    said = []
    for decision in report.auto:
        path = " -> ".join(p.split(" at step")[0] for p in decision.path) if decision.path else decision.state
        said.append(f"{decision.kind} {path}")
    return "; ".join(dict.fromkeys(said))


def seconds_column(run: Sequence[ModelRun], way: str) -> str:
    import statistics

    seconds = [r[way].seconds for r in run if r[way].ok]
    return f"{statistics.median(seconds):.2f} s" if len(seconds) == len(run) else "-"


def long_table(runs: Sequence[tuple[Sequence[ModelRun], list[str]]]) -> list[str]:
    """One row per model run long: what was scaled, the climb's path, each way's median time."""
    rows = [LONG_COLUMNS, tuple("---" for _ in LONG_COLUMNS)]
    for rounds, said in runs:
        plain, model = plain_over_best(rounds), rounds[0].model
        why = model.expect.by_hand_wrong
        wrong = f" (computes something else: {why})" if why else ""
        rows.append((model.name, ", ".join(said), climb_column(rounds[0]),
                     seconds_column(rounds, "eager"), seconds_column(rounds, "by hand") + wrong,
                     seconds_column(rounds, "auto"),
                     "-" if plain is None else f"{plain:.2f}"))
    return ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def risky_column(run: ModelRun) -> str:
    report = run["magic"].result
    return "-" if report is None else str(len(report.risky_warnings))


def table(runs: Sequence[Sequence[ModelRun]]) -> list[str]:
    """One row per model, from its rounds (the first round's report; ratios of medians)."""
    rows = [COLUMNS, tuple("---" for _ in COLUMNS)]
    for rounds in runs:
        run, plain = rounds[0], plain_over_best(rounds)
        rows.append((run.model.name, compiled_column(run), verdict_column(run),
                     ratio_column(run, "eager"), ratio_column(run, "by hand"),
                     "-" if plain is None else f"{plain:.2f}", risky_column(run)))
    return ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]


def promise_lines(runs: Sequence[Sequence[ModelRun]]) -> list[str]:
    """Whether plain ``%%pyrojit`` kept within :data:`PLAIN_PROMISE` of the better way, per model."""
    ratios = {rounds[0].model.name: plain_over_best(rounds) for rounds in runs}
    measured = {name: r for name, r in ratios.items() if r is not None}
    if not measured:
        return []
    over = sorted((r, name) for name, r in measured.items() if r > PLAIN_PROMISE)
    worst = max((r, name) for name, r in measured.items())
    verdict = "PASS" if not over else "MISS"
    lines = [f"{verdict}  plain %%pyrojit within {PLAIN_PROMISE}x of the better of eager and Pyro's JIT "
             f"by hand on {len(measured) - len(over)} of {len(measured)} models (worst {worst[0]:.2f}, "
             f"{worst[1]})"]
    lines += [f"      over: {name} {r:.2f}" for r, name in over]
    return lines


def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    """Run the models and print the table; ``shell`` defaults to the process's IPython shell."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", metavar="NAME", choices=sorted(BY_NAME),
                        help="run these models only (default: all)")
    parser.add_argument("--skip-slow", action="store_true", help="leave out the models marked slow")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch.set_num_threads for the run (default 1: steadier on a small machine)")
    parser.add_argument("--backend", choices=("pyro", "step", "inductor"), default="pyro",
                        help="the magic's --backend (with step or inductor, --auto is left out: it "
                             "decides for Pyro's JIT only)")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run each model's ways this many times: the ratios are of medians (default 1)")
    parser.add_argument("--long", type=int, metavar="K", default=0,
                        help="long runs: each run cell K times as long, run eager, by hand and plain only")
    parser.add_argument("--quick", action="store_true",
                        help=f"only {' and '.join(QUICK_MODELS)}: checks the script runs, measures nothing")
    args = parser.parse_args(argv)
    names = args.models or (QUICK_MODELS if args.quick else [m.name for m in MODELS])
    models = [BY_NAME[n] for n in names if not (args.skip_slow and BY_NAME[n].slow)]

    if args.threads < 1:
        parser.error("--threads must be >= 1")
    ways = WAYS if args.backend == "pyro" else tuple(w for w in WAYS if w != "auto")
    if args.long < 0 or (args.long and args.backend != "pyro"):
        parser.error("--long takes a positive factor, and compares plain %%pyrojit (no --backend)")
    scaled = [longer(m, args.long) if args.long else (m, []) for m in models]
    ways = LONG_WAYS if args.long else ways
    shell = shell if shell is not None else process_shell()
    shell.run_line_magic("load_ext", "pyro_jitmagic")
    import torch

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        for line in machine_lines(args.threads):
            print(line)
        runs = []
        start = time.perf_counter()
        for model, said in scaled:
            began = time.perf_counter()
            runs.append(([run_model(shell, model, ways, args.backend) for _ in range(args.rounds)], said))
            print(f"  {model.name}: {len(ways)} ways, {args.rounds} rounds, "
                  f"in {time.perf_counter() - began:.1f} s", file=sys.stderr)
    finally:
        torch.set_num_threads(threads_before)
    print(f"load:     {load_average()}")
    length = f", runs x{args.long}" if args.long else ""
    print(f"{len(models)} models, {len(ways)} ways each{length}, in {time.perf_counter() - start:.0f} s\n")
    for line in long_table(runs) if args.long else table([rounds for rounds, _ in runs]):
        print(line)
    print()
    for line in promise_lines([rounds for rounds, _ in runs]):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
