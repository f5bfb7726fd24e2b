"""HMC/NUTS under the whole-step compiler: the potential and its gradient as one compiled graph.

Pyro's JIT traces the potential only, and its gradient runs op by op through autograd on every
leapfrog step. Here, once the kernel's ``setup`` has built the run's potential, the potential and
its gradient are captured together, and HMC/NUTS take both from the graph. The potential closes
over the run's data, so a run captures its own graph, unless an earlier run of the same model on
the same data left one whose guards hold (:func:`potential_compiled`, :mod:`...wholestep.reuse`).
A potential the capture cannot write runs on Pyro's JIT, with the reason.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from ...compat import jit as compat
from ...compat.capture import load_compiler_stack
from ...run import torchcheck
from ...run.route import MCMCRoute
from ...run.session import WholeStepEntry
from ..pyro import PyroJit
from ..pyro.mcmc import potential_maker

if TYPE_CHECKING:
    from ...patch import PatchSet
    from ...run.context import RunContext
    from ...run.mcmc_clock import MCMCClock

POTENTIAL_KEY = "potential and gradient"
TRAJECTORY_KEY = "trajectory: each leapfrog step with the tree's bookkeeping"


class WholeMCMCRoute(MCMCRoute):
    """An ``MCMC.run`` whose potential and gradient run as one compiled graph after setup."""

    @classmethod
    def plan(cls, ctx: RunContext, pyro: PyroJit, backend: str, mcmc: Any, target: str) -> MCMCRoute:
        """The route of this run: the whole potential, or Pyro's JIT where the whole step cannot go."""
        from pyro.infer.mcmc import HMC

        kernel = mcmc.kernel
        if isinstance(kernel, HMC) and compat.runs_chains_in_workers(mcmc):
            why = "chains run in worker processes"
        elif not isinstance(kernel, HMC):
            why = f"{type(kernel).__name__} is not HMC or NUTS"
        else:
            return cls(ctx, pyro, backend, mcmc, target)
        route = pyro.plan_mcmc(mcmc, target)
        route.reason = f"the whole step cannot be compiled ({why}): " + (
            "ran on Pyro's JIT" if route.compiled else f"ran eager ({route.reason})")
        return route

    def __init__(self, ctx: RunContext, pyro: PyroJit, backend: str, mcmc: Any, target: str) -> None:
        kernel = mcmc.kernel
        name = type(kernel).__name__
        super().__init__(before=name, after=f"{name}, potential and gradient compiled whole ({backend})",
                         compiled=True, runner=kernel)
        self.ctx, self.pyro, self.backend, self.kernel, self.target = ctx, pyro, backend, kernel, target
        self.key = id(mcmc)  # what the run's record of switches knows it by
        self.compiled_potential: Any = None
        self.trajectory: Any = None
        self.kept: Any = None  # the graphs kept for a later run (wholestep.reuse.Kept)
        self._patches: PatchSet | None = None
        self._clock: MCMCClock | None = None

    def prepare(self, patches: PatchSet, clock: MCMCClock) -> None:
        self._patches, self._clock = patches, clock
        clock.wrap_potential = self._after_setup

    def _after_setup(self, potential: Any) -> Any:
        """The kernel's setup built ``potential`` and its initial values: compile the two as one."""
        from ...wholestep import CannotCompile

        recorder, kernel = self.ctx.recorder, self.kernel
        recorder.compiling()
        load_stack(self.ctx, self.target)  # (once a process, apart from the capture's cost)
        start = recorder.clock()
        try:
            # inductor's kernels load (warm) or build (cold, in a worker process) in the background
            # while the evaluations run on TorchScript: in a fresh process loading alone takes over a
            # second (inductor's import), as long as a whole 300+300 run of the tutorial's model on
            # TorchScript (docs/benchmarks.md)
            compiled, self.kept = potential_compiled(self.ctx, kernel, kernel.initial_params)
        except CannotCompile as exc:
            return self._fall_back(potential, exc.reason)
        seconds = recorder.clock() - start
        shapes = tuple(str(tuple(v.shape)) for v in kernel.initial_params.values())
        recorder.record_compile(POTENTIAL_KEY, seconds, compiled.capture_seconds, shapes)
        self.compiled_potential = compiled
        recorder.watch_sentinel(compiled.sentinel)
        entries = self.ctx.session.whole_steps.of(kernel)
        entries[POTENTIAL_KEY] = WholeStepEntry(compiled, POTENTIAL_KEY, seconds)
        self._install(compiled)
        if self.backend == "inductor":
            assert self._clock is not None
            self.trajectory = trajectory_started(self.ctx, self.target, kernel, compiled, self._clock,
                                                 kept=self.kept)
            if self.trajectory is None and compiled.backend != "inductor":
                inductor_started(self.ctx, self.target, compiled)
        else:
            self.ctx.recorder.note(f"{self.target}: the trajectories run in Pyro's kernel: --backend step "
                                   "compiles the potential (NUTS's trajectories compile with inductor)")
        reused_said(self.ctx, self.target, compiled, self.trajectory, recorder.clock() - start)
        return potential

    def finish(self, clock: MCMCClock, compile_seconds: float) -> None:
        if self.kept is not None:
            self.kept.ran(self.compiled_potential, self.trajectory)
        entry = self.ctx.session.whole_steps.of(self.kernel).get(POTENTIAL_KEY)
        if entry is not None and entry.compiled is self.compiled_potential and entry.hits:
            entry.last_hit = time.time()
        sentinel_said(self.ctx, self.target, self.compiled_potential)
        inductor_said(self.ctx, self.target, self.trajectory or self.compiled_potential)
        trajectory_said(self.ctx, self.target, self.trajectory)

    def _install(self, compiled: Any) -> None:
        assert self._patches is not None and self._clock is not None
        install_potential(self._patches, self._clock, self.kernel, compiled)

    def _fall_back(self, potential: Any, why: str) -> Any:
        """The capture stopped: this run's potential runs on Pyro's JIT (as written when Pyro cannot)."""
        maker = potential_maker(potential)
        ran = "ran eager (Pyro's JIT compiles only the potentials it builds from a model)"
        if maker is not None and torchcheck.trace_problem() is None:
            skip_warnings, jit_options = compat.jit_settings(self.kernel)
            potential = maker.get_potential_fn(jit_compile=True, skip_jit_warnings=skip_warnings,
                                               jit_options=jit_options)
            ran = "ran on Pyro's JIT"
        self.after, self.reason = (f"{self.before}(jit_compile=True)" if maker is not None else self.before,
                                   f"the whole step cannot be compiled ({why}): {ran}")
        self.compiled = ran == "ran on Pyro's JIT"
        if not self.compiled:
            self.after = self.before
        self.ctx.recorder.switch(self.key, self.target, self)
        return potential


