"""Every call of one of Pyro's compiled functions while a run is active (``CompiledFunction.__call__``).

Pyro keeps one trace per cache key: the number of positional arguments and the keyword values. A
call with a new key is the compile: timed, recorded, and started from the random state of the step
it replaces, since Pyro first runs that step eagerly to find its params. A call with a known key is
a hit, run without the param-finding handlers a trace never needs. When climbing, a key runs eager
until compiling it pays (:class:`~...policy.auto.AutoPolicy`); a key past ``--max-entries`` runs
eager; a key that keeps changing is warned of (:class:`~...run.cache_stats.RecompilationWarning`).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from ...compat import jit as compat
from ...guards import Sentinel, World, outside_states
from ...patch import PatchSet
from ...policy.auto import LEARN_AFTER
from ...policy.books import Tally
from ...run import advice
from ...run.cache_stats import EntryStats, RecompilationWarning
from ...run.context import RunContext
from ...wholestep.writes import KeptBuffers
from .auto_keys import AutoKeys
from .caches import changing_keyword, describe_key
from .executor import ExecutorTrial, optimize_setter
from .guarded import TraceWatch, arg_layout
from .routes import PyroRoute


@dataclass
class PendingCompile:
    """A ``CompiledFunction`` call that is building a trace for a new key."""

    key: str
    rng_state: Any
    outer: PendingCompile | None = None
    start: float = 0.0
    trace_seconds: float = 0.0
    shapes: tuple[str, ...] = ()
    args: tuple[Any, ...] = ()  # what the positional arguments were: shapes, or type names
    world: World | None = None  # what the model and guide read from outside, as the trace began
    layout: Any = None  # the positional arguments' layouts (see arg_layout)


class KeyStep(NamedTuple):
    """What one step's call of a compiled function did: --auto's (tally, "eager", "compile" or
    "compiled"), and (executor trial, function, key) under the adaptive executor; None where none.
    ``book`` gives them the step's time once it is measured."""

    calls: KeyCalls
    auto: tuple[Tally, str] | None
    trial: tuple[ExecutorTrial, Any, Any] | None

    @property
    def mode(self) -> str | None:
        return self.auto[1] if self.auto is not None else None

    def book(self, seconds: float, step: int) -> None:
        self.calls.book(self, seconds, step)


class _FirstCall:
    """Stands in for a compiled function's Python function while Pyro compiles a key, to keep
    Pyro's eager first run of it (which finds the params): its result, the random state after
    it, and whether it created params."""

    def __init__(self, fn: Callable[..., Any], store: Any, world: World | None) -> None:
        self.fn = fn
        self._store = store
        self._known = set(store.keys())
        self._world = world
        self.result: Any = None
        self.rng: Any = None
        self.outside: Any = None  # numpy's and Python's random states after it
        self.created_params = False
        #: the buffers of the modules it ran (a BatchNorm's running statistics), as it left them:
        #: the trace and the traced call write them again, and the step is this one run
        self.wrote = KeptBuffers(None)
        self.moved: str | None = None  # those it changed, in words

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        __tracebackhide__ = True
        if self.rng is not None:  # the trace's own calls
            return self.fn(*args, **kwargs)
        import torch

        before = KeptBuffers(self._world)
        self.result = self.fn(*args, **kwargs)
        self.moved = before.moved()
        self.wrote = KeptBuffers(self._world)
        self.rng = torch.get_rng_state()
        self.outside = outside_states(self._world)
        self.created_params = not self._known.issuperset(self._store.keys())
        return self.result


