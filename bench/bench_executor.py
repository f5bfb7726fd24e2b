"""How TorchScript's executor settings change what compiling the tutorial's workloads costs and gains.

Pyro's JIT hands its traces to TorchScript's graph executor. How that executor
runs them is a process-wide setting, and no single setting wins everywhere;
this script measures each of them on each of the tutorial's three workloads,
with Pyro's own JIT as the tutorial writes it (``JitTrace_ELBO``,
``JitTraceEnum_ELBO``, ``NUTS(jit_compile=True)``), so the figures are torch's
and not this package's:

* ``default``: the profiling executor, optimising (torch's default);
* ``no-opt``: ``torch.jit.optimized_execution(False)``: the trace runs as
  recorded, with no profiling runs and no optimisation passes;
* ``legacy``: the executor before the profiling one
  (``torch._C._jit_set_profiling_executor(False)``, ``_jit_set_profiling_mode(False)``);
* ``profiled-0``: the profiling executor optimising on the first call, with no
  profiling run (``torch._C._jit_set_num_profiled_runs(0)``);
* ``no-fuser``: the default with the tensor-expression fuser off.

Each (workload, setting) runs in a fresh process: the legacy executor is chosen
when a trace first runs and the settings are process-wide. Each process runs
the workload eager first (paying torch's start-up and giving an eager figure
from the same process), then compiled under the setting. Figures:

* simple SVI, 1000 steps: the compiling step plus the 20 after it, and the
  median steady step (steps 100 on);
* NUTS, 100 warm-up + 100 samples: the whole run (it compiles every run);
* HMM, 3 epochs over 75 sequences of lengths 24/48/72: each epoch.

``--switching`` measures instead whether the optimize flag can be changed per
call of one trace: the simple SVI's steady step with the flag always on,
always off, and alternating step by step (medians per flag value). Once the
optimizing executor has built a trace's optimised plan, torch runs that plan
whatever the flag says, so alternating runs at the optimised speed in both
halves: going back to no-opt means compiling the trace again.

Usage::

    python bench/bench_executor.py               # 2 repetitions of everything
    python bench/bench_executor.py --quick       # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_svi import load_average, machine_lines

SETTINGS = ("default", "no-opt", "legacy", "profiled-0", "no-fuser")
WORKLOADS = ("simple SVI", "NUTS", "HMM")


def apply_setting(setting: str) -> None:
    import torch

    if setting == "no-opt":
        torch._C._set_graph_executor_optimize(False)
    elif setting == "legacy":
        torch._C._jit_set_profiling_executor(False)
        torch._C._jit_set_profiling_mode(False)
    elif setting == "profiled-0":
        torch._C._jit_set_num_profiled_runs(0)
    elif setting == "no-fuser":
        torch._C._jit_set_texpr_fuser_enabled(False)
    elif setting != "default":
        raise SystemExit(f"unknown setting {setting!r}")


def _workloads() -> dict[str, Any]:
    """The tutorial's models and data, set up exactly as the other benchmarks' cells do."""
    from bench_compare import SETUP_CELL

    namespace: dict[str, Any] = {}
    exec(SETUP_CELL, namespace)
    return namespace


def child(workload: str, setting: str, scale: float) -> dict[str, Any]:
    """Run one workload eager, then compiled under one setting; the figures as a dict."""
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer import SVI, JitTrace_ELBO, JitTraceEnum_ELBO, Trace_ELBO, TraceEnum_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from pyro.infer.mcmc import MCMC, NUTS
    from pyro.optim import Adam

    torch.set_num_threads(1)
    clock = time.perf_counter

    tutorial = _workloads()
    model, data = tutorial["model"], tutorial["data"]
    if workload == "simple SVI":
        steps = max(int(1000 * scale), 30)

        def svi_steps(elbo: Any) -> list[float]:
            pyro.clear_param_store()
            pyro.set_rng_seed(1)
            guide = AutoDiagonalNormal(model)
            guide(data)
            svi = SVI(model, guide, Adam({"lr": 0.01}), elbo)
            times = []
            for _ in range(steps):
                start = clock()
                svi.step(data)
                times.append(clock() - start)
            return times

        eager = svi_steps(Trace_ELBO())
        apply_setting(setting)
        compiled = svi_steps(JitTrace_ELBO())
        steady = statistics.median(compiled[min(100, steps // 2):])
        return {"eager step": statistics.median(eager[min(100, steps // 2):]),
                "steady step": steady,
                "compile": sum(compiled[:21]) - 21 * steady,
                "total": sum(compiled)}

    if workload == "NUTS":
        samples = max(int(100 * scale), 5)

        def nuts(jit: bool) -> float:
            pyro.set_rng_seed(1)
            start = clock()
            MCMC(NUTS(model, jit_compile=jit, ignore_jit_warnings=True), num_samples=samples,
                 warmup_steps=samples, disable_progbar=True).run(data)
            return clock() - start

        eager = nuts(False)
        apply_setting(setting)
        return {"eager run": eager, "run": nuts(True)}

    hmm_model, sequences = tutorial["hmm_model"], tutorial["sequences"]
    epochs = 3
    sequences = sequences if scale >= 1 else sequences[:: max(int(1 / scale), 1)]

    def hmm_epochs(elbo: Any, n: int) -> list[float]:
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        guide = AutoDiagonalNormal(poutine.block(hmm_model, expose=["trans", "emit_scale", "emit_loc"]))
        svi = SVI(hmm_model, guide, Adam({"lr": 0.01}), elbo)
        times = []
        for _ in range(n):
            start = clock()
            for sequence in sequences:
                svi.step(sequence, num_sequences=len(sequences), length=len(sequence))
            times.append(clock() - start)
        return times

    eager = hmm_epochs(TraceEnum_ELBO(max_plate_nesting=1), 1)
    apply_setting(setting)
    compiled = hmm_epochs(JitTraceEnum_ELBO(max_plate_nesting=1, ignore_jit_warnings=True), epochs)
    return {"eager epoch": eager[0], **{f"epoch {i + 1}": t for i, t in enumerate(compiled)}}


def _time(seconds: float) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds < 0.1 else f"{seconds:.3f} s"


def switching(steps: int) -> dict[str, dict[bool, float]]:
    """The simple SVI's median steady step per flag value: always on, always off, alternating."""
    import pyro
    import torch
    from pyro.infer import SVI, JitTrace_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from pyro.optim import Adam

    torch.set_num_threads(1)
    tutorial = _workloads()
    model, data = tutorial["model"], tutorial["data"]
    set_optimize = torch._C._set_graph_executor_optimize
    out = {}
    for mode in ("optimizing", "no-opt", "alternating"):
        pyro.clear_param_store()
        pyro.set_rng_seed(1)
        guide = AutoDiagonalNormal(model)
        guide(data)
        svi = SVI(model, guide, Adam({"lr": 0.01}), JitTrace_ELBO(ignore_jit_warnings=True))
        times: dict[bool, list[float]] = {True: [], False: []}
        for i in range(steps):
            flag = {"optimizing": True, "no-opt": False}.get(mode, i % 2 == 0)
            set_optimize(flag)
            start = time.perf_counter()
            svi.step(data)
            times[flag].append(time.perf_counter() - start)
        set_optimize(True)
        out[mode] = {flag: statistics.median(t[steps // 10:]) for flag, t in times.items() if t}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--workloads", nargs="*", default=list(WORKLOADS))
    parser.add_argument("--settings", nargs="*", default=list(SETTINGS))
    parser.add_argument("--quick", action="store_true", help="tiny counts, 1 repetition: checks the script")
    parser.add_argument("--switching", action="store_true",
                        help="whether the optimize flag can be switched per call of a trace (see above)")
    parser.add_argument("--child", nargs=2, metavar=("WORKLOAD", "SETTING"), help=argparse.SUPPRESS)
    parser.add_argument("--scale", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(*args.child, args.scale)))
        return 0
    scale = 0.05 if args.quick else 1.0
    repeats = 1 if args.quick else args.repeats
    if args.switching:
        for line in machine_lines(1):
            print(line)
        for r in range(repeats):
            for mode, by_flag in switching(int(3000 * scale) or 100).items():
                shown = ", ".join(f"flag {'on' if flag else 'off'}: {_time(t)}"
                                  for flag, t in by_flag.items())
                print(f"repeat {r + 1}: {mode:<12} median step {shown}", flush=True)
        return 0

    for line in machine_lines(1):
        print(line)
    print(f"load average before: {load_average()}")
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for r in range(repeats):
        for workload in args.workloads:
            for setting in args.settings:
                out = subprocess.run([sys.executable, __file__, "--child", workload, setting,
                                      "--scale", str(scale)], capture_output=True, text=True, check=False)
                if out.returncode:
                    raise SystemExit(f"{workload} / {setting} failed:\n{out.stderr[-3000:]}")
                figures = json.loads(out.stdout.strip().splitlines()[-1])
                results.setdefault((workload, setting), []).append(figures)
                shown = ", ".join(f"{k} {_time(v)}" for k, v in figures.items())
                print(f"repeat {r + 1}: {workload:<10} {setting:<10} {shown}", flush=True)
    print(f"load average after:  {load_average()}")
    print()
    print(f"median over {repeats} repetition(s)")
    for (workload, setting), runs in results.items():
        keys = runs[0].keys()
        shown = ", ".join(f"{k} {_time(statistics.median(r[k] for r in runs))}" for k in keys)
        print(f"{workload:<10} {setting:<10} {shown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