def potential_compiled(ctx: RunContext, target: Any, params: dict[str, Any]) -> tuple[Any, Any]:
    """``target``'s potential and gradient compiled on the step backend (``target``: a kernel after
    its setup, or its potential function), and the graphs kept for a later run, or None: the
    graphs an earlier run of the same model on the same data left, where they serve (nothing is
    captured), else a capture now (``CannotCompile`` says why not), kept for the next run."""
    from ...wholestep import compile_potential
    from ...wholestep.reuse import Kept, freeze, world_guards

    potential_fn = getattr(target, "potential_fn", target)
    frozen = freeze(potential_fn, params)
    store = ctx.session.whole_steps
    if frozen is not None:
        for kept in reversed(store.kept):
            if kept.serves(frozen):
                store.keep(kept)
                return kept.potential_for(potential_fn), kept
    compiled = compile_potential(target, params, backend="step")
    world = None if frozen is None else world_guards(frozen)
    if frozen is None or world is None:
        return compiled, None
    kept = Kept.of(frozen, world, compiled)
    store.keep(kept)
    return compiled, kept


def load_stack(ctx: RunContext, target: str) -> None:
    """Load torch's compiler stack before a capture, noted where it took a while (a new process)."""
    seconds = load_compiler_stack()
    if seconds > 0.05:
        ctx.recorder.note(f"{target}: torch's compiler stack loaded before the capture in {seconds:.2f} s "
                          "(once a process; not counted in the capture)")


def reused_said(ctx: RunContext, target: str, potential: Any, trajectory: Any, seconds: float) -> None:
    """Where the run's graphs came from an earlier run: say so, and what the set-up took."""
    if not potential.reused:
        return
    which = "potential and its trajectory" if trajectory is not None and trajectory.reused else "potential"
    ctx.recorder.note(f"{target}: the {which} ran on the graphs an earlier run of this model on the same "
                      f"data captured (its guards held): nothing captured, set-up {seconds * 1e3:.0f} ms")


def inductor_started(ctx: RunContext, target: str, compiled: Any, warm: bool | None = None,
                     expected: float | None = None) -> None:
    """Start inductor's kernels for a compiled potential or trajectory, and say where they come
    from (``warm``: whether inductor's disk cache holds them, when the caller knows)."""
    from ...wholestep.memory import graph_digest, shared

    missing = compiled.build_inductor()
    if missing is not None:
        compiled.fallback = f"{missing}; running the step backend"
        ctx.recorder.note(f"{target}: {compiled.fallback}")
        return
    if warm is None:
        memory = shared()
        warm = memory is not None and memory.inductor_holds(
            graph_digest(compiled.captured.graph, compiled.captured.example_inputs))
    where = ("from inductor's disk cache" if warm else "in a worker process"
             + (f", expected {expected:.0f} s" if expected is not None else ""))
    meanwhile = ("the iterations run Pyro's kernel on the step backend's potential"
                 if compiled.what.endswith("trajectory") else "the evaluations run on the step backend")
    ctx.recorder.note(f"{target}: inductor builds the {compiled.what}'s kernels in the background ({where}); "
                      f"{meanwhile} until they are ready")


