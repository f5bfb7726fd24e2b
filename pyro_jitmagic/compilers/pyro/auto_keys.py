"""``--auto`` on Pyro's keys: whether each call of a compiled function's key runs compiled or eager.

Every call of a key under ``--auto`` asks :meth:`AutoKeys.called`, which books the call and takes
the policy's decision (:meth:`~...policy.auto.AutoPolicy.decide_svi`). A step of Pyro's route may
ask before it starts (:meth:`AutoKeys.ahead_of`): a step whose key runs eager then runs on the
user's ELBO at once, without starting on Pyro's JIT. A key that runs eager for the rest of the
cell whatever its steps take lets its route's steps take the short way
(:meth:`AutoKeys.eager_for_the_cell`), booked as the long way books them.
"""

from __future__ import annotations

import hashlib
from typing import Any, Protocol

from ...compat import jit as compat
from ...policy.books import CellSteps, Tally
from ...run.context import RunContext
from .caches import describe_key
from .guarded import TraceWatch
from .routes import PyroRoute


class Calls(Protocol):
    """What of the run's calls of compiled functions (``calls.KeyCalls``) the decisions read and note."""

    route: PyroRoute | None  # the route whose step is in progress
    auto_step: tuple[Tally, str] | None  # what this step's call did, noted here
    watch: TraceWatch


