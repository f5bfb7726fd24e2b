"""Eager, Pyro's JIT and the whole-step backends (``step``, ``inductor`` cold and warm), side by side.

Workloads, from the Pyro JIT tutorial (``tests/models.py`` and ``bench/bench_compare.py`` set
them up the same way):

* simple SVI: the tutorial's Gaussian model, ``AutoDiagonalNormal``, ``Adam({'lr': 0.01})``,
  100 data points, ``svi.step(data)`` 1,000 and 10,000 times;
* HMM: the tutorial's HMM (16 states, ``TraceEnum_ELBO(max_plate_nesting=1)``), one epoch
  over its 50 sequences of length 24 (one compiled step: one key), repeated ``--hmm-epochs``;
* NUTS: the tutorial's model, and eight schools, ``--nuts-samples`` samples after as many
  warm-up steps.

Ways:

* eager: as written;
* pyro: Pyro's JIT as the tutorial writes it (``JitTrace_ELBO`` after ``guide(data)``,
  ``JitTraceEnum_ELBO``, ``NUTS(jit_compile=True, ignore_jit_warnings=True)``);
* step: the SVI steps inside ``pyro_jitmagic.compiled(backend="step")``, as a cell with
  ``%%pyrojit --backend step`` runs them: the first step eager (it creates the optimizer's
  state), then the whole step captured and run by TorchScript; for NUTS the potential and its
  gradient captured after the kernel's setup and installed as the magic installs it (the
  time per gradient is measured around ``potential_grad``, which the magic's route replaces);
* inductor cold: the same, compiled by inductor with an empty on-disk cache, in a fresh
  process (inductor also keeps compiled kernels in memory, so a cold compile in a process
  that compiled the same graph before would not be cold);
* inductor warm: the same in this process, served from the on-disk cache that the cold
  run filled. For NUTS, inductor compiles the trajectory (each leapfrog step with the tree's
  bookkeeping, the potential inlined: ``wholestep/trajectory.py``) and the potential runs on
  TorchScript for the set-up and step-size search; "step" is then the whole run's time per
  gradient after compiling, the trajectory's Python included;
* %%pyrojit, %%pyrojit --backend inductor (NUTS only): the run inside
  ``pyro_jitmagic.compiled()`` as a cell runs it, plain (the climb) or with inductor, in this
  process (inductor's disk cache warm after the first round): whole runs, set-up included;
* %%pyrojit again (NUTS only): the plain cell run a second time on the same model and data
  objects, the first run untimed, as a notebook runs a cell again: it runs on the graphs the
  first run captured (``wholestep/reuse.py``);
* %%pyrojit, new process (NUTS only): the plain cell in a fresh process on the warm disk caches
  (after torch's one-off start-up, as every way pays it before its first round), as after a
  kernel restart: its set-up (the potential captured and built, the trajectory captured) is
  printed in Pyro-JIT iterations, which must be at most :data:`SETUP_BUDGET`; its whole run is
  compared with *pyro, new process*, Pyro's JIT in a fresh process alike, and held to
  :data:`NEW_PROCESS_PROMISE` of its time;
* bare graph (simple SVI only): inductor warm's compiled graph alone, after its run, called as
  many times as the run had steps in a tight loop, on the inputs its step bound last (the same
  callable, called as the step calls it); the step less it is the work around the graph (binding
  the live tensors, the guards, the write-back, the run's bookkeeping), which must be at most 5 us;
* inductor unguarded (simple SVI only): inductor warm with the guards, the call-site check and
  the sentinel made no-ops, so that what they cost a step is the difference of the two medians
  (they must cost at most 5 us a step);
* numpyro update, numpyro run, numpyro: NumPyro's jitted ``svi.update`` loop, its ``svi.run``
  and its NUTS on the same models and data, where NumPyro is installed (``pip install -e
  ".[bench]"``; see ``bench/numpyro_ways.py``).

Rounds are interleaved: each round runs every way once, in an order rotated from round to
round, so drift in the machine's speed falls on all alike; figures are medians over rounds.
"step" is the median step time over the run's steps after the first (for NUTS: the time per
potential-and-gradient evaluation, measured around ``potential_grad``); "total" is the whole
run, compiling included. Ratios are against Pyro's JIT, in one run.

Usage::

    python bench/bench_backends.py                      # everything, 3 rounds (slow: hours on 2 cores)
    python bench/bench_backends.py --only svi --rounds 5
    python bench/bench_backends.py --quick              # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpyro_ways  # a sibling script, found through the path above

#: ways of NUTS workloads only: whole runs as a cell runs them
MAGIC_WAYS = ("%%pyrojit", "%%pyrojit --backend inductor", "%%pyrojit again", "%%pyrojit, new process")
#: ways run in a fresh process on this process's caches (NUTS only), and the way each runs there
NEW_PROCESS_WAYS = {"pyro, new process": "pyro", "%%pyrojit, new process": "%%pyrojit, new process"}
WAYS = ("eager", "pyro", "step", "inductor cold", "inductor warm", "inductor unguarded", *MAGIC_WAYS,
        "pyro, new process", *numpyro_ways.WAYS)
#: What guards and the sentinel may cost a step of the simple SVI on inductor's kernels, and what
#: share of a run the sentinel's checks may take.
GUARD_BUDGET = 5e-6
#: What the work around the compiled graph may cost a step of the simple SVI (inductor warm's step
#: less its bare graph call).
AROUND_BUDGET = 5e-6
SENTINEL_BUDGET = 0.03
#: What a NUTS run's set-up may cost in a fresh process on warm caches, in iterations of Pyro's JIT
#: ("a few"): what the potential's capture and build and the trajectory's capture took.
SETUP_BUDGET = 5
#: A cell run right after a kernel restart may take at most this many times Pyro's JIT's time in a
#: new process: plain %%pyrojit's promise (the climb never loses much), where torch's one-off imports
#: of its compiler (docs/benchmarks.md, The whole step: a cell in a new process) can eat a short
#: run's saving.
NEW_PROCESS_PROMISE = 1.15
TARGETS = {  # (workload prefix, way, figure, at least)
    "simple SVI": [("inductor warm", "step", 15.0), ("step", "step", 2.0)],
    "HMM": [("inductor warm", "step", 15.0), ("step", "step", 3.0)],
    # whole runs, warm (a gradient is no longer timed alone: the trajectory inlines it)
    "NUTS tutorial": [(way, "total", 3.0) for way in ("inductor warm", *MAGIC_WAYS)],
    "NUTS eight schools": [(way, "total", 5.0) for way in ("inductor warm", *MAGIC_WAYS)],
}
#: Against NumPyro: (workload prefix, NumPyro's way, at least): how many times NumPyro's time a
#: step of inductor warm is (SVI), or its whole run's time per gradient (NUTS); 1/3: within 3x.
NUMPYRO_TARGETS = {"simple SVI": ("numpyro update", 3.0), "NUTS": ("numpyro", 1 / 3)}


@dataclass
class Run:
    """One way's run of one workload."""

    total: float                  # seconds, compiling included
    step: float                   # median seconds per step (NUTS: per potential and gradient)
    compile: float = 0.0          # capture + codegen (Pyro's JIT: its trace steps' excess)
    evals: int = 0                # NUTS: potential evaluations
    note: str = ""                # graph nodes, kernels, cache, fallback
    sentinel: float = 0.0         # seconds its checks of compiled calls against eager cost
    steps: int = 0                # steps (SVI) it ran
    bare: float = 0.0             # median seconds of its compiled graph's call alone (inductor)
    setup: float = 0.0            # NUTS from a cell: seconds its compiled potential and trajectory took


