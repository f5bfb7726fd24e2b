"""``%%pyrojit --auto`` against every single backend, on the tutorial's workloads, cold and warm.

The grid (a case is a workload at one length):

* simple SVI: the tutorial's Gaussian model, 100, 1,000 and 10,000 steps;
* simple SVI comprehension: the same, its loop written ``losses = [svi.step(data) for i in
  range(n)]``, 800 steps (the climb must read it as it reads the ``for`` loop);
* NUTS: the tutorial's model, 100 and 1,000 samples (after as many warm-up steps);
* HMM: the tutorial's HMM (``TraceEnum_ELBO``), 1, 3 and 10 epochs over 75 sequences.

The ways (columns), each a variant of the same cell:

* eager: the cell as written;
* pyro: the cell under ``%%pyrojit -q --backend pyro`` (Pyro's JIT traces the loss);
* step: under ``%%pyrojit -q --backend step`` (the whole step as one TorchScript graph);
* inductor: under ``%%pyrojit -q --backend inductor`` (that graph compiled by inductor,
  whose codegen may go on in the background after the cell ends);
* --auto: under ``%%pyrojit --auto --backend inductor -q`` (every tier: what plain
  ``%%pyrojit`` does), starting from a new
  session policy each time
  (what a first ``--auto`` cell of a session gets: the priors, then what the cell measures);
* Pyro JIT: the tutorial's compiled cell as Pyro has it (``JitTrace_ELBO``,
  ``NUTS(jit_compile=True)``, ``JitTraceEnum_ELBO``).

Each case runs in a fresh process of its own (what earlier cases left behind, traced graphs
in torch's C++ memory, compiled kernels, weighs on none), with ``TORCHINDUCTOR_CACHE_DIR`` set
to a fresh temporary directory; in it the inductor and --auto cells each get a subdirectory
of their own (and inductor's in-memory caches are cleared before each of their cells), so
that neither is served what the other compiled. In that process one IPython shell runs the
ways interleaved round by round (order rotated), each cell from a cleared param store with
new objects, so every compiled cell compiles. Torch's one-off start-up, and inductor's
import, are paid before the rounds.

* cold: round 1, inductor's on-disk cache empty;
* warm: the median over rounds 2..N, the on-disk cache filled by the earlier rounds.

After each timed cell the script waits, untimed, until no ``pyrojit-inductor`` thread is
alive (inductor's codegen, which may outlive the cell), and prints that wait in the round
line (``inductor 3.2s (+41.0s background)``), so a compile that goes on after the cell shows
and slows no later cell.

Targets (PASS/MISS):

1. every case, cold and warm: ``--auto`` / min(eager, pyro, step, inductor), per round,
   median, at most 1.15;
2. short runs, cold (simple SVI 100 steps, NUTS 100 samples): ``--auto`` / min(eager,
   Pyro JIT) at most 1.15;
3. long runs, warm: simple SVI 10,000 steps ``--auto`` / Pyro JIT at most 0.35, HMM 10
   epochs at most 0.5.

Also printed: pyro (``%%pyrojit --backend pyro``) against Pyro's JIT and against eager, and what
the compiled cells' reports say they chose (``--auto``'s tier path per key).

Usage::

    python bench/bench_auto.py                        # 3 rounds of everything (hours on 2 cores)
    python bench/bench_auto.py --only "simple SVI 100" --rounds 2
    python bench/bench_auto.py --ways eager pyro auto # a subset of the ways
    python bench/bench_auto.py --quick                # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_compare import SETUP_CELL, run_cell
from bench_svi import load_average, machine_lines, process_shell

#: 1. every case, cold and warm: --auto / min(BEST_OF), per round, median
TARGET_BEST = 1.15
BEST_OF = ("eager", "pyro", "step", "inductor")
#: 2. short runs, cold: --auto / min(eager, Pyro JIT)
TARGET_SHORT = 1.15
SHORT_CASES = ("simple SVI 100 steps", "NUTS 100 samples")
#: 3. long runs, warm: --auto / Pyro JIT
TARGET_LONG = {"simple SVI 10000 steps": 0.35, "HMM 10 epochs": 0.5}

#: the thread inductor's background codegen runs on, and how long to wait for it after a cell
INDUCTOR_THREAD = "pyrojit-inductor"
BACKGROUND_CAP = 600.0

_SVI = """\
pyro.clear_param_store()
pyro.set_rng_seed(1)
guide = AutoDiagonalNormal(model)
{warm}svi = SVI(model, guide, Adam({{'lr': 0.01}}), {elbo}())
for i in range({n}):
    svi.step(data)
