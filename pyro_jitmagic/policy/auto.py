"""``--auto``: compile a cache key only when compiling it is expected to pay.

Compiling is a bet: a trace costs a fixed price up front (Pyro's eager call to
find params, the trace, its first run) and pays back a little on every later
call. Whether it pays depends on how many calls follow, which nobody knows in
advance. ``--auto`` decides per compiled function and per cache key, while the
cell runs, from what it measures:

* **SVI keys.** A new key runs eager, and each eager step is timed. It
  compiles as soon as the calls expected to follow would save more than
  compiling it is expected to cost. How many calls will follow is what the
  cell's loops say when they say it (``for i in range(100): svi.step(data)``,
  read by :mod:`.loops`; a key expects its share of the steps left). Otherwise
  nobody knows, so the estimate is that a key will be called as many times
  again as it has been so far, scaled up while its function is young: an SVI
  run is expected to last at least :data:`HORIZON` steps in all, so a key that
  took every one of the first five steps expects about two hundred. The saving per call is the
  key's eager step time less its expected compiled step time (eager over the
  session's measured speedup); the expected compile cost is the key's eager
  step time times the session's *compile ratio*: what compiles have cost so far
  in the session, in eager steps of the key compiled (tracing, like running
  eager, costs per operation, so the ratio carries from one model to another).
  As a safety net when the cell's length is not known, a key also compiles once
  the time spent running it eager reaches its expected compile cost: the
  rent-or-buy rule, which never loses more than that cost against compiling at once. Until the session has
  measured a compile, :data:`PRIOR_COMPILE_STEPS` and :data:`PRIOR_SPEEDUP`
  stand in, and after that they count as one measurement among the
  session's; a key whose compiled steps are not expected to be faster (the
  session's speedup is below :data:`MIN_SPEEDUP`) stays eager.
* **MCMC potential (look ahead).** An MCMC run knows how many samples remain,
  so the potential runs eager while the first samples measure its cost and the
  evaluations per sample, and compiles as soon as the evaluations still to come
  are expected to save more than compiling costs. Late in a run, it never does.

Switching mid-run is safe: an eager call and a compiled call of the same key
compute the same loss, gradients and random draws for the same inputs (the
compiled step starts from the random state the eager step would), which the
tests check step by step.

Everything the decisions learn lives in :class:`AutoPolicy`, one per session,
with the per-key books (:class:`KeyBook`) held weakly by compiled function.
"""

from __future__ import annotations

import statistics
import weakref
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal

from ..records.report import AutoDecision
from ..records.units import plural, seconds
from .tiers import TierBook, TierPolicy, TierTally

Kind = Literal["svi", "potential"]

#: An SVI run is expected to last at least this many steps (calls of its
#: compiled loss) in all. Tutorials and real fits run hundreds to thousands;
#: the rule above is checked against 100 to 5000 in docs/benchmarks.md.
HORIZON = 200
#: Before the session has measured a compile: a compile costs about this many
#: eager steps of the key compiled (with the no-opt executor, the --auto
#: report's "compiling" over its "eager" step came to 7-8 on the simple SVI and
#: 13-15 on the HMM's three lengths here, and about 15 eager evaluations for the
#: NUTS potential's trace). The prior also counts as one
#: measurement among the session's, so that one noisy compile cannot swing
#: the next decisions on its own.
PRIOR_COMPILE_STEPS = {"svi": 12.0, "potential": 15.0}
#: Before the session has measured one: compiled steps are this much faster.
PRIOR_SPEEDUP = {"svi": 2.0, "potential": 1.5}
#: Below this measured speedup a new key is not worth compiling.
MIN_SPEEDUP = 1.1
#: Steps after the compiling one that may still run slow (an optimising
#: executor re-optimises on them): their excess counts toward the compile.
SETTLE = 5
#: SVI: eager steps a key runs before its median step time is trusted (a
#: key's first step also pays one-off costs: Pyro's and torch's caches).
MIN_EAGER_STEPS = 3
#: MCMC: samples to measure eager before looking ahead; how often to look.
MCMC_MEASURE_SAMPLES = 3
MCMC_CHECK_EVERY = 8
#: Medians are taken over at most this many of the latest steps.
RECENT = 50
#: A key's compile is added to what the session expects of the next keys once it
#: has run this many compiled steps (the first ones may be slow).
LEARN_AFTER = 8


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