class KeyCalls:
    """The calls of Pyro's compiled functions in one run, key by key."""

    def __init__(self, ctx: RunContext, adaptive: bool) -> None:
        self.ctx = ctx
        self.adaptive = adaptive
        self.pending: PendingCompile | None = None  # the compile in progress, innermost
        # (compiled function, key) whose next call checks that its trace draws what eager draws
        self._verify: set[tuple[int, Any]] = set()
        # the route whose step is in progress, and what its call of a compiled function did: --auto's
        # (tally, how it ran), and its key's executor trial (read by the route when the step returns)
        self.route: PyroRoute | None = None
        self.auto_step: tuple[Tally, str] | None = None
        self.trial_step: tuple[ExecutorTrial, Any, Any] | None = None
        self.auto = AutoKeys(ctx, self)  # --auto: each key's decision, call by call
        self.watch = TraceWatch(ctx, lambda: self.route)  # what each trace assumed, keys sent eager
        self.watch.unusable = self._unusable

    def begin(self, route: PyroRoute) -> PyroRoute | None:
        """A step of ``route`` begins: what an earlier call noted is forgotten. Returns the route of
        the step around it (a step inside a step), for :meth:`end`."""
        outer, self.route = self.route, route
        self.auto_step = self.trial_step = None
        return outer

    def end(self, outer: PyroRoute | None) -> KeyStep:
        """The step ends: what its call of a compiled function did, for the route's
        :class:`~...run.route.Ran`."""
        took = KeyStep(self, self.auto_step, self.trial_step)
        self.route, self.auto_step, self.trial_step, self.auto.ahead = outer, None, None, None
        return took

    def wrapper(self, original: Callable[..., Any]) -> Callable[..., Any]:
        """The stand-in for ``CompiledFunction.__call__``."""
        import pyro

        calls, ctx, cache, watch, auto = self, self.ctx, self.ctx.session.cache, self.watch, self.auto
        param: Any = pyro.param
        set_optimize = optimize_setter()
        fast_key, hashed_key, param_names = compat.fast_key, compat.hashed_key, compat.param_names

        def call(fn: Any, *args: Any, **kwargs: Any) -> Any:
            """``CompiledFunction.__call__``: count hits; time a new key's first call as its compile."""
            __tracebackhide__ = True
            if not ctx.active:
                return original(fn, *args, **kwargs)
            # Pyro's key: the keyword values themselves when hashable, which is the fast
            # common case; else Pyro's own hashing (lists, dicts, argparse.Namespace by value)
            key = fast_key(args, kwargs)
            try:
                traced = fn.compiled.get(key)
            except TypeError:
                try:
                    key = hashed_key(args, kwargs)
                except TypeError as exc:  # no key Pyro can compile by: eager, as eager Pyro runs it
                    watch.unkeyable(exc, kwargs)
                    return watch.eager(fn, args, kwargs)
                traced = fn.compiled.get(key)
            if watch.runs_eager(fn, key) or watch.tensor_keyword(kwargs):
                return watch.eager(fn, args, kwargs)
            if ctx.auto is not None and not auto.called(fn, key, traced):
                return watch.eager(fn, args, kwargs)  # --auto: eager while that is cheaper
            if traced is None:
                return calls._compile(original, fn, key, args, kwargs)
            if calls._verify and (id(fn), key) in calls._verify:
                calls._verify.discard((id(fn), key))
                return calls._verified_call(fn, key, traced, args, kwargs)
            stats = cache.of(fn)
            stats.recent_new.append(False)
            stats.last_key = key
            entry = stats.entries.get(key)
            if entry is not None:
                if (entry.guards is not None and not entry.guards.holds()) or (
                        entry.layout is not None and arg_layout(args) != entry.layout):
                    return calls._guard_failed(original, fn, key, entry, args, kwargs)
                entry.hits += 1
                entry.last_hit = time.time()
                tier = entry.trial
                if tier is not None and calls.adaptive:
                    set_optimize(tier.optimize)
                    calls.trial_step = (tier, fn, key)
                if entry.sentinel is not None and entry.sentinel.due():
                    return watch.checked_call(fn, key, traced, args, kwargs)
            # What Pyro does on a hit, less its poutine.block/poutine.trace pair:
            # those only look for params created by the call, and a traced
            # function runs no Python, so they never see any.
            try:
                return traced(*[param(name).unconstrained() for name in param_names(fn)], *args)
            except Exception as exc:  # TorchScript's own check of the inputs
                calls._advise_call(exc, fn, key, args)
                raise

        return call

    def _compile(self, original: Callable[..., Any], fn: Any, key: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
        """A call with a new key: Pyro's own call compiles it, started from the step's random state."""
        __tracebackhide__ = True
        import pyro
        import torch

        if self._past_max_entries(fn):  # Pyro's uncompiled function, uncached
            if self.auto_step is not None:
                self.auto_step = (self.auto_step[0], "eager")
            return self.watch.eager(fn, args, kwargs)
        pending = self._before_compile(fn, key, args, kwargs)
        first = _FirstCall(fn.fn, pyro.get_param_store(), pending.world)
        local = PatchSet()
        risky, warned = self.ctx.capture.risky_count, self.ctx.capture.checkpoint()
        try:
            local.set(fn, "fn", first)
            result = original(fn, *args, **kwargs)  # from this frame: see RunContext.wrap
        except Exception as exc:
            if first.rng is None or not self.watch.limit_met(exc, fn, key, args, first.rng, first.outside,
                                                              pending.world, warned):
                raise
            return first.result
        finally:
            local.restore()
            first.wrote.restore()
            self._after_compile(fn, key, pending)
        frozen = self.watch.frozen(pending.world, first.outside, risky)
        if frozen is None and first.moved:
            # a trace holds a module's buffers as constants: an integer one (a BatchNorm's count of
            # batches) as a copy, which its calls never change, and a buffer replaced as the one it saw
            frozen = (f"it changes {first.moved} in place on every step, which a trace of Pyro's JIT "
                      "stops doing; the whole step (--backend step) compiles it")
        if frozen is not None and first.rng is not None:
            # the trace holds what eager reads afresh: the step is its eager first run, and the key
            # runs eager from now on
            fn.compiled.pop(key, None)
            torch.set_rng_state(first.rng)
            self.watch.eager_from_now(fn, key, frozen)
            return first.result
        if first.rng is not None and not torch.equal(torch.get_rng_state(), first.rng):
            # The trace drew other random numbers than Pyro's eager first run of the step.
            if first.created_params:  # their initial values drew them: eager's step is the step
                torch.set_rng_state(first.rng)
                self._verify.add((id(fn), key))
                return first.result
            if self.watch.draws_part(fn, key):  # --auto keeps eager's stream: the step is eager's
                fn.compiled.pop(key, None)
                torch.set_rng_state(first.rng)
                return first.result
        return result

    def _unusable(self, why: str) -> None:
        """Under --auto, a trace just built cannot be used, for what the code does (a read it would
        freeze, a draw outside torch, a draw it drops): a later run of the same code does not build it."""
        if self.auto_step is not None and self.ctx.auto is not None and self.auto_step[0].book.code:
            book = self.auto_step[0].book
            book.state = "eager"
            self.ctx.auto.unusable[book.code] = why

    def _guard_failed(self, original: Callable[..., Any], fn: Any, key: Any, entry: EntryStats,
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The world changed under a trace: trace again for the new one, unless the key keeps doing so
        (then it runs eager for the rest of the run)."""
        __tracebackhide__ = True
        if self.watch.changed(fn, key, entry, args) is not None:
            return self.watch.eager(fn, args, kwargs)
        if self.auto_step is not None:
            self.auto_step = (self.auto_step[0], "compile")
        return self._compile(original, fn, key, args, kwargs)

    def _advise_call(self, exc: Exception, fn: Any, key: Any, args: tuple[Any, ...]) -> None:
        """A trace refused a call's arguments: compare them with what the trace was compiled for."""
        entry = self.ctx.session.cache.of(fn).entries.get(key)
        text = advice.advise_call(exc, args, entry.args if entry is not None else ())
        if text is not None:
            advice.attach(exc, text)
            advice.at_users_line(exc)
            self.ctx.recorder.advice = text

    # -- the executor trials, step by step -----------------------------------------
    def book(self, took: KeyStep, seconds: float, step: int) -> None:
        """A step's time, once measured, to its key's --auto tally and executor trial."""
        if took.auto is not None:
            tally, mode = took.auto
            tally.add(mode, seconds, step)
            if mode == "compiled" and tally.book.compiled_calls == LEARN_AFTER:
                assert self.ctx.auto is not None
                self.ctx.auto.learn(tally.book)  # the next keys' decisions use this compile's cost
        if took.trial is not None:
            trial, fn, key = took.trial
            if trial.after_step(seconds, step):
                self.ctx.recorder.executor_trials[id(trial)] = trial
                if trial.drop:  # its optimised trace was slower: the next call compiles it again, no-opt
                    trial.drop = False
                    fn.compiled.pop(key, None)

    # -- compiling a key -------------------------------------------------------------
    def _past_max_entries(self, fn: Any) -> bool:
        """A call with a new key: True when ``fn`` holds --max-entries traces already (it runs eager)."""
        max_entries = self.ctx.options.max_entries
        if max_entries is None or len(fn.compiled) < max_entries:
            return False
        stats = self.ctx.session.cache.of(fn)
        stats.recent_new.append(True)
        stats.eager_past_cap += 1
        self.ctx.recorder.past_cap[id(fn)] = (self.ctx.recorder.target(), stats)
        return True

    def _verified_call(self, fn: Any, key: Any, traced: Any, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
        """A key whose first step drew random initial values: is its compiled step's draw eager's?

        Its step runs eagerly first (only to count the random numbers it draws), then compiled
        from the same random state, as every later step will.
        """
        import pyro
        import torch

        param: Any = pyro.param
        start = torch.get_rng_state()
        buffers = KeptBuffers(self.watch.world())
        eager_result = fn.fn(*args, **kwargs)
        eager = torch.get_rng_state()
        torch.set_rng_state(start)
        buffers.restore()  # (a module's buffers: the traced call writes them, once)
        result = traced(*[param(name).unconstrained() for name in compat.param_names(fn)], *args)
        if not torch.equal(torch.get_rng_state(), eager) and self.watch.draws_part(fn, key):
            fn.compiled.pop(key, None)
            torch.set_rng_state(eager)
            return eager_result
        return result

    def _before_compile(self, fn: Any, key: Any, args: tuple[Any, ...],
                        kwargs: dict[str, Any]) -> PendingCompile:
        """A call with a new key is about to compile."""
        import torch

        stats = self.ctx.session.cache.of(fn)
        stats.recent_new.append(True)
        if stats.keeps_recompiling(len(fn.compiled) + 1):
            _warn_recompiling(self.ctx, stats, key, kwargs, len(fn.compiled) + 1)
        stats.last_key = key
        if self.adaptive:  # a new trace starts no-opt, whatever the last key ran under
            optimize_setter()(False)
        pending = PendingCompile(describe_key(key), torch.get_rng_state(), outer=self.pending,
                                 args=advice.describe_args(args), world=self.watch.world(),
                                 layout=arg_layout(args))
        self._mark_start(pending.rng_state)
        self.pending = pending
        pending.start = self.ctx.recorder.clock()
        return pending

    def _mark_start(self, rng: Any) -> None:
        """A key of the step in progress starts compiling: keep what to go back to, should it meet
        a limit of Pyro's JIT (its state at the step's start: the compiled loss is the step's first
        work), until a compile of its succeeds."""
        route = self.route
        if route is not None and route.start is None and not route.compiled_once:
            import pyro

            route.start = (rng, set(pyro.get_param_store().keys()), self.ctx.capture.checkpoint())

    def _after_compile(self, fn: Any, key: Any, pending: PendingCompile) -> None:
        recorder, cache = self.ctx.recorder, self.ctx.session.cache
        seconds = recorder.clock() - pending.start
        self.pending = pending.outer
        # Pyro's first call for a key runs the function eagerly to find its
        # params, traces it, then runs the trace (when the executor optimises
        # it): all of it is the price of compiling.
        if key in fn.compiled:
            recorder.record_compile(pending.key, seconds, pending.trace_seconds, pending.shapes)
            route = self.route
            if route is not None:
                route.start, route.compiled_once = None, True
            cache.hit(fn, key, compile_seconds=seconds)
            entry = cache.of(fn).entries[key]
            entry.args = pending.args
            entry.guards, entry.sentinel = self.watch.guards(pending.world), Sentinel()
            entry.layout = pending.layout
            if self.adaptive and entry.trial is None:
                entry.trial = ExecutorTrial(recorder.target(), pending.key, seconds)


def _warn_recompiling(ctx: RunContext, stats: Any, key: Any, kwargs: dict[str, Any], entries: int) -> None:
    """A key that keeps changing: said once, in the notes and as a RecompilationWarning."""
    stats.warned = True
    owner = ctx.recorder.target("a compiled function")
    new = sum(stats.recent_new)
    message = (f"{owner}: {entries} traces compiled, a new one on {new} of the last "
               f"{len(stats.recent_new)} calls; {changing_keyword(stats.last_key, key, kwargs)}")
    ctx.recorder.notes.append(message)
    warnings.warn(message, RecompilationWarning, stacklevel=3)
