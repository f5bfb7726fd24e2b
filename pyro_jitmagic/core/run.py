"""The core of ``%%pyrojit``: while a :class:`JitRun` is active, Pyro inference runs compiled.

Interception happens where inference runs, not in the cell's text: for the
duration of the run, ``SVI.step`` and ``MCMC.run`` are wrapped at class level,
so every SVI and MCMC object is caught wherever it was built and however its
class was imported, and the ELBOs' loss methods are caught wherever they are
called from (see :mod:`._direct`). Each object is then planned once per run:

* an SVI whose ELBO has a Jit* counterpart gets its ``loss_and_grads`` pointed
  at a compiled companion (see :mod:`._session`), warmed up before its first
  step;
* an ELBO loss the cell calls itself (``differentiable_loss``, ``loss``,
  ``loss_and_grads``) runs on the same companion, per model and guide;
* an MCMC run with an HMC/NUTS kernel gets ``jit_compile=True`` for that run;
* anything else runs as written, and the report says why.

``torch.jit.trace`` and ``CompiledFunction.__call__`` are wrapped too, to time
each compilation, attribute it to its owner, check it for risky warnings and
stray params, and start its trace from the same random state as the eager step
it replaces. All of these patches go through one :class:`PatchSet` and are
undone in ``__exit__``, whatever ended the run.
"""

from __future__ import annotations

import math
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..options import DEFAULT_EXECUTOR, RunOptions
from ..records.report import (
    Compilation,
    ExecutorChoice,
    JitReport,
    MCMCRun,
    Progress,
    Step,
    SVIRun,
    Switch,
    WarmupAction,
)
from ..records.units import seconds
from . import advice as _advice
from . import compat
from . import direct as _direct
from . import switch as _switch
from . import torchcheck as _torch
from . import warmup as _warmup
from .auto import AutoPolicy, Tally, potential_until_it_pays
from .cache import _describe_key
from .executor import ExecutorSetting, Tier, optimize_setter
from .jit_warnings import WarningCapture, default_location_name, watch_reads
from .mcmc import MCMCClock, mcmc_decision, potential_builder, potential_maker
from .naming import label, name_in
from .patch import ORIGINAL_ATTR, PatchSet, heal, unwrap
from .process import PROCESS
from .session import Session
from .stack import call_shallow

# With --auto, a key's compile is added to what the session expects of the
# next keys once it has run this many compiled steps (the first ones may be slow).
LEARN_AFTER = 8

# Live progress is offered at most this often (seconds), over the median of
# the last PROGRESS_WINDOW steps: a few updates a second cost nothing measurable.
PROGRESS_INTERVAL = 0.25
PROGRESS_WINDOW = 100


@dataclass
class _SVIPlan:
    """How one SVI object runs in this run, and what it has done."""

    svi: Any
    target: str
    elbo_name: str
    elbo: Any  # the user's ELBO, None for a custom loss
    runner: Any  # the ELBO whose loss_and_grads the steps use
    compiled: bool
    # (seconds, loss, compile seconds) per step: tuples on the hot path, Step records in snapshot()
    raw: list[tuple[float, Any, float]] = field(default_factory=list)
    compile_seconds: float = 0.0  # of the step in progress
    # why this run's random draws part from an eager run's ("" while they do not)
    diverges: str = ""
    # (random state, param names, warnings captured) before its first compile, until one succeeds
    start: tuple[Any, set[str], Any] | None = None
    compiled_once: bool = False

    def steps(self) -> tuple[Step, ...]:
        return tuple(Step(seconds, loss if isinstance(loss, float) else math.nan, self.compiled, compiled)
                     for seconds, loss, compiled in self.raw)


@dataclass
class _MCMCPlan:
    target: str
    clock: MCMCClock
    compile_seconds: float = 0.0


@dataclass
class _PendingCompile:
    """A ``CompiledFunction`` call that is building a trace for a new key."""

    key: str
    rng_state: Any
    outer: _PendingCompile | None = None
    start: float = 0.0
    trace_seconds: float = 0.0
    shapes: tuple[str, ...] = ()
    args: tuple[Any, ...] = ()  # what the positional arguments were: shapes, or type names


class _FirstCall:
    """Stands in for a compiled function's Python function while Pyro compiles a key, to keep
    Pyro's eager first run of it (which finds the params): its result, the random state after
    it, and whether it created params."""

    def __init__(self, fn: Callable[..., Any], store: Any) -> None:
        self.fn = fn
        self._store = store
        self._known = set(store.keys())
        self.result: Any = None
        self.rng: Any = None
        self.created_params = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if self.rng is not None:  # the trace's own calls
            return self.fn(*args, **kwargs)
        import torch

        self.result = self.fn(*args, **kwargs)
        self.rng = torch.get_rng_state()
        self.created_params = not self._known.issuperset(self._store.keys())
        return self.result


@dataclass
class _TraceStart:
    """What a ``torch.jit.trace`` call started from."""

    pending: _PendingCompile | None
    shapes: tuple[str, ...]
    risky: int
    params: set[str]
    potential: bool = False  # an HMC/NUTS potential energy


