"""What ``%%pyrojit --compare`` costs over running the cell eager and compiled separately.

For each of the Pyro JIT tutorial's workloads (the simple model with SVI, the
same model with NUTS, the HMM with enumeration over three sequence lengths),
three cells run in one IPython shell, interleaved round by round:

* eager: the cell as written;
* compiled: the cell under ``%%pyrojit -q --backend pyro``;
* compare: the cell under ``%%pyrojit --compare``, its panel built and displayed
  (plots and widget included), as a user gets it;
* compare -q: the same without the panel (``-q``): the comparison machinery alone
  (saving and restoring state, both runs recorded, the figures derived).

The figure of merit is compare / (eager + compiled), per round, and its median,
for both compare ways. Target: at most 1.05. Every repetition starts from a
cleared param store with new objects, so every compiled run compiles.

Usage::

    python bench/bench_compare.py                  # 3 rounds, HMM over 1 epoch
    python bench/bench_compare.py --quick          # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_svi import SETUP_CELL as SVI_SETUP_CELL
from bench_svi import load_average, machine_lines, process_shell

TARGET = 1.05

# The simple model and its data as bench_svi.py sets them up, plus the tutorial's HMM.
SETUP_CELL = SVI_SETUP_CELL + """
import torch
from pyro import poutine
from pyro.infer import TraceEnum_ELBO
from pyro.infer.mcmc import MCMC, NUTS

def hmm_model(sequence, num_sequences, length, state_dim=16):
    with pyro.plate("states", state_dim):
        trans = pyro.sample("trans", dist.Dirichlet(0.5 * torch.ones(state_dim)))
        emit_loc = pyro.sample("emit_loc", dist.Normal(0., 10.))
    emit_scale = pyro.sample("emit_scale", dist.LogNormal(0., 3.))
    with poutine.scale(scale=num_sequences):
        x = 0
        for t in pyro.markov(range(length)):
            x = pyro.sample("x_{}".format(t), dist.Categorical(trans[x]),
                            infer={"enumerate": "parallel"})
            pyro.sample("y_{}".format(t), dist.Normal(emit_loc[x], emit_scale), obs=sequence[t])

lengths = [24] * 50 + [48] * 20 + [72] * 5
sequences = [torch.randn(length) for length in lengths]
"""

WORKLOADS = {
    "simple SVI": """\
pyro.clear_param_store()
pyro.set_rng_seed(1)
guide = AutoDiagonalNormal(model)
svi = SVI(model, guide, Adam({{'lr': 0.01}}), Trace_ELBO())
for i in range({svi_steps}):
    svi.step(data)
""",
    "NUTS": """\
pyro.set_rng_seed(1)
mcmc = MCMC(NUTS(model), num_samples={nuts_samples}, disable_progbar=True)
mcmc.run(data)
""",
    "HMM": """\
pyro.clear_param_store()
pyro.set_rng_seed(1)
guide = AutoDiagonalNormal(poutine.block(hmm_model, expose=["trans", "emit_scale", "emit_loc"]))
svi = SVI(hmm_model, guide, Adam({{'lr': 0.01}}), TraceEnum_ELBO(max_plate_nesting=1))
for epoch in range({hmm_epochs}):
    for sequence in sequences[:{hmm_sequences}]:
        svi.step(sequence, num_sequences=len(sequences), length=len(sequence))