@dataclass
class Table:
    runs: dict[str, dict[str, list[Run]]] = field(default_factory=dict)

    def add(self, workload: str, way: str, run: Run) -> None:
        self.runs.setdefault(workload, {}).setdefault(way, []).append(run)


# -- workloads ------------------------------------------------------------------------------------

def simple_model(data: Any) -> None:
    import pyro
    import pyro.distributions as dist

    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 3.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def hmm_model(sequence: Any, num_sequences: int, length: int, state_dim: int = 16) -> None:
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro import poutine

    with pyro.plate("states", state_dim):
        trans = pyro.sample("trans", dist.Dirichlet(0.5 * torch.ones(state_dim)))
        emit_loc = pyro.sample("emit_loc", dist.Normal(0.0, 10.0))
    emit_scale = pyro.sample("emit_scale", dist.LogNormal(0.0, 3.0))
    with poutine.scale(scale=num_sequences):
        x = 0
        for t in pyro.markov(range(length)):
            x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]), infer={"enumerate": "parallel"})
            pyro.sample(f"y_{t}", dist.Normal(emit_loc[x], emit_scale), obs=sequence[t])


def eight_schools(sigma: Any, y: Any) -> None:
    import pyro
    import pyro.distributions as dist

    mu = pyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = pyro.sample("tau", dist.HalfCauchy(5.0))
    with pyro.plate("J", 8):
        theta = pyro.sample("theta", dist.Normal(mu, tau))
        pyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def simple_data() -> Any:
    import pyro
    import pyro.distributions as dist

    pyro.set_rng_seed(0)
    return dist.Normal(0.5, 2.0).sample((100,))


