"""``%%pyrojit --auto`` against always eager and always compiled, on the tutorial's workloads.

Each workload and length (a case) runs in a fresh process of its own, so that
what earlier cases left behind (torch keeps every traced graph, in C++
memory) weighs on none. In it, four cells run in one IPython shell,
interleaved round by round (order rotated), each from a cleared param store
with new objects, so every compiled cell compiles:

* eager: the cell as written;
* compiled: the cell under ``%%pyrojit -q`` (its default executor, no-opt);
* --auto: the cell under ``%%pyrojit --auto -q``, starting from a new session
  policy each time (what a first ``--auto`` cell of a session gets: the priors,
  then what the cell itself measures);
* Pyro JIT: the tutorial's compiled cell as Pyro has it, with torch's default
  executor (``JitTrace_ELBO``, ``NUTS(jit_compile=True)``, ``JitTraceEnum_ELBO``).

Figures, medians over the rounds: ``--auto`` / min(eager, compiled) (target at
most 1.20, aim 1.10), and compiled (the default ``%%pyrojit``) against Pyro's
JIT and against eager.

Usage::

    python bench/bench_auto.py                  # 3 rounds of everything
    python bench/bench_auto.py --quick          # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compare import SETUP_CELL, run_cell
from bench_svi import load_average, machine_lines, process_shell

TARGET, AIM = 1.20, 1.10

_SVI = """\
pyro.clear_param_store()
pyro.set_rng_seed(1)
guide = AutoDiagonalNormal(model)
{warm}svi = SVI(model, guide, Adam({{'lr': 0.01}}), {elbo}())
for i in range({n}):
    svi.step(data)
"""
_NUTS = """\
pyro.set_rng_seed(1)
mcmc = MCMC(NUTS(model{jit}), num_samples={n}, disable_progbar=True)
mcmc.run(data)
"""
_HMM = """\
pyro.clear_param_store()
pyro.set_rng_seed(1)
guide = AutoDiagonalNormal(poutine.block(hmm_model, expose=["trans", "emit_scale", "emit_loc"]))
svi = SVI(hmm_model, guide, Adam({{'lr': 0.01}}), {elbo}(max_plate_nesting=1{jit}))
for epoch in range({n}):
    for sequence in sequences[:{sequences}]:
        svi.step(sequence, num_sequences=len(sequences), length=len(sequence))
"""

# (workload, unit, template, eager fill, Pyro JIT fill)
WORKLOADS = [
    ("simple SVI", "steps", _SVI, {"warm": "", "elbo": "Trace_ELBO"},
     {"warm": "guide(data)\n", "elbo": "JitTrace_ELBO"}),
    ("NUTS", "samples", _NUTS, {"jit": ""}, {"jit": ", jit_compile=True, ignore_jit_warnings=True"}),
    ("HMM", "epochs", _HMM, {"elbo": "TraceEnum_ELBO", "jit": ""},
     {"elbo": "JitTraceEnum_ELBO", "jit": ", ignore_jit_warnings=True"}),
]
SIZES = {"simple SVI": (100, 1000, 5000), "NUTS": (100, 1000), "HMM": (1, 3, 10)}
QUICK_SIZES = {"simple SVI": (20,), "NUTS": (5,), "HMM": (1,)}
WAYS = ("eager", "compiled", "--auto", "Pyro JIT")
REPORT = "_bench_report"
# the session the magic keeps (the process's default, shared with the twins) gets a new policy
_NEW_POLICY = ("import pyro_jitmagic\n"
               "get_ipython().magics_manager.registry['PyroJitMagics'].session.auto = "
               "pyro_jitmagic.AutoPolicy()")


def cells(sizes: dict[str, tuple[int, ...]], sequences: int) -> dict[str, dict[str, str]]:
    out = {}
    for name, unit, template, eager, pyro_jit in WORKLOADS:
        for n in sizes[name]:
            plain = template.format(n=n, sequences=sequences, **eager)
            out[f"{name} {n} {unit}"] = {
                "eager": plain,
                "compiled": f"%%pyrojit -q -o {REPORT}\n" + plain,
                "--auto": f"%%pyrojit --auto -q -o {REPORT}\n" + plain,
                "Pyro JIT": template.format(n=n, sequences=sequences, **pyro_jit),
            }
    return out


Times = dict[str, dict[str, list[float]]]


def measure(shell: Any, all_cells: dict[str, dict[str, str]], rounds: int,
            choices: dict[str, list[str]]) -> Times:
    """Time every cell; ``choices`` gets what the compiled cells' reports say they chose."""
    times: Times = {c: {w: [] for w in WAYS} for c in all_cells}
    for r in range(rounds):
        for case, by_way in all_cells.items():
            order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]
            parts = []
            for way in order:
                if way == "--auto":
                    run_cell(shell, _NEW_POLICY)
                shell.user_ns.pop(REPORT, None)
                seconds = run_cell(shell, by_way[way])
                times[case][way].append(seconds)
                report = shell.user_ns.pop(REPORT, None)
                if report is not None:
                    choices.setdefault(case, []).extend(_choices(r + 1, way, report))
                parts.append(f"{way} {seconds:.3f}s")
            print(f"round {r + 1}: {case:<22} " + ", ".join(parts), flush=True)
    return times