@dataclass
class FunctionCalls:
    """How many times a compiled function has been called under ``--auto``, all keys together."""

    calls: int = 0


@dataclass
class KeyBook:
    """What one cache key of one compiled function has cost, eager and compiled, in this session."""

    kind: Kind
    owner: str
    key: str
    # seconds of the latest eager steps, and how many there were (a key may stay eager for thousands)
    eager: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    eager_calls: int = 0
    eager_seconds: float = 0.0  # all of them
    compile_step: float | None = None  # seconds of the step that compiled
    settling: list[float] = field(default_factory=list)  # the first SETTLE compiled steps after it
    compiled: deque[float] = field(default_factory=lambda: deque(maxlen=20 * RECENT))  # then the latest
    compiled_calls: int = 0
    state: Literal["eager", "compiled"] = "eager"
    why: str = ""
    function: FunctionCalls = field(default_factory=FunctionCalls)  # shared by its function's keys
    learned: bool = False  # its compile has been added to the session's ratios

    def eager_step(self) -> float | None:
        """Median of the latest eager steps."""
        return _median(list(self.eager))

    def compiled_step(self) -> float | None:
        """Median of the steady compiled steps (of the settling ones while there are no others)."""
        return _median(list(self.compiled) or self.settling)

    def compile_seconds(self) -> float | None:
        """The compiling step and the slow steps right after it, over the steady compiled step."""
        if self.compile_step is None:
            return None
        steady = self.compiled_step()
        if steady is None:
            return self.compile_step
        slow = sum(max(0.0, t - steady) for t in self.settling)
        return max(0.0, self.compile_step - steady) + slow


@dataclass
class Tally:
    """What one key did in one run (a cell)."""

    book: KeyBook
    compiled_before: bool
    eager_steps: int = 0
    compiled_steps: int = 0
    seconds: float = 0.0
    compiled_at: int | None = None  # the run's step (or evaluation) number that compiled

    def add(self, mode: str, seconds: float, step: int) -> None:
        book = self.book
        self.seconds += seconds
        if mode == "eager":
            self.eager_steps += 1
            book.eager.append(seconds)
            book.eager_calls += 1
            book.eager_seconds += seconds
        elif mode == "compile":
            self.compiled_steps += 1
            self.compiled_at = step
            book.compile_step = seconds
        else:
            self.compiled_steps += 1
            book.compiled_calls += 1
            (book.settling if len(book.settling) < SETTLE else book.compiled).append(seconds)