def svi_steps(workload: str, sizes: dict[str, int]) -> tuple[Callable[..., Any], Any, list[tuple[Any, Any]]]:
    """(model, guide factory, [(args, kwargs) of each step]) for an SVI workload."""
    import torch
    from pyro import poutine
    from pyro.infer.autoguide import AutoDiagonalNormal

    if workload.startswith("simple SVI"):
        data = simple_data()
        steps = [((data,), {})] * sizes[workload]
        return simple_model, lambda: AutoDiagonalNormal(simple_model), steps
    generator = torch.Generator().manual_seed(0)
    sequences = [torch.randn(24, generator=generator) for _ in range(sizes["HMM sequences"])]
    steps = [((s,), {"num_sequences": 75, "length": 24}) for s in sequences] * sizes["HMM epochs"]
    guide = lambda: AutoDiagonalNormal(  # noqa: E731
        poutine.block(hmm_model, expose=["trans", "emit_scale", "emit_loc"]))
    return hmm_model, guide, steps


def nuts_workload(workload: str) -> tuple[Callable[..., Any], tuple[Any, ...]]:
    """(model, args) of a NUTS workload."""
    import torch

    if workload.endswith("eight schools"):
        return eight_schools, (torch.tensor([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0]),
                               torch.tensor([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0]))
    return simple_model, (simple_data(),)


def run_numpyro(workload: str, way: str, sizes: dict[str, int]) -> Run:
    import gc

    gc.collect()
    args = nuts_workload(workload)[1] if workload.startswith("NUTS") else (simple_data(),)
    return Run(**numpyro_ways.run(workload, way, sizes, args))


def describe(compiled: Any) -> str:
    """Graph nodes, kernels, inductor's cache, and any fallback of a compiled step or potential."""
    return (f"{compiled.graph_nodes} nodes" + (f", {compiled.kernels} kernels" if compiled.kernels else "")
            + (f", cache {compiled.cache}" if compiled.cache else "")
            + (f", fell back: {compiled.fallback}" if compiled.fallback else ""))


def run_svi(workload: str, way: str, sizes: dict[str, int]) -> Run:
    import pyro
    import pyro.infer
    from pyro.optim import Adam

    import pyro_jitmagic
    import pyro_jitmagic.run.process

    model, make_guide, steps = svi_steps(workload, sizes)
    enum = not workload.startswith("simple SVI")
    name = ("Jit" if way == "pyro" else "") + ("TraceEnum_ELBO" if enum else "Trace_ELBO")
    options = {"max_plate_nesting": 1} if enum else {}
    if way == "pyro":
        options["ignore_jit_warnings"] = True
    pyro.clear_param_store()
    pyro.set_rng_seed(1)
    start = time.perf_counter()
    guide = make_guide()
    if way == "pyro":  # the tutorial's warm-up before compiling
        args, kwargs = steps[0]
        guide(*args, **kwargs)
    svi = pyro.infer.SVI(model, guide, Adam({"lr": 0.01}), getattr(pyro.infer, name)(**options))
    times = []
    whole = way not in ("eager", "pyro")
    # the whole-step ways run as users run them: the steps inside pyro_jitmagic.compiled()
    run = pyro_jitmagic.compiled(backend=way.split()[0], names={}) if whole else contextlib.nullcontext()
    with run, (unguarded() if way == "inductor unguarded" else contextlib.nullcontext()):
        for i, (args, kwargs) in enumerate(steps):
            t = time.perf_counter()
            svi.step(*args, **kwargs)
            if whole and i == 1:
                # in a cell inductor's codegen runs in the background while the steps run on
                # TorchScript; here its wait is billed to this step, so that the steady step
                # time is inductor's and the total still pays the whole compile
                for entry in pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values():
                    entry.compiled.wait()
            times.append(time.perf_counter() - t)
    total = time.perf_counter() - start
    compile_seconds = bare = 0.0
    note = ""
    sentinel = run.report.sentinel_seconds if whole else 0.0
    if whole:
        (entry,) = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values()
        compiled = entry.compiled
        compile_seconds, note = entry.compile_seconds, describe(compiled)
        if compiled.eager_steps:
            note += f", {compiled.eager_steps} steps ran eagerly"
        if way == "inductor" and compiled.backend == "inductor" and workload.startswith("simple SVI"):
            bare = bare_graph(compiled, len(times))
    elif way == "pyro":  # its first step traces
        compile_seconds = times[0] - statistics.median(times[1:])
    return Run(total=total, step=statistics.median(times[1:]), compile=compile_seconds, note=note,
               sentinel=sentinel, steps=len(times), bare=bare)


