"""The books the climb decides from: what each Pyro cache key and each SVI call signature cost.

A :class:`KeyBook` is one cache key of one of Pyro's compiled functions (eager or traced); a
:class:`TierBook` is one call signature of one SVI across every tier (eager, Pyro's JIT, the
whole step, inductor's kernels). Each has a tally per run (:class:`Tally`, :class:`TierTally`),
which the report is made from. All of them are plain records: :class:`~.auto.AutoPolicy` reads
them and decides.
"""

from __future__ import annotations

import statistics
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

Kind = Literal["svi", "potential"]
Tier = Literal["eager", "pyro", "step", "inductor"]
TIERS: tuple[Tier, ...] = ("eager", "pyro", "step", "inductor")

#: Medians are taken over at most this many of the latest steps.
RECENT = 50
#: A graph's calls before the share of them whose checks failed is its own (not its last run's).
SHARE_AFTER = 16
#: Steps after a key's compiling one that may still run slow (an optimising executor
#: re-optimises on them): their excess counts toward the compile.
SETTLE = 5


def median(values: Any) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


class Memory(Protocol):
    """What earlier runs left on disk, beside inductor's cache (``wholestep.memory.RunMemory``)."""

    def inductor_holds(self, digest: str | None) -> bool: ...
    def steps(self, key: str) -> int | None: ...
    def graph(self, key: str) -> str | None: ...
    def compiled(self, digest: str) -> None: ...
    def failed_checks(self, key: str) -> tuple[float, float | None] | None: ...
    def ran(self, counts: dict[str, tuple[int, str | None, tuple[float, float | None] | None]]) -> None: ...


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
    stepped_down: bool = False  # its compiled steps were slower than eager's: eager for the session
    code: str = ""  # what its trace is a trace of, across runs (the model's and guide's code, the key)
    #: set when a decision to stay eager holds for the rest of the cell: the policy's ``learned`` then
    stays: int | None = None

    def eager_step(self) -> float | None:
        """Median of the latest eager steps."""
        return median(list(self.eager))

    def compiled_step(self) -> float | None:
        """Median of the steady compiled steps (of the settling ones while there are no others)."""
        return median(list(self.compiled) or self.settling)

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


@dataclass
class CellSteps:
    """How many steps the running cell's loops will make one SVI take (all its signatures), read
    from the cell's text (see :mod:`.loops`), and how many it has taken."""

    total: int
    done: int = 0

    def left_for(self, mine: int) -> float:
        """Steps one signature is expected to take in the rest of the cell, having taken ``mine``
        of the ``done`` so far: its share of the steps left."""
        share = mine / self.done if self.done and mine else 1.0
        return max(self.total - self.done, 0) * share


