"""What each of Pyro's traces assumed of the world, and what a call does when that no longer holds.

A trace freezes what the model and guide read from outside their arguments (a global, a closure
variable, Pyro's validation flag) and its arguments' shapes, though Pyro keys it only on their
number and the keyword values. :class:`TraceWatch` guards those assumptions per trace
(:mod:`pyro_jitmagic.guards`). A key whose guards fail traces again. One that keeps doing so, or
whose trace froze a draw outside torch (or, when climbing, a value the user's code read), runs
eager for the rest of the run, and the report says why.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ...compat import jit as compat
from ...guards import (
    Change,
    GuardBuilder,
    Guards,
    Recompiles,
    World,
    agree,
    outside_states,
    read_world,
    states_equal,
)
from ...run import advice
from ...run.context import RunContext
from ...run.recorder import StepPlan
from ...wholestep.writes import KeptBuffers
from . import elbos
from .caches import describe_key
from .routes import EagerInstead, PyroRoute

if TYPE_CHECKING:
    from ...run.cache_stats import EntryStats


def arg_layout(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a trace assumes of its positional arguments (Pyro keys it on their number only): each
    tensor's shape, dtype and strides, each other value's type."""
    import torch

    return tuple((a.shape, a.dtype, a.stride()) if isinstance(a, torch.Tensor) else type(a) for a in args)