class AutoKeys:
    """The run's ``--auto`` decisions for the keys of Pyro's compiled functions, call by call."""

    def __init__(self, ctx: RunContext, calls: Calls) -> None:
        self.ctx, self.calls = ctx, calls
        self.run_calls: dict[int, int] = {}  # calls of each compiled function in this run
        self.ahead: tuple[int, Any] | None = None  # the call whose decision ahead_of took

    def called(self, fn: Any, key: Any, traced: Any) -> bool:
        """A call of ``key`` (``traced``: its trace, or None): True when it runs compiled. Noted for
        the step (``calls.auto_step``), unless :meth:`ahead_of` decided it before the step began."""
        route, ahead, self.ahead = self.calls.route, self.ahead, None
        if route is not None:
            route.last_call = (fn, key)
        return ahead == (id(fn), key) or self.decide(fn, key, traced)

    def ahead_of(self, route: PyroRoute, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        """Whether a step of ``route`` runs eager, decided before it starts from the key its last
        step called with the same arguments; the step then runs on the user's ELBO at once.
        Starting it on Pyro's JIT only to be sent eager from inside raised an exception through
        Pyro's frames on every such step (docs/real-models.md, What the climb adds to a short cell).
        False when it cannot tell or the key runs compiled: the compiled call then takes this
        decision, not one of its own."""
        last, before = route.last_call, route.last_args
        route.last_call = route.last_args = None
        if self.ctx.auto is None or not self.ctx.active:
            return False
        try:
            mine = compat.fast_key(args, kwargs)  # (Pyro's Jit* ELBOs key on these, and on the SVI's
            hash(mine)  # model and guide)
        except TypeError:
            return False  # (a key Pyro hashes: the call decides)
        route.last_args = mine
        if last is None or before != mine or (kwargs and any(map(_is_tensor, kwargs.values()))):
            return False
        fn, key = last
        if self.calls.watch.runs_eager(fn, key) or not self.decide(fn, key, fn.compiled.get(key)):
            route.last_call = last  # (this step calls nothing: the next one decides as this one)
            return True
        self.ahead = (id(fn), key)
        return False

    def decide(self, fn: Any, key: Any, traced: Any) -> bool:
        """Whether this call of ``key`` runs compiled (True) or eager, noted for the step."""
        policy, tallies = self.ctx.auto, self.ctx.recorder.tallies
        assert policy is not None
        tally = tallies.get((id(fn), key))
        if tally is None:
            owner = self.ctx.recorder.target("(outside SVI and MCMC)")
            book = policy.book(fn, key, "svi", owner, describe_key(key))
            if traced is not None and book.state == "eager":  # compiled in an earlier, plain cell
                book.state = "compiled"
            book.code = book.code or trace_code(self.ctx.recorder.current, book.key)
            tally = tallies[(id(fn), key)] = Tally(book, compiled_before=traced is not None)
            book.stays = None  # (what held for the last cell)
        book = tally.book
        book.function.calls += 1
        done = self.run_calls.get(id(fn), 0)
        self.run_calls[id(fn)] = done + 1
        if traced is not None and not policy.step_down(book):
            self.calls.auto_step = (tally, "compiled")
            return True
        unusable = policy.unusable.get(book.code) if traced is None and book.code else None
        if unusable is not None:
            book.why = f"stayed eager: a trace of the same code in an earlier run was unusable ({unusable})"
        elif traced is None and not book.stepped_down and policy.decide_svi(
                book, book.function.calls, _cell_left(self.ctx, book.owner, tally, done),
                left=_steps_left(self.ctx, book.owner, done)):
            book.state = "compiled"
            self.calls.auto_step = (tally, "compile")
            return True
        book.state = "eager"  # (also when its traces were cleared: it earns them again)
        self.calls.auto_step = (tally, "eager")
        return False

    def eager_for_the_cell(self, route: PyroRoute) -> tuple[Any, Tally] | None:
        """The compiled function and tally of the key ``route``'s last step called, when that key
        runs eager for the rest of the cell whatever its steps take (its trace is unusable for its
        code, it runs eager for the run, it stepped down, or its last decision holds for the cell);
        else None."""
        policy, last = self.ctx.auto, route.last_call
        if policy is None or last is None:
            return None
        fn, key = last
        tally = self.ctx.recorder.tallies.get((id(fn), key))
        if tally is None:
            return None
        book = tally.book
        if not (self.calls.watch.runs_eager(fn, key) or book.stepped_down):
            if fn.compiled.get(key) is not None:
                return None
            if not ((book.code and book.code in policy.unusable) or book.stays == policy.learned):
                return None
        return fn, tally

    def unusable(self, route: PyroRoute, why: str) -> None:
        """The trace of the key ``route``'s last step called met a limit of Pyro's JIT: a later run of
        the same code does not build it (the ELBO a cell makes anew each run is not the same object)."""
        policy, last = self.ctx.auto, route.last_call
        tally = self.ctx.recorder.tallies.get((id(last[0]), last[1])) if last is not None else None
        if policy is not None and tally is not None and tally.book.code:
            policy.unusable[tally.book.code] = why

    def eager_booked(self, fn: Any, tally: Tally, seconds: float) -> None:
        """An eager step of a key taken the short way (:meth:`eager_for_the_cell`), counted as the
        long way counts it."""
        tally.book.function.calls += 1
        self.run_calls[id(fn)] = self.run_calls.get(id(fn), 0) + 1
        tally.add("eager", seconds, 0)


def trace_code(plan: Any, described: str) -> str:
    """What a key's trace is a trace of, across runs: the model's and guide's code of ``plan`` (the SVI
    or the loss call in progress), the ELBO's class and the key in words."""
    from ...wholestep.memory import code_digest

    head: tuple[Any, ...] = getattr(plan, "head", ())
    if not head:
        return ""  # (called outside an SVI step or a loss call: nothing to know it by)
    if len(head) == 1:  # an SVI
        svi = head[0]
        head = (svi.model, svi.guide, type(getattr(svi.loss_and_grads, "__self__", svi.loss)).__name__)
    parts = [code_digest(part) if callable(part) else str(part) for part in head]
    return hashlib.sha256("|".join([*parts, described]).encode()).hexdigest()[:32]


def _cell_left(ctx: RunContext, owner: str, tally: Tally, done: int) -> tuple[float, int] | None:
    """(steps this key is expected to take in the rest of the cell, the cell's total) when
    the cell's loops say how many steps its SVI takes (:mod:`...policy.loops`): the share of the
    steps left that this key has had of the run's so far."""
    total = ctx.step_counts.get(owner)
    if not total:
        return None
    return CellSteps(total, done).left_for(tally.eager_steps + tally.compiled_steps), total


def _steps_left(ctx: RunContext, owner: str, done: int) -> int | None:
    """The steps left of the cell's total for ``owner`` (None when its loops do not say)."""
    total = ctx.step_counts.get(owner)
    return max(total - done, 0) if total else None


def _is_tensor(value: Any) -> bool:
    import torch

    return isinstance(value, torch.Tensor)