class JitRun:
    """Run Pyro inference compiled while the ``with`` block is active.

    This is the plain-Python twin of ``%%pyrojit``; see :func:`compiled`.
    """

    def __init__(
        self,
        options: RunOptions | None = None,
        *,
        names: Mapping[str, Any] | None = None,
        name_location: Callable[[str, int], str] = default_location_name,
        session: Session | None = None,
        announce: bool = False,
        auto_policy: AutoPolicy | None = None,
        on_first_use: Callable[[Any], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_step: Callable[[], None] | None = None,
        **fields: Any,
    ) -> None:
        if isinstance(fields.get("auto"), AutoPolicy):  # compiled(auto=policy): --auto with that policy
            auto_policy, fields["auto"] = fields["auto"], True
        options = (options or RunOptions()).replace(**fields) if fields else options or RunOptions()
        self.options = options
        executor, warnings, auto = options.executor, options.warnings, options.auto
        self._executor = ExecutorSetting(executor)  # checks the name
        self._adaptive = executor == "adaptive"
        # the step in progress's (tier, compiled function, key), when its key has a tier
        self._tier_step: tuple[Tier, Any, Any] | None = None
        self._tiers_changed: dict[int, Tier] = {}
        self.warmup = options.warmup
        self.warnings_mode = warnings
        self.announce = announce
        # the eager half of --compare records the cell as written
        self.compile = options.compiles
        self.max_entries = options.max_entries
        self._past_cap: dict[int, tuple[str, Any]] = {}
        self._on_first_use = on_first_use  # each SVI and MCMC, first met: --compare saves its state
        self._on_progress = on_progress
        self._on_step = on_step  # after every SVI step and direct loss call: --compare follows the params
        self._last_progress = 0.0
        self._steps_done = 0
        self._samples_done = 0
        self._names = names
        self.session = session or PROCESS.session
        # --auto: the session's policy (or one given), and what each key did in this run
        self.auto: AutoPolicy | None = (auto_policy or self.session.auto) if auto else None
        self._tallies: dict[tuple[int, Any], Tally] = {}
        # (compiled function, key) whose next call checks that its trace draws what eager draws
        self._verify: set[tuple[int, Any]] = set()
        self._auto_step: tuple[Tally, str] | None = None
        self._capture = WarningCapture(warnings, name_location)
        self._patches = PatchSet()
        self._svi_plans: dict[int, _SVIPlan] = {}
        # direct calls of an ELBO's loss, per (ELBO, method, model, guide)
        self._loss_plans: dict[tuple[int, str, int, int], _direct.LossPlan] = {}
        # inside SVI.evaluate_loss or Predictive: ELBO losses run as written there
        self._as_written = 0
        self._cuda_initialized: Callable[[], bool] = lambda: False
        self._synchronize: Callable[[], None] = lambda: None
        self._mcmc_runs: list[MCMCRun] = []
        self._kernels: list[Any] = []
        self._switches: dict[int, Switch] = {}
        self._compilations: list[Compilation] = []
        self._warmups: list[WarmupAction] = []
        self._notes: list[str] = []
        self._current: _SVIPlan | _direct.LossPlan | _MCMCPlan | None = None
        self._pending: _PendingCompile | None = None
        self._advice: str | None = None
        self._can_trace = False
        self._active = False
        self._start = 0.0
        self._end: float | None = None
        self._error: BaseException | None = None
        self._report: JitReport | None = None

    # -- entering and leaving ------------------------------------------------
    def __enter__(self) -> JitRun:
        if self.options.seed is not None:
            from .state import seed_everything

            seed_everything(self.options.seed)
        import pyro.ops.jit
        import torch
        from pyro.infer import SVI, Predictive
        from pyro.infer.mcmc import MCMC

        if self.compile:
            from .state import prime_once

            # torch's one-off start-up would pass for a slow compile (or, with --auto, a slow
            # eager step), and the decisions taken on those figures would be wrong
            primed = prime_once()
            if primed > 0.05:
                self._notes.append(f"torch's one-off start-up in this process took {seconds(primed)}, "
                                   "paid before the first step so that no step or compile is billed for it")
        self._cuda_initialized, self._synchronize = torch.cuda.is_initialized, torch.cuda.synchronize
        self._start = self._last_progress = time.perf_counter()
        for name in heal_leftovers():
            self._notes.append(f"restored {name}, left patched by an earlier run that was cut off")
        PROCESS.runs.append(self)
        self._active = True
        try:
            self._capture.__enter__()
            # what this torch can do, checked here: the package admits any torch release
            cannot_trace = _torch.trace_problem() if self.compile else None
            self._can_trace = callable(getattr(torch.jit, "trace", None)) and cannot_trace is None
            if self._can_trace and self.compile:
                executor_note = _torch.executor_problem(self._executor.name, DEFAULT_EXECUTOR)
                if executor_note is not None:
                    self._adaptive = False
                    self._notes.append(executor_note)
            self._wrap(SVI, "step", self._step_wrapper)
            self._wrap(MCMC, "run", self._mcmc_wrapper)
            self._wrap(SVI, "evaluate_loss", self._noted_wrapper(
                "SVI.evaluate_loss ran eager: Pyro compiles only the steps' loss_and_grads"))
            self._wrap(Predictive, "forward", self._noted_wrapper(
                "Predictive ran eager: it samples the model and guide, which Pyro does not compile"))
            _direct.intercept(self._patches, self._loss_call)
            if self._can_trace and self.compile:
                self._executor.apply()
                self._wrap(torch.jit, "trace", self._trace_wrapper)
                self._wrap(pyro.ops.jit.CompiledFunction, "__call__", self._compiled_call_wrapper)
                self._wrap(compat.potential_maker_class(), "get_potential_fn",
                           lambda original: potential_builder(
                               original, lambda: isinstance(self._current, _MCMCPlan), PROCESS.compiling))
            elif self.compile:
                self._notes.append(f"{cannot_trace}: the cell ran eager")
        except BaseException:
            self._leave()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._end = time.perf_counter()
        self._leave()
        if exc is not None:
            self._error = exc
        if self.announce and self.warnings_mode == "capture":
            self._capture.announce_risky()

    def failed(self, error: BaseException | None) -> None:
        """Record the error that ended the code, when it was caught before the ``with`` ended."""
        if error is not None:
            self._error = error
            self._report = None

    @property
    def report(self) -> JitReport | None:
        """What the block did (None while it runs): made once, when first asked for."""
        if self._end is None:
            return None
        if self._report is None:
            self._report = self.snapshot(self._error)
        return self._report

    def _leave(self) -> None:
        self._active = False
        try:
            self._executor.restore()
            self._patches.restore()
            if self.auto is not None:
                for tally in self._tallies.values():
                    self.auto.learn(tally.book)
        finally:
            try:
                self._capture.__exit__(None, None, None)
            finally:
                if self in PROCESS.runs:
                    PROCESS.runs.remove(self)

    def _wrap(self, owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]]) -> None:
        """Replace ``owner.name`` by ``make(original)`` until the run ends."""
        original = unwrap(getattr(owner, name))
        wrapper = make(original)
        setattr(wrapper, ORIGINAL_ATTR, original)
        wrapper.__name__ = getattr(original, "__name__", name)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        self._patches.set(owner, name, wrapper)

    # Each wrapper first checks that its run is still active: a wrapper can
    # outlive its run when Pyro keeps a reference to it, and then calls
    # straight through. (Stack depth here costs nothing at compile time: traces
    # run on a shallow stack, see _stack.)

    # -- naming ----------------------------------------------------------------
    def _name_of(self, obj: Any, fallback: str) -> str:
        return name_in(self._names, obj) or fallback

    # -- SVI -------------------------------------------------------------------
    def _plan_svi(self, svi: Any) -> _SVIPlan:
        from pyro.infer import ELBO

        loss_and_grads = svi.loss_and_grads
        elbo = getattr(loss_and_grads, "__self__", None)
        if not isinstance(elbo, ELBO):
            elbo = None
        target = self._name_of(svi, f"SVI({label(svi.model)}, {label(svi.guide)})")
        elbo_name = type(elbo).__name__ if elbo is not None else label(svi.loss)

        runner: Any = elbo
        compiled, after, reason = False, elbo_name, ""
        if self._on_first_use is not None:
            self._on_first_use(svi)
        if not self.compile:
            reason = "run as written"
        elif elbo is None:
            reason = _switch.why_eager(svi.loss)
        elif not self._can_trace:
            reason = "torch.jit.trace is not available in this torch"
        elif isinstance(elbo, _switch.jit_classes()):
            compiled, reason = True, "already compiled as written"
            bound = _switch.bound_model_and_guide(elbo)
            if bound is not None and (bound[0] is not svi.model or bound[1] is not svi.guide):
                # Pyro would silently compute the loss of the model this ELBO
                # first compiled; run this pair on its own compiled copy instead.
                runner, _ = self.session.companion(elbo, svi.model, svi.guide,
                                                   _switch.fresh_copy)
                reason = (f"this {elbo_name} was first compiled for {label(bound[0])}; "
                          f"Pyro would silently return that model's loss for {label(svi.model)}, "
                          "so this SVI ran on its own compiled copy")
                self._notes.append(f"{target}: {reason}")
        elif self.session.cannot_compile(elbo) is not None:
            reason = self.session.cannot_compile(elbo) or ""
        elif _switch.counterpart(elbo) is not None:
            runner, _ = self.session.companion(elbo, svi.model, svi.guide, _switch.make_companion)
            compiled, after = True, type(runner).__name__
        else:
            reason = _switch.why_eager(elbo)

        if runner is not elbo and runner is not None:
            self._patches.set(svi, "loss_and_grads", runner.loss_and_grads)
        plan = _SVIPlan(svi=svi, target=target, elbo_name=elbo_name, elbo=elbo, runner=runner,
                        compiled=compiled)
        self._svi_plans[id(svi)] = plan
        self._switches[id(svi)] = Switch(target, elbo_name, after, compiled, reason)
        return plan

    def _step_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        run = self

        def step(svi: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if not run._active:
                return original(svi, *args, **kwargs)
            plan = run._svi_plans.get(id(svi))
            if plan is None or plan.svi is not svi:
                plan = run._prepare_svi(svi, args, kwargs)
            return run._timed(plan, original, (svi,), args, kwargs)

        return step

    def _timed(self, plan: _SVIPlan | _direct.LossPlan, fn: Callable[..., Any], head: tuple[Any, ...],
               args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """One step of an SVI, or one direct call of a loss: ``fn(*head, *args, **kwargs)``, timed."""
        __tracebackhide__ = True
        outer, self._current = self._current, plan
        plan.compile_seconds = 0.0
        self._auto_step = self._tier_step = None
        start = time.perf_counter()
        try:
            result = fn(*head, *args, **kwargs)
        except BaseException as exc:
            self._auto_step = None
            again = self._fell_back(plan, fn, exc) if plan.compiled else None
            if again is None:
                if plan.compiled:
                    self._advise(exc, args, kwargs, plan.runner)
                if _advice.ends_at_users_line(exc):
                    raise exc.with_traceback(None) from exc.__cause__
                raise
            result = again(*head, *args, **kwargs)  # the same step, eager
        finally:
            self._current = outer
        if self._cuda_initialized():
            # a step returns once its kernels are queued; wait for them, so
            # the wall time is the GPU's time and not the launch time
            self._synchronize()
        end = time.perf_counter()
        loss = result if type(result) is float else _direct.loss_value(result)
        plan.raw.append((end - start, loss, plan.compile_seconds))
        if self._auto_step is not None:
            self._auto_done(end - start, len(plan.raw))
        if self._tier_step is not None:
            self._tier_done(end - start, len(plan.raw))
        self._steps_done += 1
        if self._on_step is not None:
            self._on_step()
        if self._on_progress is not None and end - self._last_progress >= PROGRESS_INTERVAL:
            self._progress(end, plan)
        if len(plan.raw) == 1 and plan.runner is not None:
            self._after_first_step(plan)
        return result

    def _prepare_svi(self, svi: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _SVIPlan:
        """Plan an SVI met for the first time in this run, and warm it up."""
        plan = self._plan_svi(svi)
        if plan.compiled and self.warmup:
            self._warmups.extend(_warmup.warm_up(plan.target, plan.runner, svi.model,
                                                 svi.guide, args, kwargs))
        return plan

    def _mark_start(self, rng: Any) -> None:
        """A key of the step in progress starts compiling: keep what to go back to, should it meet
        a limit of Pyro's JIT (its state at the step's start: the compiled loss is the step's first
        work), until a compile of its succeeds."""
        plan = self._current
        if isinstance(plan, (_SVIPlan, _direct.LossPlan)) and plan.start is None and not plan.compiled_once:
            import pyro

            plan.start = (rng, set(pyro.get_param_store().keys()), self._capture.checkpoint())

    def _fell_back(self, plan: _SVIPlan | _direct.LossPlan, step: Callable[..., Any],
                   exc: BaseException) -> Callable[..., Any] | None:
        """When the first compiled step of an SVI (or call of a loss) failed on a known limit of
        Pyro's JIT (one it fails on by hand too): put the step's state back and run it eager from
        now on. What to run the step again with, or None."""
        import pyro
        import torch

        store = pyro.get_param_store()
        why = _switch.cannot_compile(plan.elbo, exc, store.keys())
        if why is None or plan.start is None or plan.runner is plan.elbo:  # not the user's own Jit* ELBO
            return None
        rng, names, warned = plan.start
        for name in set(store.keys()) - names:  # made by the failed trace
            del store[name]
        torch.set_rng_state(rng)
        self._capture.rollback(warned)  # about a trace that is not used
        self.session.never_compile(plan.elbo, why)
        plan.runner, plan.compiled = plan.elbo, False
        switch = Switch(plan.target, plan.elbo_name, plan.elbo_name, False, why)
        if isinstance(plan, _SVIPlan):
            self._patches.set(plan.svi, "loss_and_grads", plan.elbo.loss_and_grads)
            self._switches[id(plan.svi)] = switch
            return step
        plan.call = plan.as_written
        self._switches[id(plan)] = switch
        return plan.call

    def _after_first_step(self, plan: _SVIPlan | _direct.LossPlan) -> None:
        if plan.runner is plan.elbo and plan.compiled:
            # the user's own Jit* ELBO: left as written, but say what it costs
            if type(plan.runner).__name__ == "JitTraceMeanField_ELBO":
                what = "the SVI" if isinstance(plan, _SVIPlan) else "it"
                self._notes.append(
                    f"{plan.target}: Pyro's JitTraceMeanField_ELBO traces again on every call; "
                    f"give {what} a TraceMeanField_ELBO and %%pyrojit compiles it once")
        else:
            _switch.repair_retracing(plan.runner)

    # -- ELBO losses called directly (see _direct) -------------------------------
    def _loss_call(self, key: str, elbo: Any, model: Any, guide: Any,
                   args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """Every call of an ELBO's loss method while the run is active comes here."""
        __tracebackhide__ = True
        if not self._active or self._current is not None or self._as_written:
            # calls made by SVI.step, by a loss already running, or by evaluate_loss: as written
            return _direct.original(key)(elbo, model, guide, *args, **kwargs)
        plan = self._loss_plans.get((id(elbo), key, id(model), id(guide)))
        if plan is None or not plan.holds(elbo, model, guide):
            plan = self._prepare_loss(key, elbo, model, guide, args, kwargs)
        return self._timed(plan, plan.call, (model, guide), args, kwargs)

    def _prepare_loss(self, key: str, elbo: Any, model: Any, guide: Any,
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> _direct.LossPlan:
        """Plan a loss met for the first time in this run, and warm it up."""
        target = _direct.name_of(self._names, key, elbo, model, guide)
        if any(p.target == target for p in self._loss_plans.values()):  # the same loss, another pair
            target = f"{target}({label(model)}, {label(guide)})"
        plan = _direct.plan(key, elbo, model, guide, target=target, compile=self.compile,
                            can_trace=self._can_trace, session=self.session, args=args)
        if plan.note and plan.note not in self._notes:
            self._notes.append(plan.note)
        if plan.compiled and self.warmup:
            self._warmups.extend(_warmup.warm_up(target, plan.runner, model, guide, args, kwargs))
        self._loss_plans[(id(elbo), key, id(model), id(guide))] = plan
        self._switches[id(plan)] = Switch(target, plan.elbo_name, plan.after, plan.compiled, plan.reason)
        return plan

    def _progress(self, now: float, plan: _SVIPlan | _direct.LossPlan | None = None,
                  compiling: bool = False) -> None:
        assert self._on_progress is not None
        self._last_progress = now
        recent = None
        if plan is not None and plan.raw:
            recent = statistics.median(step[0] for step in plan.raw[-PROGRESS_WINDOW:])
        self._on_progress(Progress(run="compiled" if self.compile else "eager",
                                   steps=self._steps_done, recent_median_step_seconds=recent,
                                   samples=self._samples_done, compiling=compiling,
                                   seconds=now - self._start))

    def _sample_done(self) -> None:
        self._samples_done += 1
        if self._on_progress is not None:
            now = time.perf_counter()
            if now - self._last_progress >= PROGRESS_INTERVAL:
                self._progress(now)

    def _advise(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any],
                elbo: Any) -> None:
        if isinstance(exc, _advice.JitMagicError) or _advice.advised(exc):
            return  # raised or advised by us already: says what to do
        check_trace = bool((getattr(elbo, "jit_options", None) or {}).get("check_trace"))
        advice = _advice.advise(exc, args, kwargs, check_trace)
        if advice is not None:
            _advice.attach(exc, advice)
            self._advice = advice

    # -- compiling -------------------------------------------------------------
    def _compiled_call_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        import pyro
        import torch

        run, cache, adaptive = self, self.session.cache, self._adaptive
        param: Any = pyro.param
        store = pyro.get_param_store()
        get_rng_state, set_rng_state, equal = torch.get_rng_state, torch.set_rng_state, torch.equal
        set_optimize = optimize_setter()
        fast_key, hashed_key, param_names = compat.fast_key, compat.hashed_key, compat.param_names

        def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
            """``CompiledFunction.__call__``: count hits; time a new key's first call as its compile."""
            __tracebackhide__ = True
            if not run._active:
                return original(fn, *args, **kwargs)
            # Pyro's key: the keyword values themselves when hashable, which is the fast
            # common case; else Pyro's own hashing (lists, dicts, argparse.Namespace by value)
            key = fast_key(args, kwargs)
            try:
                traced = fn.compiled.get(key)
            except TypeError:
                key = hashed_key(args, kwargs)
                traced = fn.compiled.get(key)
            if run.auto is not None and not run._auto_route(fn, key, traced):
                return fn.fn(*args, **kwargs)  # --auto: eager while that is cheaper
            if traced is None:
                if run._past_max_entries(fn):  # Pyro's uncompiled function, uncached
                    if run._auto_step is not None:
                        run._auto_step = (run._auto_step[0], "eager")
                    return fn.fn(*args, **kwargs)
                pending = run._before_compile(fn, key, args, kwargs)
                first = _FirstCall(fn.fn, store)
                local = PatchSet()
                try:
                    local.set(fn, "fn", first)
                    result = original(fn, *args, **kwargs)  # from this frame: see _wrap
                finally:
                    local.restore()
                    run._after_compile(fn, key, pending)
                if first.rng is not None and not equal(get_rng_state(), first.rng):
                    # The trace drew other random numbers than Pyro's eager first run of the step.
                    if first.created_params:  # their initial values drew them: eager's step is the step
                        set_rng_state(first.rng)
                        run._verify.add((id(fn), key))
                        return first.result
                    run._draws_part()
                return result
            if run._verify and (id(fn), key) in run._verify:
                run._verify.discard((id(fn), key))
                return run._verified_call(fn, traced, args, kwargs)
            stats = cache.of(fn)
            stats.recent_new.append(False)
            stats.last_key = key
            entry = stats.entries.get(key)
            if entry is not None:
                entry.hits += 1
                entry.last_hit = time.time()
                tier = entry.tier
                if tier is not None and adaptive:
                    set_optimize(tier.optimize)
                    run._tier_step = (tier, fn, key)
            # What Pyro does on a hit, less its poutine.block/poutine.trace pair:
            # those only look for params created by the call, and a traced
            # function runs no Python, so they never see any.
            try:
                return traced(*[param(name).unconstrained() for name in param_names(fn)], *args)
            except Exception as exc:  # TorchScript's own check of the inputs
                run._advise_call(exc, fn, key, args)
                raise

        return call

    def _advise_call(self, exc: Exception, fn: Any, key: Any, args: tuple[Any, ...]) -> None:
        """A trace refused a call's arguments: compare them with what the trace was compiled for."""
        entry = self.session.cache.of(fn).entries.get(key)
        advice = _advice.advise_call(exc, args, entry.args if entry is not None else ())
        if advice is not None:
            _advice.attach(exc, advice)
            _advice.at_users_line(exc)
            self._advice = advice

    # -- --auto ----------------------------------------------------------------
    def _auto_route(self, fn: Any, key: Any, traced: Any) -> bool:
        """--auto: whether this call of ``key`` runs compiled (True) or eager, noted for the step."""
        assert self.auto is not None
        tally = self._tallies.get((id(fn), key))
        if tally is None:
            owner = self._current.target if self._current is not None else "(outside SVI and MCMC)"
            book = self.auto.book(fn, key, "svi", owner, _describe_key(key))
            if traced is not None and book.state == "eager":  # compiled in an earlier, plain cell
                book.state = "compiled"
            tally = self._tallies[(id(fn), key)] = Tally(book, compiled_before=traced is not None)
        book = tally.book
        book.function.calls += 1
        if traced is not None:
            self._auto_step = (tally, "compiled")
            return True
        if self.auto.decide_svi(book, book.function.calls):
            book.state = "compiled"
            self._auto_step = (tally, "compile")
            return True
        book.state = "eager"  # (also when its traces were cleared: it earns them again)
        self._auto_step = (tally, "eager")
        return False

    def _tier_done(self, seconds: float, step: int) -> None:
        assert self._tier_step is not None
        tier, fn, key = self._tier_step
        self._tier_step = None
        if tier.after_step(seconds, step):
            self._tiers_changed[id(tier)] = tier
            if tier.drop:  # its optimised trace was slower: the next call compiles it again, no-opt
                tier.drop = False
                fn.compiled.pop(key, None)

    def _auto_done(self, seconds: float, step: int) -> None:
        assert self._auto_step is not None and self.auto is not None
        tally, mode = self._auto_step
        self._auto_step = None
        tally.add(mode, seconds, step)
        if mode == "compiled" and tally.book.compiled_calls == LEARN_AFTER:
            self.auto.learn(tally.book)  # the next keys' decisions use this compile's cost

    def _past_max_entries(self, fn: Any) -> bool:
        """A call with a new key: True when ``fn`` holds --max-entries traces already (it runs eager)."""
        if self.max_entries is None or len(fn.compiled) < self.max_entries:
            return False
        stats = self.session.cache.of(fn)
        stats.recent_new.append(True)
        stats.eager_past_cap += 1
        self._past_cap[id(fn)] = (self._current.target if self._current else "?", stats)
        return True

    def _verified_call(self, fn: Any, traced: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A key whose first step drew random initial values: is its compiled step's draw eager's?

        Its step runs eagerly first (only to count the random numbers it draws), then compiled
        from the same random state, as every later step will.
        """
        import pyro
        import torch

        param: Any = pyro.param
        start = torch.get_rng_state()
        fn.fn(*args, **kwargs)
        eager = torch.get_rng_state()
        torch.set_rng_state(start)
        result = traced(*[param(name).unconstrained() for name in compat.param_names(fn)], *args)
        if not torch.equal(torch.get_rng_state(), eager):
            self._draws_part()
        return result

    def _draws_part(self) -> None:
        """The step just compiled drew other random numbers than its eager run: say so once per SVI."""
        plan = self._current
        if isinstance(plan, (_SVIPlan, _direct.LossPlan)) and not plan.diverges:
            plan.diverges = ("the compiled step draws fewer random numbers than the eager one (a random "
                             "value computed and never used, e.g. torch.randn as the initial value of a "
                             "pyro.param that exists already), so the two runs' draws part")
            self._notes.append(f"{plan.target}: {plan.diverges}; its results follow eager's in "
                               "distribution, not draw by draw")

    def _before_compile(self, fn: Any, key: Any, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> _PendingCompile:
        """A call with a new key is about to compile."""
        import torch

        stats = self.session.cache.of(fn)
        stats.recent_new.append(True)
        if stats.keeps_recompiling(len(fn.compiled) + 1):
            self._warn_recompiling(stats, key, kwargs, len(fn.compiled) + 1)
        stats.last_key = key
        if self._adaptive:  # a new trace starts no-opt, whatever the last key ran under
            optimize_setter()(False)
        pending = _PendingCompile(_describe_key(key), torch.get_rng_state(), outer=self._pending,
                                  args=_advice.describe_args(args))
        self._mark_start(pending.rng_state)
        self._pending = pending
        pending.start = time.perf_counter()
        return pending

    def _after_compile(self, fn: Any, key: Any, pending: _PendingCompile) -> None:
        seconds = time.perf_counter() - pending.start
        self._pending = pending.outer
        # Pyro's first call for a key runs the function eagerly to find its
        # params, traces it, then runs the trace (when the executor optimises
        # it): all of it is the price of compiling.
        if key in fn.compiled:
            self._record_compile(pending.key, seconds, pending.trace_seconds, pending.shapes)
            plan = self._current
            if isinstance(plan, (_SVIPlan, _direct.LossPlan)):
                plan.start, plan.compiled_once = None, True
            self.session.cache.hit(fn, key, compile_seconds=seconds)
            entry = self.session.cache.of(fn).entries[key]
            entry.args = pending.args
            if self._adaptive and entry.tier is None:
                owner = self._current.target if self._current is not None else "?"
                entry.tier = Tier(owner, pending.key, seconds)

    def _warn_recompiling(self, stats: Any, key: Any, kwargs: dict[str, Any], entries: int) -> None:
        from .cache import RecompilationWarning, changing_keyword

        stats.warned = True
        owner = self._current.target if self._current is not None else "a compiled function"
        new = sum(stats.recent_new)
        message = (f"{owner}: {entries} traces compiled, a new one on {new} of the last "
                   f"{len(stats.recent_new)} calls; {changing_keyword(stats.last_key, key, kwargs)}")
        self._notes.append(message)
        warnings.warn(message, RecompilationWarning, stacklevel=2)

    def _record_compile(self, key: str, seconds: float, trace_seconds: float,
                        shapes: tuple[str, ...], outside: str = "") -> None:
        owner = self._current
        name = owner.target if owner is not None else outside or "(outside SVI and MCMC)"
        self._compilations.append(Compilation(name, key, seconds, trace_seconds, shapes))
        if owner is not None:
            owner.compile_seconds += seconds

    def _trace_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        run = self

        def trace(*args: Any, **kwargs: Any) -> Any:
            """``torch.jit.trace``: time it, and check the new trace before anything uses it."""
            __tracebackhide__ = True
            if not run._active:
                return original(*args, **kwargs)
            before = run._before_trace(args, kwargs)
            start = time.perf_counter()
            try:
                # every tensor read as a Python value is watched: its size or a value, and who read it
                result = call_shallow(watch_reads(run._capture, original), *args, **kwargs)
            finally:
                run._trace_done(before, time.perf_counter() - start)
            run._check_trace(before)
            return result

        return trace

    def _before_trace(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> _TraceStart:
        import pyro
        import torch

        inputs = args[1] if len(args) > 1 else kwargs.get("example_inputs", ())
        if not isinstance(inputs, tuple):
            inputs = (inputs,)
        before = _TraceStart(
            pending=self._pending,
            shapes=tuple(str(tuple(t.shape)) for t in inputs if torch.is_tensor(t)),
            risky=self._capture.risky_count,
            params=set(pyro.get_param_store().keys()),
            # Pyro's HMC/NUTS potential traces a function of this name (pyro/infer/mcmc/util.py)
            potential=getattr(args[0] if args else None, "__name__", "") == compat.POTENTIAL_TRACE_NAME)
        if self._on_progress is not None:
            self._progress(time.perf_counter(), compiling=True)
        if before.pending is not None:
            # Pyro ran the step once eagerly to find its params, drawing random
            # numbers; trace from the state the step started in, then run the
            # trace from it too, so the compiled step draws what an eager one would.
            torch.set_rng_state(before.pending.rng_state)
        return before

    def _trace_done(self, before: _TraceStart, seconds: float) -> None:
        if before.pending is not None:
            before.pending.trace_seconds, before.pending.shapes = seconds, before.shapes
        else:  # HMC/NUTS's potential, or a trace in user code
            plan = self._current
            self._record_compile("potential energy" if isinstance(plan, _MCMCPlan) or before.potential
                                 else "torch.jit.trace", seconds, seconds, before.shapes,
                                 outside="initialize_model" if before.potential else "")
            if isinstance(plan, _MCMCPlan) and self._adaptive and plan.clock.tier is None:
                plan.clock.tier = Tier(plan.target, "potential energy", seconds, unit="sample",
                                       per="per evaluation")

    def _check_trace(self, before: _TraceStart) -> None:
        """Stop before a trace that would be wrong is used: stray params, risky warnings."""
        import pyro
        import torch

        if before.pending is not None:
            torch.set_rng_state(before.pending.rng_state)
            store = pyro.get_param_store()
            stray = sorted(set(store.keys()) - before.params)
            if stray:
                for name in stray:
                    del store[name]
                raise _advice.StrayParamError(
                    f"pyro.param {', '.join(map(repr, stray))} was first created while tracing, "
                    "so the compiled step would hold it as a constant and never train it; "
                    "create every pyro.param on the model's and guide's first call "
                    "(the stray param was removed from the param store)")
        if self.warnings_mode == "error":
            risky = self._capture.risky_since(before.risky)
            if risky:
                first = risky[0]
                raise _advice.RiskyTraceError(
                    f"risky JIT warning at {first.where}: {first.message.splitlines()[0]} "
                    "(the compiled step was not used; fix the line, or run with --warnings capture)")

    def _noted_wrapper(self, note: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
        """For inference the JIT does not apply to: run it as written, and say so once."""

        def make(original: Callable[..., Any]) -> Callable[..., Any]:
            run = self

            def noted(obj: Any, *args: Any, **kwargs: Any) -> Any:
                __tracebackhide__ = True
                if not run._active:
                    return original(obj, *args, **kwargs)
                if note not in run._notes:
                    run._notes.append(note)
                run._as_written += 1  # the ELBO losses it calls run as written too
                try:
                    return original(obj, *args, **kwargs)
                finally:
                    run._as_written -= 1

            return noted

        return make

    # -- MCMC ------------------------------------------------------------------
    def _mcmc_wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        run = self

        def run_mcmc(mcmc: Any, *args: Any, **kwargs: Any) -> Any:
            __tracebackhide__ = True
            if not run._active:
                return original(mcmc, *args, **kwargs)
            return run._mcmc_run(original, mcmc, args, kwargs)

        return run_mcmc

    def _mcmc_run(self, original: Callable[..., Any], mcmc: Any,
                  args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        __tracebackhide__ = True
        import pyro

        kernel = mcmc.kernel
        kernel_name = type(kernel).__name__
        target = self._name_of(mcmc, self._name_of(kernel, f"MCMC({kernel_name})"))
        if self._on_first_use is not None:
            self._on_first_use(mcmc)
        compiled, reason = mcmc_decision(mcmc, self._can_trace)
        if not self.compile:
            compiled, reason = False, "run as written"
        # --auto decides for kernels written with jit_compile=True too: the cell asked it to
        written = reason == "already compiled as written"
        auto = compiled and (not reason or written) and self.auto is not None and kernel.model is not None
        after = f"{kernel_name}(jit_compile=True)" if compiled and not reason else kernel_name
        if compiled and not reason and kernel.model is None:
            after = f"{kernel_name}(potential_fn compiled, from initialize_model in a %%pyrojit cell)"
        if auto:
            after = f"{kernel_name}(jit_compile=True once it pays, --auto)"
            reason = "written with jit_compile=True; --auto decides when" if written else ""
        self._switches[id(mcmc)] = Switch(target, kernel_name, after, compiled, reason)

        local = PatchSet()
        if compiled:
            self._kernels.append(kernel)
        clock = MCMCClock(self._sample_done, num_samples=getattr(mcmc, "num_samples", 0))
        plan = _MCMCPlan(target, clock)
        if self._adaptive and compiled:  # its trace starts no-opt, whatever the last key ran under
            optimize_setter()(False)
        # Pyro turns requires_grad off on every param while tracing the
        # potential and only turns it back on if tracing succeeds
        # (pyro/infer/mcmc/util.py, the jit potential).
        store = pyro.get_param_store()
        grads = {name: p.requires_grad for name, p in store.named_parameters()}
        outer, self._current = self._current, plan
        try:
            if compiled and not compat.jit_compile(kernel) and not auto:
                local.set(kernel, compat.JIT_COMPILE_ATTR, True)
            elif auto and compat.jit_compile(kernel):  # its setup would trace at once: eager until it pays
                local.set(kernel, compat.JIT_COMPILE_ATTR, False)
            wrap = None
            if auto:
                assert self.auto is not None
                wrap = potential_until_it_pays(self.auto, kernel, clock, target, self._tallies)
            clock.instrument(local, kernel, wrap)
            result = original(mcmc, *args, **kwargs)
            clock.summarise(mcmc)
            return result
        except BaseException:
            for name, p in store.named_parameters():
                if name in grads and p.requires_grad != grads[name]:
                    p.requires_grad_(grads[name])
            raise
        finally:
            self._current = outer
            local.restore()
            self._mcmc_runs.append(clock.record(target, kernel_name, compiled,
                                                plan.compile_seconds))
            if clock.tier is not None and clock.tier.state != "no-opt":
                self._tiers_changed[id(clock.tier)] = clock.tier
            maker = potential_maker(kernel.potential_fn)
            if compat.compiled_potential(maker) is not None:
                # one entry per potential; every evaluation after setup is a hit
                self.session.cache.hit(maker, "potential", compile_seconds=plan.compile_seconds or None,
                                       calls=clock.potential_evals)

    def compiled_objects(self) -> list[Any]:
        """The Jit* ELBOs and HMC/NUTS kernels this run compiled with: what the cell's caches hold."""
        found: list[Any] = []
        plans: list[_SVIPlan | _direct.LossPlan] = [*self._svi_plans.values(), *self._loss_plans.values()]
        for plan in plans:
            if plan.compiled and plan.runner is not None and all(plan.runner is not f for f in found):
                found.append(plan.runner)
        return found + self._kernels

    # -- the report ------------------------------------------------------------
    def snapshot(self, exc: BaseException | None = None) -> JitReport:
        """The report of what has run so far."""
        svi_runs = tuple(
            SVIRun(target=p.target, model=label(p.svi.model), guide=label(p.svi.guide),
                   elbo=type(p.runner).__name__ if p.runner is not None else p.elbo_name,
                   steps=p.steps(), diverges=p.diverges)
            for p in self._svi_plans.values())
        notes = list(self._notes)
        for target, stats in self._past_cap.values():
            notes.append(f"{target}: {stats.eager_past_cap} calls with new keys ran eager "
                         f"past --max-entries {self.max_entries}")
        if not self._switches and exc is None:
            notes.append("the cell ran no SVI step, no ELBO loss and no MCMC run: nothing was compiled")
        error = None
        if exc is not None:
            first_line = str(exc).splitlines()[0] if str(exc) else ""
            error = type(exc).__name__ + (f": {first_line}" if first_line else "")
        return JitReport(
            switches=tuple(self._switches.values()),
            svi_runs=svi_runs,
            mcmc_runs=tuple(self._mcmc_runs),
            compilations=tuple(self._compilations),
            warmup=tuple(self._warmups),
            warnings=self._capture.captured(),
            notes=tuple(notes),
            error=error,
            advice=self._advice if exc is not None else None,
            seconds=(self._end or time.perf_counter()) - self._start,
            executor=self._executor.name if self._compilations or self._tallies else "",
            executor_choices=tuple(ExecutorChoice(t.owner, t.key, t.state, t.why)
                                   for t in self._tiers_changed.values()),
            auto=tuple(self.auto.decision(t) for t in self._tallies.values()) if self.auto else (),
            loss_runs=tuple(p.record() for p in self._loss_plans.values()),
        )


def _targets() -> list[tuple[Any, str]]:
    """Everything a run wraps at class or module level."""
    import pyro.ops.jit
    import torch
    from pyro.infer import SVI, Predictive
    from pyro.infer.mcmc import MCMC
    return [(SVI, "step"), (MCMC, "run"), (torch.jit, "trace"),
            (pyro.ops.jit.CompiledFunction, "__call__"), (SVI, "evaluate_loss"), (Predictive, "forward"),
            (compat.potential_maker_class(), "get_potential_fn")]


def heal_leftovers() -> list[str]:
    """Undo wrappers left by a run whose cleanup never ran; the names healed."""
    if PROCESS.runs:  # a wrapper of an active run is no leftover
        return []
    from . import executor as _executor

    healed = [f"{getattr(owner, '__name__', owner)}.{name}"
              for owner, name in _targets() if heal(owner, name)]
    healed += _direct.heal()
    if _executor.heal():
        healed.append("the TorchScript executor settings")
    return healed


def compiled(
    options: RunOptions | None = None,
    *,
    names: Mapping[str, Any] | None = None,
    session: Session | None = None,
    **fields: Any,
) -> JitRun:
    """Run the Pyro inference inside a ``with`` block compiled, as ``%%pyrojit`` does.

    Every ``SVI.step`` whose ELBO has a Jit* counterpart runs compiled (warmed
    up first), and so does every call of such an ELBO's ``differentiable_loss``,
    ``loss`` or ``loss_and_grads`` made in the block (a custom objective, a
    ``PyroModule`` trained with a torch optimizer); every ``MCMC.run`` with an
    HMC/NUTS kernel runs with
    ``jit_compile=True``; JIT warnings are captured, and each risky one is
    warned once, as a :class:`RiskyTraceWarning` at the user's line, when the
    block ends. After the block, objects behave as written again and
    ``run.report`` says what happened.

    Parameters
    ----------
    options : RunOptions, optional
        How to run; any field of :class:`~pyro_jitmagic.RunOptions` can also be
        given by name (``warmup``, ``warnings``, ``auto``, ``executor``,
        ``max_entries``, ``seed``), as the magic's flags are. ``auto`` may be an
        :class:`AutoPolicy`: ``--auto`` with that policy instead of the session's.
    names : mapping, optional
        A namespace used to name objects in the report (``"svi"``); by default
        the calling module's globals.
    session : Session, optional
        Where compiled companions are kept between runs (the process's default).

    Examples
    --------
    >>> with pyro_jitmagic.compiled() as run:          # doctest: +SKIP
    ...     for _ in range(1000):
    ...         svi.step(data)
    >>> print(run.report)                               # doctest: +SKIP
    """
    if names is None:  # name objects as the calling script does
        names = sys._getframe(1).f_globals
    return JitRun(options, names=names, session=session, announce=True, **fields)