def bare_graph(compiled: Any, calls: int) -> float:
    """The median time of the compiled step's graph called alone, ``calls`` times in a loop."""
    import torch

    from pyro_jitmagic.wholestep.step import bare_call

    call = bare_call(compiled)
    times = []
    with torch.no_grad():
        for _ in range(calls):
            t = time.perf_counter()
            call()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


@contextlib.contextmanager
def unguarded() -> Any:
    """Guards that always hold, no call-site check, no sentinel: what is left is the step without
    them (for ``inductor unguarded``)."""
    from pyro_jitmagic.guards import CallSite, Sentinel, checks
    from pyro_jitmagic.patch import PatchSet

    patches = PatchSet()
    try:
        patches.set(checks, "_generate", lambda guards, constants: checks._always)
        patches.set(checks.Guards, "inline", lambda self, unchanged: "True")  # (the short way's)
        patches.set(CallSite, "problem", lambda self: None)
        patches.set(CallSite, "test", lambda self, bind: "True")
        patches.set(Sentinel, "due", lambda self: False)
        # (no check ever falls due: the short way compares the count with it)
        patches.set(Sentinel, "next_check", property(lambda self: math.inf, lambda self, value: None))
        yield
    finally:
        patches.restore()


def run_nuts(workload: str, way: str, sizes: dict[str, int]) -> Run:
    import pyro
    from pyro.infer.mcmc import MCMC, NUTS

    from pyro_jitmagic.compat import capture as compat
    from pyro_jitmagic.patch import PatchSet
    from pyro_jitmagic.wholestep import compile_potential
    from pyro_jitmagic.wholestep.trajectory import compile_trajectory

    model, args = nuts_workload(workload)
    pyro.set_rng_seed(1)
    jit = way == "pyro"
    kernel = NUTS(model, jit_compile=jit, ignore_jit_warnings=jit)
    patches = PatchSet()
    evals: list[float] = []
    info: dict[str, Any] = {"compile": 0.0, "note": ""}

    def timed(potential_grad: Callable[..., Any]) -> Callable[..., Any]:
        def potential_grad_timed(potential_fn: Any, z: Any) -> Any:
            t = time.perf_counter()
            try:
                return potential_grad(potential_fn, z)
            finally:
                evals.append(time.perf_counter() - t)
        return potential_grad_timed

    def time_potentials() -> None:
        for module in compat.potential_grad_owners():
            patches.set(module, "potential_grad", timed(module.potential_grad))

    setup = kernel.setup

    def compiling_setup(warmup_steps: int, *a: Any, **k: Any) -> Any:
        result = setup(warmup_steps, *a, **k)
        t = time.perf_counter()
        # the potential on TorchScript (set-up and step-size search), the trajectories on inductor
        compiled = compile_potential(kernel, kernel.initial_params, backend="step")
        trajectory = compile_trajectory(kernel, compiled, backend="inductor") if way == "inductor" else None
        info["compile"] = time.perf_counter() - t
        info["note"] = describe(trajectory or compiled)
        info["compiled"], info["trajectory"] = compiled, trajectory
        patches.restore()
        compiled.install(patches, kernel)
        if trajectory is not None:
            trajectory.install(patches)
        time_potentials()
        return result

    if way not in ("eager", "pyro"):
        kernel.setup = compiling_setup  # type: ignore[method-assign]
    time_potentials()
    mcmc = MCMC(kernel, num_samples=sizes["NUTS samples"], warmup_steps=sizes["NUTS samples"],
                disable_progbar=True)
    start = time.perf_counter()
    try:
        mcmc.run(*args)
    finally:
        patches.restore()
    total = time.perf_counter() - start
    trajectory = info.get("trajectory")
    leaves = trajectory.leaves + trajectory.eager_leaves if trajectory is not None else 0
    note = f"{len(evals) + leaves} gradients" + (f", {info['note']}" if info["note"] else "")
    compiled = info.get("compiled")
    if compiled is not None and compiled.eager_calls:
        note += f", {compiled.eager_calls} evaluations ran eagerly"
    # with a compiled trajectory a gradient is a leaf (its leapfrog step inlines the potential):
    # "step" is then the run's time per gradient, the trajectory's Python included
    step = (total - info["compile"]) / (len(evals) + leaves) if leaves else statistics.median(evals)
    return Run(total=total, step=step, compile=info["compile"], evals=len(evals) + leaves, note=note)