def _choices(round_number: int, way: str, report: Any) -> list[str]:
    """The adaptive executor's choices, --auto's decisions and NUTS's evaluations, one line each."""
    lines = [f"round {round_number}, {way}: executor: {c.owner}, {c.key}: {c.why}"
             for c in report.executor_choices]
    # a NUTS run's time follows its path: how many evaluations its trees took
    lines += [f"round {round_number}, {way}: {m.potential_evals} potential evaluations"
              for m in report.mcmc_runs]
    for d in report.auto:
        unit = "evaluation" if d.kind == "potential" else "step"
        at = f"compiled at {unit} {d.compiled_at}" if d.compiled_at is not None else d.state
        lines.append(f"round {round_number}, {way}: {d.key}: {d.eager_steps} eager, {at}")
    return lines


def report_lines(times: Times) -> list[str]:
    med = {case: {w: statistics.median(v) for w, v in by_way.items()} for case, by_way in times.items()}
    lines = ["median seconds over the rounds; auto/best: --auto / min(eager, compiled) per round, median",
             f"{'case':<22}" + "".join(f"{w:>10}" for w in WAYS)
             + f"{'auto/best':>11}{'':>6}{'compiled/Pyro JIT':>19}{'compiled/eager':>16}"]
    worst = 0.0
    for case, by_way in times.items():
        ratios = [a / min(e, c) for e, c, a in zip(by_way["eager"], by_way["compiled"], by_way["--auto"],
                                                   strict=True)]
        ratio = statistics.median(ratios)
        worst = max(worst, ratio)
        mark = "PASS" if ratio <= TARGET else "MISS"
        m = med[case]
        lines.append(f"{case:<22}" + "".join(f"{m[w]:>10.3f}" for w in WAYS)
                     + f"{ratio:>11.3f}  {mark}{m['compiled'] / m['Pyro JIT']:>19.3f}"
                     f"{m['compiled'] / m['eager']:>16.3f}")
    lines.append("")
    verdict = "PASS" if worst <= TARGET else "MISS"
    lines.append(f"worst --auto / best: {worst:.3f}   target <= {TARGET} {verdict}   "
                 f"aim <= {AIM} {'met' if worst <= AIM else 'not met'}")
    hmm3 = next((c for c in times if c.startswith("HMM 3 ")), None)
    if hmm3:
        c, e = med[hmm3]["compiled"], med[hmm3]["eager"]
        lines.append(f"HMM at 3 epochs: default %%pyrojit {c:.3f}s vs eager {e:.3f}s: "
                     f"{'beats eager' if c < e else 'DOES NOT beat eager'} ({e / c:.2f}x)")
    return lines


def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="cases whose name starts with one of these")
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, 1 round, one process: checks the script runs, measures nothing")
    parser.add_argument("--one-process", action="store_true", help="run every case in this process")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child process: run this case, print JSON
    args = parser.parse_args(argv)
    sizes, sequences = SIZES, 75
    if args.quick:
        sizes, sequences, args.rounds, args.one_process = QUICK_SIZES, 3, 1, True
    if not args.one_process and args.case is None and shell is None:
        return _fresh_processes(args, [c for c in cells(sizes, sequences)
                                       if not args.only or c.startswith(tuple(args.only))])

    import torch

    torch.set_num_threads(args.threads)
    shell = shell or process_shell()
    shell.run_cell("%load_ext pyro_jitmagic")
    setup = shell.run_cell(SETUP_CELL + "from pyro.infer import JitTraceEnum_ELBO\n")
    if not setup.success:
        raise SystemExit("the setup cell failed")
    all_cells = cells(sizes, sequences)
    if args.only:
        all_cells = {c: v for c, v in all_cells.items() if c.startswith(tuple(args.only))}
    if args.case is not None:
        all_cells = {args.case: all_cells[args.case]}
    # pay torch's one-off start-up outside the figures
    run_cell(shell, next(iter(all_cells.values()))["compiled"])
    if args.case is not None:
        choices: dict[str, list[str]] = {}
        times = measure(shell, all_cells, args.rounds, choices)
        print(json.dumps({"times": times[args.case], "choices": choices.get(args.case, [])}))
        return 0

    for line in machine_lines(args.threads):
        print(line)
    print(f"method:   one process, one IPython shell; {args.rounds} rounds, order rotated; each cell "
          "starts from a cleared param store with new objects; each --auto cell from a new session policy")
    print(f"load average before: {load_average()}")
    choices = {}
    times = measure(shell, all_cells, args.rounds, choices)
    _summary(times, choices)
    return 0


def _summary(times: Times, choices: dict[str, list[str]]) -> None:
    print(f"load average after:  {load_average()}")
    print()
    for line in report_lines(times):
        print(line)
    print()
    print("what the compiled and --auto cells chose (from their reports)")
    for case, lines in choices.items():
        for line in lines:
            print(f"{case:<22} {line}")


def _fresh_processes(args: Any, cases: list[str]) -> int:
    """Run each case in a process of its own; gather and print as one run."""
    for line in machine_lines(args.threads):
        print(line)
    print(f"method:   each case in a fresh process, one IPython shell in it; {args.rounds} rounds, order "
          "rotated; each cell starts from a cleared param store with new objects; each --auto cell "
          "from a new session policy")
    print(f"load average before: {load_average()}")
    times: Times = {}
    choices: dict[str, list[str]] = {}
    for case in cases:
        out = subprocess.run([sys.executable, __file__, "--case", case, "--rounds", str(args.rounds),
                              "--threads", str(args.threads)], capture_output=True, text=True, check=False)
        if out.returncode:
            raise SystemExit(f"{case} failed:\n{out.stderr[-3000:]}")
        lines = out.stdout.strip().splitlines()
        for line in lines[:-1]:
            if line.startswith("round "):
                print(line, flush=True)
        result = json.loads(lines[-1])
        times[case], choices[case] = result["times"], result["choices"]
    _summary(times, choices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