"""
_SVI_COMPREHENSION = _SVI.replace("for i in range({n}):\n    svi.step(data)\n",
                                  "losses = [svi.step(data) for i in range({n})]\n")
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
    ("simple SVI comprehension", "steps", _SVI_COMPREHENSION, {"warm": "", "elbo": "Trace_ELBO"},
     {"warm": "guide(data)\n", "elbo": "JitTrace_ELBO"}),
    ("NUTS", "samples", _NUTS, {"jit": ""}, {"jit": ", jit_compile=True, ignore_jit_warnings=True"}),
    ("HMM", "epochs", _HMM, {"elbo": "TraceEnum_ELBO", "jit": ""},
     {"elbo": "JitTraceEnum_ELBO", "jit": ", ignore_jit_warnings=True"}),
]
SIZES: dict[str, tuple[int, ...]] = {"simple SVI": (100, 1000, 10000), "simple SVI comprehension": (800,),
                                     "NUTS": (100, 1000), "HMM": (1, 3, 10)}
QUICK_SIZES: dict[str, tuple[int, ...]] = {"simple SVI": (20,), "simple SVI comprehension": (20,),
                                           "NUTS": (5,), "HMM": (1,)}
WAYS = ("eager", "pyro", "step", "inductor", "--auto", "Pyro JIT")
#: the ways whose cells inductor compiles: each gets an on-disk cache of its own
INDUCTOR_WAYS = ("inductor", "--auto")
REPORT = "_bench_report"
_MAGIC = {
    "pyro": f"%%pyrojit -q --backend pyro -o {REPORT}\n",
    "step": f"%%pyrojit -q --backend step -o {REPORT}\n",
    "inductor": f"%%pyrojit -q --backend inductor -o {REPORT}\n",
    "--auto": f"%%pyrojit --auto --backend inductor -q -o {REPORT}\n",  # every tier
}
# the session the magic keeps (the process's default, shared with the twins) gets a new policy
_NEW_POLICY = ("import pyro_jitmagic\n"
               "get_ipython().magics_manager.registry['PyroJitMagics'].session.auto = "
               "pyro_jitmagic.AutoPolicy()")


def cells(sizes: dict[str, tuple[int, ...]], sequences: int) -> dict[str, dict[str, str]]:
    out = {}
    for name, unit, template, eager, pyro_jit in WORKLOADS:
        for n in sizes[name]:
            plain = template.format(n=n, sequences=sequences, **eager)
            by_way = {way: magic + plain for way, magic in _MAGIC.items()}
            by_way["eager"] = plain
            by_way["Pyro JIT"] = template.format(n=n, sequences=sequences, **pyro_jit)
            out[f"{name} {n} {unit}"] = {way: by_way[way] for way in WAYS}
    return out


def way_name(text: str) -> str:
    """A way as the command line may spell it (``auto``, ``--auto``, ``pyro-jit``) -> its column."""
    plain = text.strip().lower().lstrip("-").replace("-", " ").replace("_", " ")
    names = {w.lower().lstrip("-"): w for w in WAYS} | {"pyrojit": "Pyro JIT"}
    if plain not in names:
        raise argparse.ArgumentTypeError(f"unknown way {text!r}: one of eager, pyro, step, inductor, "
                                         "auto, pyro-jit")
    return names[plain]


def _way_arg(way: str) -> str:
    """A way as a command-line word (``--auto`` would read as an option)."""
    return way.lower().lstrip("-").replace(" ", "-")


# -- measuring ------------------------------------------------------------------------------------

Times = dict[str, dict[str, list[float]]]  # case -> way -> seconds per round


def wait_for_background(cap: float = BACKGROUND_CAP) -> tuple[float, bool]:
    """Wait until no ``pyrojit-inductor`` thread is alive: (seconds waited, whether one still is)."""
    start = time.perf_counter()
    while any(t.name.startswith(INDUCTOR_THREAD) and t.is_alive() for t in threading.enumerate()):
        if time.perf_counter() - start > cap:
            return time.perf_counter() - start, True
        time.sleep(0.02)
    return time.perf_counter() - start, False


@contextlib.contextmanager
def fresh_inductor_cache(root: str | None = None) -> Iterator[str]:
    """``TORCHINDUCTOR_CACHE_DIR`` at a new empty directory (under ``root``), restored after."""
    before = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    directory = tempfile.mkdtemp(prefix="pyrojit-bench-auto-", dir=root)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory
    _clear_inductor_memory()
    try:
        yield directory
    finally:
        _clear_inductor_memory()
        if before is None:
            os.environ.pop("TORCHINDUCTOR_CACHE_DIR", None)
        else:
            os.environ["TORCHINDUCTOR_CACHE_DIR"] = before
        shutil.rmtree(directory, ignore_errors=True)


def _clear_inductor_memory() -> None:
    """Drop what inductor keeps in memory (loaded kernels, lookups), if it was imported."""
    if "torch._inductor.utils" in sys.modules:
        sys.modules["torch._inductor.utils"].clear_caches()


def _use_cache_of(way: str, root: str) -> None:
    """Point inductor at ``way``'s own cache directory under ``root``, its memory cleared."""
    directory = os.path.join(root, way.lstrip("-"))
    os.makedirs(directory, exist_ok=True)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = directory
    _clear_inductor_memory()