def run_magic(workload: str, way: str, sizes: dict[str, int]) -> Run:
    """A NUTS run as a ``%%pyrojit`` cell runs it (``pyro_jitmagic.compiled``): plain (the
    climb), or ``--backend inductor``; in this process, so inductor's disk cache is warm.
    ``%%pyrojit again``: the plain cell's second run on the same model and data."""
    import pyro
    from pyro.infer.mcmc import MCMC, NUTS

    import pyro_jitmagic

    model, args = nuts_workload(workload)
    options = {"backend": "inductor"} if way == "%%pyrojit --backend inductor" else {}

    def cell() -> tuple[float, Any, Any]:
        pyro.set_rng_seed(1)
        mcmc = MCMC(NUTS(model), num_samples=sizes["NUTS samples"], warmup_steps=sizes["NUTS samples"],
                    disable_progbar=True)
        start = time.perf_counter()
        with pyro_jitmagic.compiled(names={}, **options) as run:
            mcmc.run(*args)
        return time.perf_counter() - start, run.report, mcmc.kernel

    if way == "%%pyrojit again":
        cell()  # the cell's first run, untimed
    total, report, kernel = cell()
    built = [n.split(": ", 1)[1] for n in report.notes if "NUTS trajectories compiled" in n]
    kept = [n.split("nothing captured, ", 1)[1] for n in report.notes if "nothing captured, " in n]
    note = (built[0] if built else "no compiled trajectory") + (f"; {kept[0]}" if kept else "")
    setup = setup_seconds(kernel)
    if way == "%%pyrojit, new process":
        note += "; set-up: " + ", ".join(f"{what} {seconds * 1e3:.0f} ms" for what, seconds in setup.items())
    return Run(total=total, step=float("nan"), note=note, setup=sum(setup.values()),
               steps=2 * sizes["NUTS samples"])


def setup_seconds(kernel: Any) -> dict[str, float]:
    """What the run's compiled potential (captured and built) and trajectory (captured) took."""
    from pyro_jitmagic.compilers.step.mcmc import POTENTIAL_KEY, TRAJECTORY_KEY
    from pyro_jitmagic.run.process import PROCESS

    entries = PROCESS.session.whole_steps.of(kernel)
    named = {"potential": POTENTIAL_KEY, "trajectory": TRAJECTORY_KEY}
    return {what: entries[key].compile_seconds for what, key in named.items() if key in entries}


def run_way(workload: str, way: str, sizes: dict[str, int]) -> Run:
    import gc

    gc.collect()  # what earlier runs left is collected now, not during this one's steps
    return (run_nuts if workload.startswith("NUTS") else run_svi)(workload, way, sizes)


# -- cold inductor in a fresh process --------------------------------------------------------------

def run_cold(workload: str, sizes: dict[str, int], cache_dir: str) -> Run:
    """``inductor cold``: a fresh process, an empty inductor cache in ``cache_dir``."""
    env = dict(os.environ, TORCHINDUCTOR_CACHE_DIR=cache_dir)
    return _in_child(workload, sizes, "inductor", env, f"the cold run of {workload}")


def run_fresh(workload: str, sizes: dict[str, int], way: str) -> Run:
    """One of :data:`NEW_PROCESS_WAYS` in a fresh process, on this process's caches."""
    return _in_child(workload, sizes, NEW_PROCESS_WAYS[way], dict(os.environ),
                     f"the new-process run of {workload}")