def inductor_said(ctx: RunContext, target: str, compiled: Any) -> None:
    """After a run: whether inductor's kernels took over, or are still on their way."""
    if compiled is None:
        return
    if compiled.backend == "inductor" and compiled.reused and not compiled.codegen_seconds:
        ctx.recorder.note(f"{target}: inductor's kernels ran the {compiled.what} from the start "
                          "(the kept graph's, built for an earlier run)")
    elif compiled.backend == "inductor":
        ctx.recorder.note(f"{target}: inductor's kernels took over the {compiled.what} "
                          f"({compiled.codegen_summary()})")
    elif compiled.compiling:
        ctx.recorder.note(f"{target}: inductor's codegen of the {compiled.what} goes on in the background; "
                          "its disk cache serves the next run")
    elif compiled.fallback:
        ctx.recorder.note(f"{target}: {compiled.fallback}")


def trajectory_started(ctx: RunContext, target: str, kernel: Any, potential: Any, clock: MCMCClock,
                       warm: bool | None = None, expected: float | None = None,
                       codegen: bool = True, kept: Any = None) -> Any:
    """Capture ``kernel``'s NUTS trajectories around the compiled ``potential`` (or take the graph
    ``kept`` from an earlier run holds, when the potential came from it) and make them the run's
    samples (within its clock), starting inductor's kernels in the background (``codegen``) unless
    they run already: Pyro's kernel runs each iteration until they are ready. None, with the reason
    said, where the trajectories stay in Pyro's kernel."""
    from ...wholestep import CannotCompile
    from ...wholestep.backends import no_cxx_reason
    from ...wholestep.trajectory import compile_trajectory, refusal

    why = refusal(kernel) or no_cxx_reason()
    trajectory = None
    if why is None and kept is not None and potential.reused:
        trajectory = kept.trajectory_for(kernel, potential)
    if why is None and trajectory is None:
        try:
            trajectory = compile_trajectory(kernel, potential, background=True)
        except CannotCompile as exc:
            why = exc.reason
    if trajectory is None:
        ctx.recorder.note(f"{target}: the trajectories run in Pyro's kernel on the compiled potential: {why}")
        return None
    clock.inner_sample = trajectory.sample
    ctx.recorder.watch_sentinel(trajectory.sentinel)
    ctx.session.whole_steps.of(kernel)[TRAJECTORY_KEY] = WholeStepEntry(trajectory, TRAJECTORY_KEY,
                                                                        trajectory.capture_seconds)
    if kept is not None:
        kept.ran(potential, trajectory)
    if codegen and trajectory.backend != "inductor":
        inductor_started(ctx, target, trajectory, warm, expected)
    return trajectory


def trajectory_said(ctx: RunContext, target: str, trajectory: Any) -> None:
    """After a run: how many iterations the compiled trajectory built, and why the rest did not."""
    from ...wholestep import halves

    if trajectory is None:
        return
    built, pyro = trajectory.iterations, trajectory.pyro_iterations
    entry = ctx.session.whole_steps.of(trajectory.kernel).get(TRAJECTORY_KEY)
    if built and entry is not None and entry.compiled is trajectory:
        entry.last_hit = time.time()
    if not built:
        ctx.recorder.note(f"{target}: the compiled {trajectory.what} built no iteration of this run: Pyro's "
                          f"kernel ran the {pyro:,} after its capture ({trajectory.declined})")
        return
    eager = f", {trajectory.eager_leaves:,} of them eager" if trajectory.eager_leaves else ""
    kind = trajectory.what.split()[0]
    captured = ("its graph an earlier run's" if trajectory.reused
                else f"its capture took {trajectory.capture_seconds * 1e3:.0f} ms, "
                     + halves.SAID[trajectory.captured.halves])
    text = (f"{target}: {kind} trajectories compiled: {built:,} of {built + pyro:,} iterations built by "
            f"the compiled leapfrog ({trajectory.leaves + trajectory.eager_leaves:,} leapfrog steps{eager}; "
            f"{captured})")
    if pyro:
        text += f"; {pyro:,} ran Pyro's kernel ({trajectory.declined})"
    ctx.recorder.note(text)


def sentinel_said(ctx: RunContext, target: str, compiled: Any) -> None:
    """After a run: what the sentinel found, when it found the compiled potential wrong."""
    finding = getattr(compiled, "finding", None)
    if finding is None:
        return
    ctx.recorder.sentinel_findings += 1
    ctx.recorder.guard(target, f"potential and gradient: ran eager from compiled evaluation {finding.call}: "
                               f"the sentinel found the compiled potential wrong: {finding}")


def install_potential(patches: PatchSet, clock: MCMCClock, kernel: Any, compiled: Any) -> None:
    """HMC/NUTS take this kernel's potential and gradient from ``compiled`` until ``patches`` are
    restored; any other potential still goes through Pyro's ``potential_grad``. Each graph
    evaluation is counted."""
    from ...compat.capture import potential_grad_owners

    eager_grad = potential_grad_owners()[0].potential_grad

    def potential_grad(potential_fn: Any, z: Any) -> Any:
        if potential_fn is getattr(kernel, "potential_fn", None):
            clock.potential_evals += 1
            return compiled(z)
        return eager_grad(potential_fn, z)

    for module in potential_grad_owners():
        patches.set(module, "potential_grad", potential_grad)