def measure_case(shell: Any, case: str, by_way: dict[str, str], ways: Sequence[str], rounds: int,
                 cache_root: str) -> dict[str, Any]:
    """Time one case's cells, round by round: its times, background waits and reports' choices."""
    times: dict[str, list[float]] = {w: [] for w in ways}
    background: dict[str, list[float]] = {w: [] for w in ways}
    choices: list[str] = []
    for r in range(rounds):
        order = list(ways[r % len(ways):]) + list(ways[:r % len(ways)])
        parts = []
        for way in order:
            if way in INDUCTOR_WAYS:
                _use_cache_of(way, cache_root)
            if way == "--auto":
                run_cell(shell, _NEW_POLICY)
            shell.user_ns.pop(REPORT, None)
            seconds = run_cell(shell, by_way[way])
            waited, still_running = wait_for_background()
            times[way].append(seconds)
            background[way].append(waited)
            report = shell.user_ns.pop(REPORT, None)
            if report is not None:
                choices.extend(_choices(r + 1, way, report))
            part = f"{way} {seconds:.3f}s"
            if waited >= 0.05 or still_running:
                part += f" (+{waited:.1f}s background{', still running' if still_running else ''})"
            parts.append(part)
        print(f"round {r + 1}: {case:<22} " + ", ".join(parts), flush=True)
    return {"times": times, "background": background, "choices": choices}