def _in_child(workload: str, sizes: dict[str, int], way: str, env: dict[str, str], what: str) -> Run:
    """``way``'s run of ``workload`` in a child process (:func:`child`), read back from its output."""
    command = [sys.executable, __file__, "--child", workload, "--sizes", json.dumps(sizes), "--way", way]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if out.returncode != 0 or not lines:
        raise RuntimeError(f"{what} failed:\n{out.stderr[-3000:]}")
    return Run(**json.loads(lines[-1]))


def child(workload: str, sizes: dict[str, int], way: str = "inductor") -> int:
    import torch

    torch.set_num_threads(1)
    # torch's one-off start-up in a fresh process, paid before the timed run (as every other
    # way pays it before its first round)
    small = dict(sizes, **{"simple SVI 1,000 steps": 2, "HMM epochs": 1, "HMM sequences": 2,
                           "NUTS samples": 2})
    run_way(workload, "eager", small)
    run = run_magic(workload, way, sizes) if way in MAGIC_WAYS else run_way(workload, way, sizes)
    print(json.dumps(asdict(run)))
    return 0


# -- the table -----------------------------------------------------------------------------------

def _median(runs: list[Run], attribute: str) -> float:
    return statistics.median(getattr(r, attribute) for r in runs)


def _duration(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} us"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.2f} s"


def table_lines(table: Table) -> list[str]:
    lines = [f"{'workload':<24} {'way':<28} {'step':>10} {'total':>10} {'compile':>10} "
             f"{'step vs pyro':>12} {'total vs pyro':>13}  notes"]
    for workload, ways in table.runs.items():
        pyro = ways.get("pyro")
        for way in WAYS:
            runs = ways.get(way)
            if not runs:
                continue
            step, total = _median(runs, "step"), _median(runs, "total")
            ratio_step = f"{_median(pyro, 'step') / step:.1f}x" if pyro and step == step else "-"
            ratio_total = f"{_median(pyro, 'total') / total:.2f}x" if pyro else "-"
            compile_seconds = _median(runs, "compile")
            shown = _duration(step) if step == step else "-"  # (a cell's run has no time per step)
            lines.append(f"{workload:<24} {way:<28} {shown:>10} {_duration(total):>10} "
                         f"{_duration(compile_seconds) if compile_seconds else '-':>10} {ratio_step:>12} "
                         f"{ratio_total:>13}  {runs[-1].note}")
            bare = [r for r in runs if r.bare] if way == "inductor warm" else []
            if bare:  # beside the step: its graph's call alone
                ratio_bare = f"{_median(pyro, 'step') / _median(bare, 'bare'):.1f}x" if pyro else "-"
                lines.append(f"{workload:<24} {'bare graph':<28} {_duration(_median(bare, 'bare')):>10} "
                             f"{'-':>10} {'-':>10} {ratio_bare:>12} {'-':>13}  inductor warm's graph alone")
        lines.append("")
    return lines


def guard_lines(table: Table) -> list[str]:
    """What guards and the sentinel cost a step: inductor warm less inductor unguarded, medians."""
    lines = []
    for workload, ways in table.runs.items():
        guarded, bare = ways.get("inductor warm"), ways.get("inductor unguarded")
        if not guarded or not bare:
            continue
        with_them, without = _median(guarded, "step"), _median(bare, "step")
        cost = with_them - without
        verdict = "PASS" if cost <= GUARD_BUDGET else "MISS"
        lines.append(f"{verdict}  {workload}: guards and sentinel cost {cost * 1e6:.1f} us a step on "
                     f"inductor's kernels ({_duration(with_them)} against {_duration(without)} without "
                     f"them; budget {GUARD_BUDGET * 1e6:.0f} us)")
        share = statistics.median(r.sentinel / r.total for r in guarded)
        # (the budget is for a 10,000-step run: a shorter one is checked about as often)
        verdict = "----" if guarded[0].steps < 10_000 else "PASS" if share <= SENTINEL_BUDGET else "MISS"
        lines.append(f"{verdict}  {workload}: the sentinel's checks took {share:.1%} of the inductor warm "
                     f"run ({_duration(_median(guarded, 'sentinel'))}; budget {SENTINEL_BUDGET:.0%})")
    return lines