class TraceWatch:
    """The guards of one run's calls of Pyro's compiled functions, and the keys they sent eager."""

    def __init__(self, ctx: RunContext, route: Callable[[], PyroRoute | None]) -> None:
        self.ctx = ctx
        self.route = route  # the Pyro route whose step is in progress, if any
        # keys that run eager for the rest of the run, and why; what made each key trace again
        self.eager_keys: dict[tuple[int, Any], str] = {}
        self._recompiles: dict[tuple[int, Any], Recompiles] = {}
        #: told why, when a key's trace cannot be used for what the code does (not for what the
        #: data or the world did): --auto then builds no trace of the same code again
        self.unusable: Callable[[str], None] = lambda why: None

    # -- what a new trace assumes ------------------------------------------------------
    def world(self) -> World | None:
        """What the model and guide of the step in progress read from outside their arguments."""
        plan = self.ctx.recorder.current
        if not isinstance(plan, StepPlan):
            return None  # (a trace outside a step: an HMC/NUTS potential, built for one run)
        holder = plan.holds[0]
        roots = (holder.model, holder.guide) if not plan.method else plan.head[:2]
        return read_world(roots, self.ctx.capture.name_location)

    @staticmethod
    def guards(world: World | None) -> Guards | None:
        """What a new trace assumed: the world's values as they are now, and the modes it ran in."""
        if world is None:
            return None
        builder = GuardBuilder()
        builder.world(world)
        builder.modes()
        return builder.build()

    def frozen(self, world: World | None, outside_after_first: Any, risky: int) -> str | None:
        """What a new trace froze that eager reads afresh, if anything: a random draw outside torch
        (numpy's, Python's: its stream did not move as eager's does), or, under ``--auto``, a value
        the user's code read (a risky warning: ``--backend pyro`` keeps Pyro's own behaviour and names
        it in red)."""
        from ...wholestep.capture import restore_outside_states

        if world is not None and outside_after_first is not None and not states_equal(
                outside_after_first, outside_states(world)):
            restore_outside_states(outside_after_first, world)  # as eager's one run of the step left them
            where = "; ".join(str(d) for d in world.draws) or "in the model or guide"
            return (f"it draws random numbers outside torch ({where}), which a trace would repeat on every "
                    "step; draw with torch (torch.randint, torch.randperm) to compile it")
        if self.ctx.auto is not None:
            found = self.ctx.capture.risky_since(risky)
            if found:
                read = found[0]
                return (f"its trace reads a value at {read.where}"
                        + (f" ({read.source})" if read.source else "")
                        + ", which a trace would freeze")
        return None

    def limit_met(self, exc: Exception, fn: Any, key: Any, args: tuple[Any, ...], rng: Any, outside: Any,
                  world: World | None, warned: Any) -> bool:
        """True when tracing failed on a limit of Pyro's JIT (its Jit* ELBOs fail on it by hand too).

        Pyro's eager first run of the step, which left the random states ``rng`` and ``outside``,
        then stands as the step: its params are made as eager makes them, its draws are eager's. The
        route (a limit of the ELBO) or the key (an argument no trace takes: a float, a numpy array)
        runs eager from now on. False for any other failure, and where the step cannot run eager
        instead (a Jit* ELBO the user built keeps Pyro's behaviour)."""
        import pyro
        import torch

        from ...wholestep.capture import restore_outside_states

        plan = self.ctx.recorder.current
        route = self.route()
        if route is None or not route.eager_instead:
            return False
        why = elbos.cannot_compile(route.elbo, exc, pyro.get_param_store().keys())
        untraceable = None if why is not None else advice.untraceable_argument(exc, args)
        if why is None and untraceable is None:
            return False
        fn.compiled.pop(key, None)
        torch.set_rng_state(rng)
        if world is not None and outside is not None:
            restore_outside_states(outside, world)
        self.ctx.capture.rollback(warned)  # about a trace that is not used
        if why is None:
            self.eager_from_now(fn, key, untraceable or "")
            return True
        assert isinstance(plan, StepPlan)
        route.give_up(why)
        self.ctx.recorder.switch(plan.key, plan.target, plan.route)
        return True

    # -- calls that run eager ---------------------------------------------------------------
    def runs_eager(self, fn: Any, key: Any) -> bool:
        return bool(self.eager_keys) and (id(fn), key) in self.eager_keys

    def eager(self, fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A call that runs eager: the whole step on the user's own ELBO where the route can (see
        :class:`~.routes.EagerInstead`), else Pyro's uncompiled function."""
        __tracebackhide__ = True
        route = self.route()
        if route is not None and route.eager_instead and route.compiled:
            raise EagerInstead()
        return fn.fn(*args, **kwargs)

    def eager_from_now(self, fn: Any, key: Any, why: str, code: bool = True) -> None:
        """The key runs eager for the rest of the run; the report says why, once. ``code``: because of
        what the code does (told to :attr:`unusable`)."""
        self.eager_keys[(id(fn), key)] = why
        if code:
            self.unusable(why)
        recorder = self.ctx.recorder
        recorder.guard(recorder.target("a compiled function"),
                       f"{describe_key(key)}: ran eager from {position(recorder)}: {why}")

    def draws_part(self, fn: Any, key: Any) -> bool:
        """A new trace draws fewer random numbers than eager (it drops a draw nothing uses: torch.randn
        as the initial value of a pyro.param that exists already). Under ``--auto`` the key runs eager
        from now on, keeping eager's stream until the whole step (which keeps every draw) pays: True;
        Pyro's JIT asked for by name keeps Pyro's behaviour and says so: False."""
        if self.ctx.auto is None:
            self.ctx.recorder.draws_part()
            return False
        self.eager_from_now(fn, key, "its trace drops random draws eager makes (a value drawn and never "
                                     "used, e.g. torch.randn as the initial value of a pyro.param that "
                                     "exists already), so its random stream would part from eager's")
        return True

    def tensor_keyword(self, kwargs: dict[str, Any]) -> bool:
        """A call with a tensor keyword runs eager where it can (the report says why, once): Pyro keys
        a trace on keyword values, a tensor by identity, and holds it as a constant, so every new
        tensor would trace again (``svi.step(x, log_radon=y)``: the whole step takes it as an input)."""
        import torch

        name = next((k for k, v in kwargs.items() if isinstance(v, torch.Tensor)), None)
        route = self.route()
        if name is None or route is None or not route.eager_instead:
            return False
        recorder = self.ctx.recorder
        recorder.guard(recorder.target("a compiled function"),
                       f"calls ran eager: the keyword argument {name} is a tensor, which Pyro's JIT keys "
                       "its traces on (a new trace for each new tensor) and holds as a constant; pass it "
                       "positionally to compile it with Pyro's JIT")
        return True

    def unkeyable(self, exc: TypeError, kwargs: dict[str, Any]) -> None:
        """A call whose keywords Pyro cannot key a trace on runs eager, and the report says why."""
        recorder = self.ctx.recorder
        text = advice.advise(exc, (), kwargs) or str(exc)
        recorder.guard(recorder.target("a compiled function"), f"calls ran eager: {text}")

    # -- a trace whose world changed ----------------------------------------------------------
    def changed(self, fn: Any, key: Any, entry: EntryStats, args: tuple[Any, ...]) -> str | None:
        """The world changed under a trace: its entry is dropped and the report says what changed;
        a storm's reason when the key keeps tracing again (it then runs eager), else None."""
        changes = entry.guards.changes() if entry.guards is not None else []
        changes += _layout_changes(entry.layout, arg_layout(args))
        storm = self._recompiles.setdefault((id(fn), key), Recompiles()).add(changes)
        fn.compiled.pop(key, None)
        entry.guards = entry.sentinel = entry.layout = None
        if storm is not None:
            self.eager_from_now(fn, key, f"it kept tracing again: {storm}", code=False)
            return storm
        recorder = self.ctx.recorder
        recorder.guard(recorder.target("a compiled function"), f"{describe_key(key)}: traced again at "
                       f"{position(recorder)}: " + "; ".join(map(str, changes)))
        return None

    def checked_call(self, fn: Any, key: Any, traced: Any, args: tuple[Any, ...],
                     kwargs: dict[str, Any]) -> Any:
        """A call the sentinel checks: the trace's loss against eager's for the same params and random
        state; a key that disagrees runs eager for the rest of the run."""
        __tracebackhide__ = True
        import pyro
        import torch

        param: Any = pyro.param
        began = time.perf_counter()
        start = torch.get_rng_state()
        buffers = KeptBuffers(self.world())  # (a BatchNorm's statistics: eager's run writes them)
        try:
            with torch.no_grad(), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                eager: Any = _first_value(fn.fn(*args, **kwargs))
        except Exception as exc:  # eager raises where the trace would not (a validation error)
            eager = exc
        after = torch.get_rng_state()
        torch.set_rng_state(start)
        buffers.restore()
        self.ctx.recorder.sentinel_checks += 1
        self.ctx.recorder.sentinel_seconds += time.perf_counter() - began
        result = traced(*[param(name).unconstrained() for name in compat.param_names(fn)], *args)
        value = _first_value(result)
        if not isinstance(eager, Exception) and not torch.equal(torch.get_rng_state(), after):
            # other draws than eager's: the losses can be compared in distribution only
            if not self.draws_part(fn, key):
                return result
            torch.set_rng_state(start)
            buffers.restore()
            return self.eager(fn, args, kwargs)
        if value is None or (not isinstance(eager, Exception) and eager is not None
                             and agree(value, eager, max(abs(value), abs(eager)), _eps(result))):
            return result
        self.ctx.recorder.sentinel_findings += 1
        told = (f"eager raised {type(eager).__name__}" if isinstance(eager, Exception)
                else f"its loss was {value:.6g} where eager computes {eager:.6g} from the same params and "
                     "random draws")
        self.eager_from_now(fn, key, f"the sentinel found its trace wrong: {told}")
        torch.set_rng_state(start)
        buffers.restore()
        return self.eager(fn, args, kwargs)