@dataclass
class TierBook:
    """One call signature of one SVI under ``--auto``: its tier, its step times in each, its path."""

    owner: str
    key: str  # the signature in words
    memory_key: str = ""  # its key in the memory of earlier runs ("" when none)
    tier: Tier = "eager"
    times: dict[str, deque[float]] = field(
        default_factory=lambda: {t: deque(maxlen=RECENT) for t in TIERS})
    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))
    low_seconds: float = 0.0  # all steps in eager and Pyro's JIT
    calls: int = 0
    capture_seconds: float | None = None
    codegen_seconds: float | None = None
    codegen_cache: str | None = None
    digest: str | None = None  # its graph's, once captured
    expected_steps: int | None = None  # from the memory of earlier runs
    cell: CellSteps | None = None  # from the running cell's loops
    run_start: int = 0  # calls before this run
    path: list[str] = field(default_factory=list)
    why: str = ""  # why it is on its tier
    codegen_why: str = ""  # when inductor's codegen starts in this run, and why
    learned: bool = False
    #: set when a look at climbing said no for the rest of the cell: (the policy's ``learned``, warm)
    stays: tuple[int, bool] | None = None
    #: its graph's calls whose check of a value it read failed (each then ran again eager), and
    #: their times (the graph's call and eager's step together)
    checks_failed: int = 0
    failed_times: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT))
    #: its graph's failed checks in the last run of the same code: their share of its calls, and a
    #: call's cost over a step below (memory: ``RunMemory.failed_checks``)
    remembered_checks: tuple[float, float | None] | None = None
    #: why it left its graph for the low tiers for the session (empty while it has not)
    stepped_down: str = ""
    #: why its whole step cannot be captured, met by it or by the same code in the session ("": none)
    cannot_capture: str = ""

    def explained(self) -> str:
        """Why it is on its tier, and what of inductor's codegen."""
        return f"{self.why}; {self.codegen_why}" if self.codegen_why else self.why

    def low_step(self) -> float | None:
        """Median of the latest steps in the low tiers (Pyro's JIT's when it has some)."""
        return median(self.times["pyro"] or self.times["eager"])

    def step_time(self, tier: Tier) -> float | None:
        return median(self.times[tier])

    def graph_calls(self) -> int:
        """Calls of its graph: those that ran compiled and those whose checks failed."""
        return self.steps["step"] + self.steps["inductor"] + self.checks_failed

    def failed_share(self) -> float:
        """The share of its graph's calls whose checks of values fail: measured once it has made
        :data:`SHARE_AFTER` calls, else its last run's (memory), else none."""
        calls = self.graph_calls()
        if calls >= SHARE_AFTER:
            return self.checks_failed / calls
        return self.remembered_checks[0] if self.remembered_checks else 0.0

    def graph_cost(self) -> float | None:
        """What a call of its graph costs on average, its failed checks at their cost (the graph's call
        and then eager's step), over a step on the tiers below: measured once it has made
        :data:`SHARE_AFTER` calls and a check failed, else its last run's, else None."""
        measured = self.graph_times()
        if measured is not None:
            share, passed, failed, low = measured
            return ((1 - share) * passed + share * failed) / low
        return self.remembered_checks[1] if self.remembered_checks else None

    def graph_times(self) -> tuple[float, float, float, float] | None:
        """(the share of its graph's calls whose checks failed, a passing call's time, a failing one's,
        a step's below) once it has made :data:`SHARE_AFTER` calls and a check failed, else None."""
        calls, low = self.graph_calls(), self.low_step()
        passed = self.step_time("inductor" if self.steps["inductor"] else "step")
        failed = median(self.failed_times)
        if calls < SHARE_AFTER or not self.checks_failed or not low or passed is None or failed is None:
            return None
        return self.checks_failed / calls, passed, failed, low

    def measured_checks(self) -> tuple[float, float | None] | None:
        """Its graph's failed checks as measured in this session, for the memory (None: too few calls)."""
        if self.graph_calls() < SHARE_AFTER:
            return None
        return self.failed_share(), self.graph_cost() if self.checks_failed else None

    def moved(self, tier: Tier, text: str) -> None:
        self.tier = tier
        self.path.append(text)


@dataclass
class TierTally:
    """What one signature did in one run (a cell), for the report."""

    book: TierBook
    start_calls: int = 0
    seconds: float = 0.0
    steps: dict[str, int] = field(default_factory=lambda: dict.fromkeys(TIERS, 0))

    @property
    def climbed(self) -> bool:
        """True once the signature ran above Pyro's JIT in this run (until then its Pyro key's
        --auto row tells it all)."""
        return bool(self.steps["step"] or self.steps["inductor"])

    def add(self, tier: Tier, seconds_: float) -> None:
        """A step on ``tier`` that took ``seconds_``, a step time of the tier's."""
        self.count(tier, seconds_)
        self.book.times[tier].append(seconds_)

    def count(self, tier: Tier, seconds_: float) -> None:
        """A step on ``tier`` whose time says nothing of the tier's step time (a trace or capture in
        it; a graph's call that ran again eager): counted, and its time in the run's."""
        book = self.book
        self.seconds += seconds_
        self.steps[tier] += 1
        book.steps[tier] += 1
        book.calls += 1
        if tier in ("eager", "pyro"):
            book.low_seconds += seconds_