def around_lines(table: Table) -> list[str]:
    """What the work around the compiled graph costs a step: inductor warm's step less its bare
    graph call, medians over rounds."""
    lines = []
    for workload, ways in table.runs.items():
        warm = [r for r in ways.get("inductor warm", []) if r.bare]
        if not warm:
            continue
        step, bare = _median(warm, "step"), _median(warm, "bare")
        cost = step - bare
        verdict = "PASS" if cost <= AROUND_BUDGET else "MISS"
        lines.append(f"{verdict}  {workload}: the step around the graph costs {cost * 1e6:.1f} us (step "
                     f"{_duration(step)}, bare graph {_duration(bare)}; budget {AROUND_BUDGET * 1e6:.0f} us)")
    return lines


def setup_lines(table: Table) -> list[str]:
    """A NUTS run's set-up in a fresh process on warm caches, in iterations of Pyro's JIT's run."""
    lines = []
    for workload, ways in table.runs.items():
        fresh, pyro = ways.get("%%pyrojit, new process"), ways.get("pyro")
        if not fresh or not pyro:
            continue
        iteration = _median(pyro, "total") / fresh[0].steps
        setup = _median(fresh, "setup")
        if setup == 0:
            lines.append(f"-     {workload}: %%pyrojit in a new process captured nothing (the run stayed on "
                         "Pyro's JIT): no set-up to judge")
            continue
        verdict = "PASS" if setup <= SETUP_BUDGET * iteration else "MISS"
        lines.append(f"{verdict}  {workload}: %%pyrojit in a new process, set-up {_duration(setup)}: "
                     f"{setup / iteration:.1f} iterations of Pyro's JIT ({_duration(iteration)} each; "
                     f"budget {SETUP_BUDGET})")
    return lines


def numpyro_lines(table: Table) -> list[str]:
    """inductor warm against NumPyro: a step (SVI), the whole run's time per gradient (NUTS)."""
    lines = []
    for workload, ways in table.runs.items():
        for prefix, (way, least) in NUMPYRO_TARGETS.items():
            ours, theirs = ways.get("inductor warm"), ways.get(way)
            if not workload.startswith(prefix) or not ours or not theirs:
                continue
            if prefix == "NUTS":
                mine = statistics.median(r.total / r.evals for r in ours)
                what = "the whole run's time per gradient"
            else:
                mine, what = _median(ours, "step"), "per step"
            ratio = _median(theirs, "step") / mine
            verdict = "PASS" if ratio >= least else "MISS"
            target = f">= {least:g}x" if least >= 1 else f"within {1 / least:g}x"
            lines.append(f"{verdict}  {workload}: inductor warm, {what}, {_duration(mine)} against {way}'s "
                         f"{_duration(_median(theirs, 'step'))}: {ratio:.2f}x (target {target})")
    return lines


def target_lines(table: Table) -> list[str]:
    lines = []
    for workload, ways in table.runs.items():
        pyro = ways.get("pyro")
        for prefix, targets in TARGETS.items():
            if not workload.startswith(prefix) or not pyro:
                continue
            for way, figure, least in targets:
                runs = ways.get(way)
                if not runs:
                    continue
                # (a run in a new process against Pyro's JIT in one, where it ran)
                baseline = ways.get("pyro, new process", pyro) if way == "%%pyrojit, new process" else pyro
                ratio = _median(baseline, figure) / _median(runs, figure)
                what = "per step" if figure == "step" else "whole run"
                if workload.startswith("NUTS") and figure == "step":
                    what = "per gradient"
                verdict = "PASS" if ratio >= least else "MISS"
                label = way if way in MAGIC_WAYS else f"{way} backend"
                against = "Pyro's JIT in a new process" if baseline is not pyro else "Pyro's JIT"
                lines.append(f"{verdict}  {workload}: {label}, {what}, {ratio:.2f}x faster than "
                             f"{against} (target >= {least:g}x)")
        fresh, pyro_fresh = ways.get("%%pyrojit, new process"), ways.get("pyro, new process")
        if fresh and pyro_fresh:
            times = _median(fresh, "total") / _median(pyro_fresh, "total")
            verdict = "PASS" if times <= NEW_PROCESS_PROMISE else "MISS"
            lines.append(f"{verdict}  {workload}: %%pyrojit, new process, whole run, {times:.2f}x the time "
                         f"of Pyro's JIT in a new process (promise <= {NEW_PROCESS_PROMISE}x)")
    return lines