""",
}

WAYS = ("eager", "compiled", "compare", "compare -q")
PREFIX = {"eager": "", "compiled": "%%pyrojit -q --backend pyro\n",
          "compare": "%%pyrojit --compare --backend pyro\n",
          "compare -q": "%%pyrojit --compare -q --backend pyro\n"}


def run_cell(shell: Any, source: str) -> float:
    from IPython.utils.capture import capture_output

    with capture_output():  # the panel is built and displayed, just not printed here
        start = time.perf_counter()
        result = shell.run_cell(source)
        seconds = time.perf_counter() - start
    if not result.success:
        raise SystemExit(f"a benchmark cell failed:\n{source}\n{result.error_in_exec!r}")
    return seconds


def measure(shell: Any, cells: dict[str, str], rounds: int,
            warmup_rounds: int) -> dict[str, dict[str, list[float]]]:
    times: dict[str, dict[str, list[float]]] = {w: {way: [] for way in WAYS} for w in cells}
    for r in range(warmup_rounds + rounds):
        counted = r >= warmup_rounds
        label = f"round {r - warmup_rounds + 1}" if counted else "warm-up (not counted)"
        parts = []
        for workload, cell in cells.items():
            order = WAYS[r % len(WAYS):] + WAYS[:r % len(WAYS)]
            for way in order:
                seconds = run_cell(shell, PREFIX[way] + cell)
                if counted:
                    times[workload][way].append(seconds)
                parts.append(f"{workload}/{way} {seconds:.3f}s")
        print(f"{label:>22}: " + ", ".join(parts), flush=True)
    return times


def report_lines(times: dict[str, dict[str, list[float]]]) -> list[str]:
    lines = ["each column: median  min  max over the rounds (seconds)",
             f"{'workload':<12}" + "".join(f" {way:>22}" for way in WAYS)]
    verdicts = []
    for workload, by_way in times.items():
        cols = "".join(f" {statistics.median(v):7.3f}{min(v):7.3f}{max(v):7.3f}"
                       for v in (by_way[way] for way in WAYS))
        lines.append(f"{workload:<12}{cols}")
        for way in ("compare", "compare -q"):
            ratios = [c / (e + k) for e, k, c in zip(by_way["eager"], by_way["compiled"], by_way[way],
                                                     strict=True)]
            verdicts.append((workload, way, statistics.median(ratios), ratios))
    lines.append("")
    for workload, way, ratio, ratios in verdicts:
        mark = "PASS" if ratio <= TARGET else "MISS"
        per_round = ", ".join(f"{x:.3f}" for x in ratios)
        lines.append(f"{workload}: {way} / (eager + compiled) = {ratio:.4f}   target <= {TARGET}   "
                     f"{mark}   (per round: {per_round})")
    return lines


def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--warmup-rounds", type=int, default=1)
    parser.add_argument("--svi-steps", type=int, default=1000)
    parser.add_argument("--nuts-samples", type=int, default=100)
    parser.add_argument("--hmm-epochs", type=int, default=1)
    parser.add_argument("--hmm-sequences", type=int, default=75, help="sequences per epoch (75: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true",
                        help="tiny counts, 1 round, no warm-up: checks the script runs, measures nothing")
    args = parser.parse_args(argv)
    if args.quick:
        args.rounds, args.warmup_rounds = 1, 0
        args.svi_steps, args.nuts_samples, args.hmm_epochs, args.hmm_sequences = 5, 5, 1, 3

    import torch

    torch.set_num_threads(args.threads)
    shell = shell or process_shell()
    shell.run_cell("%load_ext pyro_jitmagic")
    setup = shell.run_cell(SETUP_CELL)
    if not setup.success:
        raise SystemExit("the setup cell failed")
    cells = {name: cell.format(svi_steps=args.svi_steps, nuts_samples=args.nuts_samples,
                               hmm_epochs=args.hmm_epochs, hmm_sequences=args.hmm_sequences)
             for name, cell in WORKLOADS.items()}

    for line in machine_lines(args.threads):
        print(line)
    print(f"workloads: simple SVI {args.svi_steps} steps; NUTS {args.nuts_samples} samples "
          f"(+ as many warm-up); HMM {args.hmm_epochs} epoch(s) over {args.hmm_sequences} sequences "
          "of lengths 24/48/72")
    print(f"method:   one process, one IPython shell; {args.rounds} rounds after {args.warmup_rounds} "
          "warm-up round(s), order rotated; each cell starts from a cleared param store")
    print(f"load average before: {load_average()}")
    times = measure(shell, cells, args.rounds, args.warmup_rounds)
    print(f"load average after:  {load_average()}")
    print()
    for line in report_lines(times):
        print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main())