class AutoPolicy:
    """The session's measurements of compile cost and speedup, and the decisions made from them.

    Parameters
    ----------
    horizon : int
        See :data:`HORIZON`.
    prior_compile_steps, prior_speedup : dict, optional
        See :data:`PRIOR_COMPILE_STEPS` and :data:`PRIOR_SPEEDUP`.
    """

    def __init__(self, horizon: int = HORIZON, prior_compile_steps: dict[str, float] | None = None,
                 prior_speedup: dict[str, float] | None = None, tiers: TierPolicy | None = None) -> None:
        self.horizon = horizon
        #: the tiers above Pyro's JIT (the whole step, inductor)
        self.tiers = tiers or TierPolicy(horizon)
        self.prior_compile_steps = {**PRIOR_COMPILE_STEPS, **(prior_compile_steps or {})}
        self.prior_speedup = {**PRIOR_SPEEDUP, **(prior_speedup or {})}
        self._books: weakref.WeakKeyDictionary[Any, tuple[FunctionCalls, dict[Any, KeyBook]]] = (
            weakref.WeakKeyDictionary())
        self._compile_steps: dict[str, list[float]] = {"svi": [], "potential": []}
        self._speedups: dict[str, list[float]] = {"svi": [], "potential": []}

    def book(self, fn: Any, key: Any, kind: Kind, owner: str, describe: str) -> KeyBook:
        """The book of ``key`` of compiled function ``fn`` (made on first use)."""
        function, books = self._books.setdefault(fn, (FunctionCalls(), {}))
        book = books.get(key)
        if book is None:
            book = books[key] = KeyBook(kind, owner, describe, function=function)
        return book

    # -- what the session has learned -----------------------------------------
    def compile_steps(self, kind: Kind) -> tuple[float, bool]:
        """Expected compile cost in eager steps of the key compiled; True when measured."""
        measured = self._compile_steps[kind]
        return statistics.median([*measured, self.prior_compile_steps[kind]]), bool(measured)

    def speedup(self, kind: Kind) -> tuple[float, bool]:
        """Expected eager step time over compiled step time; True when measured."""
        measured = self._speedups[kind]
        return statistics.median([*measured, self.prior_speedup[kind]]), bool(measured)

    def learn(self, book: KeyBook | TierBook) -> None:
        """Add a key's compile cost and speedup to what the session expects of the next keys."""
        if isinstance(book, TierBook):
            return self.tiers.learn(book)
        eager, compiled, cost = book.eager_step(), book.compiled_step(), book.compile_seconds()
        if book.learned or eager is None or compiled is None or cost is None or eager <= 0:
            return
        book.learned = True
        self._compile_steps[book.kind].append(cost / eager)
        if compiled > 0:
            self._speedups[book.kind].append(eager / compiled)

    def expected_compile_seconds(self, book: KeyBook) -> float | None:
        eager = book.eager_step()
        return None if eager is None else eager * self.compile_steps(book.kind)[0]

    # -- decisions ---------------------------------------------------------------
    def decide_svi(self, book: KeyBook, function_calls: int,
                   cell: tuple[float, int] | None = None) -> bool:
        """Whether this key should compile now, its function having been called
        ``function_calls`` times so far (all keys); ``cell``: the calls this key is expected
        to take in the rest of the cell and the cell's total, when its loops say (then the
        look-ahead uses them, and rent-or-buy, a guard against not knowing, is off). Sets
        ``book.why``."""
        eager = book.eager_step()
        if eager is None or book.eager_calls < MIN_EAGER_STEPS:
            book.why = f"ran eager: it takes {MIN_EAGER_STEPS} eager steps to measure a key's step time"
            return False
        speedup, measured = self.speedup("svi")
        if measured and speedup < MIN_SPEEDUP:
            book.why = (f"stayed eager: compiled steps were only {speedup:.2f}x as fast as eager "
                        "in this session")
            return False
        expected = eager * self.compile_steps("svi")[0]
        calls, spent = book.eager_calls, book.eager_seconds
        if cell is not None:
            future, whence = cell[0], f" (the cell's loops run {plural(cell[1], 'step')})"
        else:
            future, whence = calls * max(1.0, self.horizon / max(function_calls, 1)), ""
        saving = future * eager * (1 - 1 / speedup) if speedup > 1 else 0.0
        if saving >= expected:
            book.why = (f"compiled after {plural(calls, 'eager step')}: the ~{future:.0f} calls expected "
                        f"to follow{whence} would save {seconds(saving)}, more than its expected compile "
                        f"cost ({seconds(expected)})")
            return True
        if cell is not None:
            book.why = (f"stayed eager: the ~{future:.0f} calls expected to follow{whence} would save "
                        f"{seconds(saving)}, under its expected compile cost ({seconds(expected)})")
            return False
        if spent >= expected:
            book.why = (f"compiled after {plural(calls, 'eager step')}, which took {seconds(spent)}: "
                        f"its expected compile cost ({seconds(expected)})")
            return True
        book.why = (f"stayed eager: the ~{future:.0f} calls expected to follow would save {seconds(saving)} "
                    f"and its eager steps took {seconds(spent)}, both under its expected compile cost "
                    f"({seconds(expected)})")
        return False

    def decide_potential(self, book: KeyBook, samples_done: int, samples_total: int,
                         evaluations: int) -> bool:
        """Whether the potential should compile now, from the evaluations still to come."""
        eager = book.eager_step()
        if eager is None or samples_done < MCMC_MEASURE_SAMPLES:
            book.why = "runs eager first, to measure its evaluations"
            return False
        speedup, _ = self.speedup("potential")
        remaining = evaluations / samples_done * max(samples_total - samples_done, 0)
        saving = remaining * eager * (1 - 1 / speedup) if speedup > 1 else 0.0
        expected = eager * self.compile_steps("potential")[0]
        if saving > expected:
            book.why = (f"compiled after {samples_done} samples: the ~{remaining:.0f} evaluations "
                        f"still to come were expected to save {seconds(saving)}, more than compiling's "
                        f"{seconds(expected)}")
            return True
        book.why = (f"stayed eager: the ~{remaining:.0f} evaluations still to come were expected to save "
                    f"{seconds(saving)}, less than compiling's {seconds(expected)}")
        return False

    # -- the report --------------------------------------------------------------
    def decision(self, tally: Tally | TierTally) -> AutoDecision:
        """One key's decision in one run, with what it saved or lost, for the report.

        What the key saved is estimated from the figures the report shows beside it: its
        median eager and compiled step times and its compile cost. Against always eager,
        each compiled step saved the difference and compiling cost its price (when it
        compiled in this cell); against always compiled, each eager step lost the
        difference and compiling was paid all the same (unless compiled in an earlier
        cell). The alternatives' totals are this cell's measured time plus those savings,
        so that a step's hiccup counts the same on both sides.
        """
        if isinstance(tally, TierTally):
            return self.tiers.decision(tally)
        book = tally.book
        self.learn(book)
        speedup, _ = self.speedup(book.kind)
        eager, compiled = book.eager_step(), book.compiled_step()
        estimated = eager is None or compiled is None
        if eager is None and compiled is not None:
            eager = compiled * speedup
        if compiled is None and eager is not None:
            compiled = eager / speedup
        cost = book.compile_seconds()
        if cost is None and not tally.compiled_before:
            cost = self.expected_compile_seconds(book)
            estimated = True
        gain = None if eager is None or compiled is None else eager - compiled
        paid = cost if tally.compiled_at is not None else 0.0  # compiling, in this cell
        always_pays = 0.0 if tally.compiled_before else cost  # compiling, always compiled
        saved_vs_eager = saved_vs_compiled = None
        if tally.compiled_steps == 0:  # it did run all eager
            saved_vs_eager = 0.0
        elif gain is not None and paid is not None:
            saved_vs_eager = tally.compiled_steps * gain - paid
        if tally.compiled_before and tally.eager_steps == 0:  # it did run all compiled
            saved_vs_compiled = 0.0
        elif gain is not None and paid is not None and always_pays is not None:
            saved_vs_compiled = always_pays - paid - tally.eager_steps * gain
        return AutoDecision(
            kind=book.kind, owner=book.owner, key=book.key, state=book.state,
            why="compiled in an earlier cell" if tally.compiled_before else book.why,
            eager_steps=tally.eager_steps, compiled_steps=tally.compiled_steps,
            compiled_at=tally.compiled_at, seconds=tally.seconds,
            eager_step_seconds=eager, compiled_step_seconds=compiled, compile_seconds=cost,
            always_eager_seconds=None if saved_vs_eager is None else tally.seconds + saved_vs_eager,
            always_compiled_seconds=None if saved_vs_compiled is None else tally.seconds + saved_vs_compiled,
            estimated=estimated, compiled_before=tally.compiled_before)