def _choices(round_number: int, way: str, report: Any) -> list[str]:
    """The adaptive executor's choices, --auto's decisions and NUTS's evaluations, one line each."""
    lines = [f"round {round_number}, {way}: executor: {c.owner}, {c.key}: {c.why}"
             for c in report.executor_choices]
    # a NUTS run's time follows its path: how many evaluations its trees took
    lines += [f"round {round_number}, {way}: {m.potential_evals} potential evaluations"
              for m in report.mcmc_runs]
    for d in report.auto:
        path = tuple(getattr(d, "path", None) or ())
        if path:
            lines.append(f"round {round_number}, {way}: {d.key}: {' -> '.join(path)}")
            continue
        unit = "evaluation" if d.kind == "potential" else "step"
        at = f"compiled at {unit} {d.compiled_at}" if d.compiled_at is not None else d.state
        lines.append(f"round {round_number}, {way}: {d.key}: {d.eager_steps} eager, {at}")
    return lines


# -- the tables -----------------------------------------------------------------------------------

def _ratio(by_way: dict[str, list[float]], rounds: Sequence[int], way: str,
           against: Sequence[str]) -> float | None:
    """``way`` / min(``against``) per round, the median over ``rounds``; None without the figures."""
    present = [w for w in against if w in by_way]
    if way not in by_way or not present or not rounds:
        return None
    return statistics.median(by_way[way][r] / min(by_way[w][r] for w in present) for r in rounds)


def _views(times: Times) -> list[tuple[str, list[int]]]:
    """(name, rounds) of the tables the run has: cold (round 1), and warm (rounds 2..N) with two."""
    rounds = min(len(v) for by_way in times.values() for v in by_way.values())
    views = [("cold", [0])]
    if rounds > 1:
        views.append(("warm", list(range(1, rounds))))
    return views


def table_lines(times: Times, view: str, rounds: list[int]) -> list[str]:
    """One table: seconds per way and case over ``rounds``, --auto / best with its verdict."""
    ways = [w for w in WAYS if any(w in by_way for by_way in times.values())]
    best = [w for w in BEST_OF if w in ways]
    if view == "cold":
        what = "round 1, inductor's on-disk cache empty: seconds"
    else:
        span = "round 2" if len(rounds) == 1 else f"median over rounds 2..{rounds[-1] + 1}"
        what = f"{span}, the on-disk cache warm: seconds"
    lines = [f"{view.upper()}: {what}; auto/best: --auto / min({', '.join(best)}) per round, median",
             f"{'case':<22}" + "".join(f"{w:>10}" for w in ways)
             + f"{'auto/best':>11}{'':>6}{'pyro/Pyro JIT':>15}{'pyro/eager':>12}"]
    worst: tuple[float, str] | None = None
    for case, by_way in times.items():
        med = {w: statistics.median(by_way[w][r] for r in rounds) for w in ways if w in by_way}
        ratio = _ratio(by_way, rounds, "--auto", best)
        if ratio is not None and (worst is None or ratio > worst[0]):
            worst = (ratio, case)
        auto = (f"{ratio:>11.3f}  {'PASS' if ratio <= TARGET_BEST else 'MISS'}" if ratio is not None
                else f"{'-':>11}{'':>6}")
        versus = [_ratio(by_way, rounds, "pyro", [w]) for w in ("Pyro JIT", "eager")]
        lines.append(f"{case:<22}" + "".join(f"{med[w]:>10.3f}" if w in med else f"{'-':>10}" for w in ways)
                     + auto + "".join(f"{v:>{width}.3f}" if v is not None else f"{'-':>{width}}"
                                      for v, width in zip(versus, (15, 12), strict=True)))
    lines.append("")
    if worst is not None:
        verdict = "PASS" if worst[0] <= TARGET_BEST else "MISS"
        lines.append(f"{view}: worst --auto / best: {worst[0]:.3f} ({worst[1]})   "
                     f"target <= {TARGET_BEST} {verdict}")
    hmm3 = next((c for c in times if c.startswith("HMM 3 ")), None)
    if hmm3 and "pyro" in times[hmm3] and "eager" in times[hmm3]:
        c = statistics.median(times[hmm3]["pyro"][r] for r in rounds)
        e = statistics.median(times[hmm3]["eager"][r] for r in rounds)
        lines.append(f"{view}: HMM at 3 epochs: %%pyrojit --backend pyro {c:.3f}s vs eager {e:.3f}s: "
                     f"{'beats eager' if c < e else 'DOES NOT beat eager'} ({e / c:.2f}x)")
    return lines