def position(recorder: Any) -> str:
    """The step (or direct loss call) in progress, in words."""
    plan = recorder.current
    if isinstance(plan, StepPlan):
        return f"{'call' if plan.method else 'step'} {len(plan.raw) + 1}"
    return "a call"


def _first_value(result: Any) -> float | None:
    """A compiled function's loss: its first tensor output's value (None when it has none)."""
    first = result[0] if isinstance(result, tuple) and result else result
    detach = getattr(first, "detach", None)
    if detach is None or first.numel() != 1:
        return None
    return float(detach().item())


def _eps(result: Any) -> float:
    import torch

    first = result[0] if isinstance(result, tuple) and result else result
    dtype = getattr(first, "dtype", torch.float32)
    return float(torch.finfo(dtype if dtype.is_floating_point else torch.float32).eps)


def _layout_changes(before: Any, now: tuple[Any, ...]) -> list[Change]:
    if before is None:
        return []
    found = []
    for i, (then, this) in enumerate(zip(before, now, strict=False), start=1):
        if then == this:
            continue
        what = f"positional argument {i}"
        if not (isinstance(then, tuple) and isinstance(this, tuple)):
            found.append(Change(what, _type(then), _type(this)))
        elif then[0] != this[0]:
            found.append(Change(what, f"shape {tuple(then[0])}", f"shape {tuple(this[0])}"))
        elif then[1] != this[1]:
            found.append(Change(what, str(then[1]), str(this[1])))
        else:
            found.append(Change(what, f"strides {then[2]}", f"strides {this[2]}"))
    return found


def _type(layout: Any) -> str:
    return "a tensor" if isinstance(layout, tuple) else f"a {layout.__name__}"