def main(argv: Sequence[str] | None = None, shell: Any = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", choices=("svi", "hmm", "nuts"), action="append")
    parser.add_argument("--svi-long", type=int, default=10_000, help="steps of the long simple SVI run")
    parser.add_argument("--hmm-epochs", type=int, default=2)
    parser.add_argument("--nuts-samples", type=int, default=300)
    parser.add_argument("--quick", action="store_true", help="tiny counts, no inductor: a smoke test")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--way", default="inductor", help=argparse.SUPPRESS)
    parser.add_argument("--sizes", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)
    if options.child:
        return child(options.child, json.loads(options.sizes), options.way)

    import torch
    from bench_svi import load_average, machine_lines

    torch.set_num_threads(1)
    sizes = {"simple SVI 1,000 steps": 1000, f"simple SVI {options.svi_long:,} steps": options.svi_long,
             "HMM epochs": options.hmm_epochs, "HMM sequences": 50, "NUTS samples": options.nuts_samples}
    rounds, ways = options.rounds, list(WAYS)
    if options.quick:
        sizes = {"simple SVI 1,000 steps": 20, "simple SVI 40 steps": 40, "HMM epochs": 1,
                 "HMM sequences": 3, "NUTS samples": 5}
        rounds, ways = 1, ["eager", "pyro", "step"]
    workloads = [w for w in sizes if w.startswith("simple SVI")] + ["HMM", "NUTS tutorial model",
                                                                     "NUTS eight schools"]
    only = options.only or ["svi", "hmm", "nuts"]
    kind = {"simple": "svi", "HMM": "hmm", "NUTS": "nuts"}
    workloads = [w for w in workloads if kind[w.split(" ")[0]] in only]
    print("\n".join(machine_lines(1)))
    import pyro_jitmagic.wholestep as wholestep

    print(f"C++ compiler for inductor: {wholestep.cxx_compiler() or 'none'}")
    numpyro = numpyro_ways.available()
    print(f"NumPyro: {numpyro or 'not installed (its ways are left out)'}")
    if numpyro:
        ways += list(numpyro_ways.WAYS) if options.quick else []
    else:
        ways = [w for w in ways if w not in numpyro_ways.WAYS]
    print(f"{rounds} rounds, interleaved; figures are medians over rounds")
    table = Table()
    warm_cache = tempfile.mkdtemp(prefix="pyrojit-bench-inductor-")
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = warm_cache
    try:
        for workload in workloads:
            started = time.perf_counter()
            for r in range(rounds):
                order = ways[r % len(ways):] + ways[:r % len(ways)]
                for way in order:
                    if way == "inductor cold":
                        # round 0 fills the cache the warm runs read; later rounds start empty
                        cache = warm_cache if r == 0 else tempfile.mkdtemp(prefix="pyrojit-bench-cold-")
                        table.add(workload, way, run_cold(workload, sizes, cache))
                        if cache != warm_cache:
                            shutil.rmtree(cache, ignore_errors=True)
                    elif way == "inductor warm":
                        table.add(workload, way, run_way(workload, "inductor", sizes))
                    elif way == "inductor unguarded":
                        if workload.startswith("simple SVI"):
                            table.add(workload, way, run_way(workload, way, sizes))
                    elif way in NEW_PROCESS_WAYS:
                        if workload.startswith("NUTS"):
                            table.add(workload, way, run_fresh(workload, sizes, way))
                    elif way in MAGIC_WAYS:
                        if workload.startswith("NUTS"):
                            table.add(workload, way, run_magic(workload, way, sizes))
                    elif way in numpyro_ways.WAYS:
                        if numpyro_ways.applies(workload, way):
                            table.add(workload, way, run_numpyro(workload, way, sizes))
                    else:
                        table.add(workload, way, run_way(workload, way, sizes))
            print(f"({workload}: {rounds} rounds in {time.perf_counter() - started:.0f} s, load "
                  f"{load_average()})", flush=True)
    finally:
        shutil.rmtree(warm_cache, ignore_errors=True)
    print()
    print("\n".join(table_lines(table)))
    print("\n".join(target_lines(table)))
    print("\n".join(numpyro_lines(table)))
    print("\n".join(guard_lines(table)))
    print("\n".join(around_lines(table)))
    print("\n".join(setup_lines(table)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