def target_lines(times: Times) -> list[str]:
    """The targets' verdicts, one line each, for the cases and tables this run has."""
    views = dict(_views(times))
    best = [w for w in BEST_OF if any(w in by_way for by_way in times.values())]
    lines = []
    for view, rounds in views.items():
        ratios = {c: _ratio(by_way, rounds, "--auto", best) for c, by_way in times.items()}
        known = {c: r for c, r in ratios.items() if r is not None}
        if known:
            case = max(known, key=known.__getitem__)
            verdict = "PASS" if known[case] <= TARGET_BEST else "MISS"
            lines.append(f"{verdict}  1. every case, {view}: --auto / min({', '.join(best)}) "
                         f"<= {TARGET_BEST} (worst {known[case]:.3f}: {case})")
    for case in SHORT_CASES:
        ratio = _ratio(times[case], views["cold"], "--auto", ["eager", "Pyro JIT"]) if case in times else None
        if ratio is not None:
            lines.append(f"{'PASS' if ratio <= TARGET_SHORT else 'MISS'}  2. {case}, cold: "
                         f"--auto / min(eager, Pyro JIT) {ratio:.3f} <= {TARGET_SHORT}")
    for case, target in TARGET_LONG.items():
        if case not in times or "warm" not in views:
            continue
        ratio = _ratio(times[case], views["warm"], "--auto", ["Pyro JIT"])
        if ratio is not None:
            lines.append(f"{'PASS' if ratio <= target else 'MISS'}  3. {case}, warm: "
                         f"--auto / Pyro JIT {ratio:.3f} <= {target}")
    return lines


def background_lines(background: Times) -> list[str]:
    """The untimed waits for inductor's background codegen after the cells, where there were any."""
    lines = []
    for case, by_way in background.items():
        parts = []
        for way in WAYS:
            waits = by_way.get(way, [])
            if any(w >= 0.05 for w in waits):
                warm = f", warm {statistics.median(waits[1:]):.1f}s" if len(waits) > 1 else ""
                parts.append(f"{way} cold {waits[0]:.1f}s{warm}")
        if parts:
            lines.append(f"{case:<22} " + "; ".join(parts))
    return lines


def _summary(times: Times, background: Times, choices: dict[str, list[str]]) -> None:
    print(f"load average after:  {load_average()}")
    for view, rounds in _views(times):
        print()
        for line in table_lines(times, view, rounds):
            print(line)
    print()
    print("targets")
    for line in target_lines(times):
        print(line)
    waits = background_lines(background)
    if waits:
        print()
        print("background codegen after the cell (untimed wait; cold: round 1, warm: median of the rest)")
        for line in waits:
            print(line)
    print()
    print("what the compiled and --auto cells chose (from their reports)")
    for case, lines in choices.items():
        for line in lines:
            print(f"{case:<22} {line}")


# -- running --------------------------------------------------------------------------------------

def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="round 1 is cold, the rest warm")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--only", nargs="*", help="cases whose name starts with one of these")
    parser.add_argument("--ways", nargs="+", type=way_name, metavar="WAY",
                        help="run only these ways: eager, pyro, step, inductor, auto, pyro-jit "
                             "(default: all)")
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, 1 round, one process: checks the script runs, measures nothing")
    parser.add_argument("--one-process", action="store_true", help="run every case in this process")
    parser.add_argument("--case", help=argparse.SUPPRESS)  # a child process: run this case, print JSON
    args = parser.parse_args(argv)
    ways = [w for w in WAYS if w in (args.ways or WAYS)]
    sizes, sequences = SIZES, 75
    if args.quick:
        sizes, sequences, args.rounds, args.one_process = QUICK_SIZES, 3, 1, True
    all_cells = cells(sizes, sequences)
    if args.only:
        all_cells = {c: v for c, v in all_cells.items() if c.startswith(tuple(args.only))}
    if args.case is not None:
        all_cells = {args.case: all_cells[args.case]}
    elif not args.one_process and shell is None:
        return _fresh_processes(args, list(all_cells), ways)

    import torch

    torch.set_num_threads(args.threads)
    shell = shell or process_shell()
    shell.run_cell("%load_ext pyro_jitmagic")
    setup = shell.run_cell(SETUP_CELL + "from pyro.infer import JitTraceEnum_ELBO\n")
    if not setup.success:
        raise SystemExit("the setup cell failed")
    # pay torch's one-off start-up, and inductor's import, outside the figures
    run_cell(shell, next(iter(all_cells.values()))["pyro"])
    if any(w in INDUCTOR_WAYS for w in ways):
        import torch._inductor.compile_fx

    if args.case is not None:
        # the parent set TORCHINDUCTOR_CACHE_DIR to this case's fresh directory
        result = measure_case(shell, args.case, all_cells[args.case], ways, args.rounds,
                              os.environ["TORCHINDUCTOR_CACHE_DIR"])
        print(json.dumps(result))
        return 0

    for line in machine_lines(args.threads):
        print(line)
    print(f"method:   one process, one IPython shell, case after case, each with a fresh inductor cache; "
          f"{args.rounds} round(s), order rotated; each cell starts from a cleared param store with new "
          "objects; each --auto cell from a new session policy")
    print(f"ways:     {', '.join(ways)}")
    print(f"load average before: {load_average()}")
    times: Times = {}
    background: Times = {}
    choices: dict[str, list[str]] = {}
    for case, by_way in all_cells.items():
        with fresh_inductor_cache() as cache_root:
            result = measure_case(shell, case, by_way, ways, args.rounds, cache_root)
        times[case], background[case], choices[case] = (result["times"], result["background"],
                                                          result["choices"])
    _summary(times, background, choices)
    return 0


def _fresh_processes(args: Any, cases: list[str], ways: list[str]) -> int:
    """Run each case in a process of its own, with a fresh inductor cache; gather and print as one run."""
    for line in machine_lines(args.threads):
        print(line)
    print(f"method:   each case in a fresh process with a fresh inductor cache (TORCHINDUCTOR_CACHE_DIR), "
          f"one IPython shell in it; {args.rounds} round(s), order rotated; each cell starts from a "
          "cleared param store with new objects; each --auto cell from a new session policy")
    print(f"ways:     {', '.join(ways)}")
    print(f"load average before: {load_average()}")
    times: Times = {}
    background: Times = {}
    choices: dict[str, list[str]] = {}
    for case in cases:
        cache_root = tempfile.mkdtemp(prefix="pyrojit-bench-auto-")
        command = [sys.executable, __file__, "--case", case, "--rounds", str(args.rounds),
                   "--threads", str(args.threads), "--ways", *map(_way_arg, ways)]
        try:
            with tempfile.TemporaryFile("w+") as errors:
                child = subprocess.Popen(command, env=dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_root),
                                         stdout=subprocess.PIPE, stderr=errors, text=True)
                assert child.stdout is not None
                last = ""
                for line in child.stdout:  # the round lines as they come
                    if line.startswith("round "):
                        print(line, end="", flush=True)
                    elif line.startswith("{"):
                        last = line
                if child.wait() or not last:
                    errors.seek(0)
                    raise SystemExit(f"{case} failed:\n{errors.read()[-3000:]}")
        finally:
            shutil.rmtree(cache_root, ignore_errors=True)
        result = json.loads(last)
        times[case], background[case], choices[case] = (result["times"], result["background"],
                                                          result["choices"])
    _summary(times, background, choices)
    return 0


if __name__ == "__main__":
    sys.exit(main())
