"""``--auto``'s tiers above Pyro's JIT: when the whole step pays, and when inductor's kernels do.

A call signature starts in the *low* tiers, eager then Pyro's JIT, which
:class:`~.auto.AutoPolicy` decides between per Pyro key. Above them:

``step``
    the whole step (loss, gradients, optimizer update) captured as one graph and
    run by TorchScript. The capture runs the model's Python on the cell's thread
    and costs a few hundred low-tier steps (:data:`PRIOR_CAPTURE_STEPS`); each
    step after it is about :data:`PRIOR_STEP_SPEEDUP` times faster.
``inductor``
    the same graph compiled into C++ kernels in a worker process while the
    steps go on on ``step``, swapped in at a step boundary. Cold, codegen takes
    seconds to minutes (:data:`PRIOR_CODEGEN`); served from inductor's disk cache
    it takes a fraction of a second.

A signature climbs to ``step`` when either rule says so: the steps expected to
follow would save more than the capture is expected to cost (*look ahead*); or,
when no earlier run is remembered, the time it has spent in the low tiers
reaches that cost (*rent or buy*: above the whole step lie inductor's kernels,
whose steps cost next to nothing, so the rent of staying below is about the
whole time spent there; it never loses more than the capture's cost against
capturing at once). The steps expected to follow are what the cell's loops say
(``for step in range(num_steps)``, read from its text: :mod:`.loops`); else the
step count the same model, guide, ELBO, optimizer and signature ran last time
(kept on disk beside inductor's cache: a cell run again usually runs as long);
else as many again as so far, scaled up to the :data:`~.auto.HORIZON` while its
SVI is young (the only case where rent or buy applies). Once on ``step``, it starts
inductor's codegen: served from inductor's disk cache at once (it takes a
fraction of a second); cold, in a worker process, off the cores and the
interpreter the steps use, at once when the run is expected to outlast it (its
kernels take over), else when the cell ends (they serve the next run, and this
one does not pay for handing the graph over). Everything expected is learned per session from what
captures and codegens actually cost, with the priors counting as one
measurement each.
"""

from __future__ import annotations

import statistics
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from ..records.report import AutoDecision
from ..records.units import plural, seconds

Tier = Literal["eager", "pyro", "step", "inductor"]
CodegenStart = Literal["now", "after the cell"] | None
TIERS: tuple[Tier, ...] = ("eager", "pyro", "step", "inductor")

#: Capturing the whole step and building its TorchScript graph, in steps of the tier below
#: (Pyro's JIT), from ``bench_auto.py``'s runs: 0.19 s for the tutorial's simple SVI, whose
#: 1,000 steps took 0.6-0.7 s on Pyro's JIT (~270 steps); 2.3-3.0 s for its HMM's length 24,
#: whose steps average 12-20 ms on Pyro's JIT over the three lengths (~200); docs/benchmarks.md.
PRIOR_CAPTURE_STEPS = 250.0
#: A Pyro-JIT step over a whole step on TorchScript: 1.7-1.9 (SVI), 1.8-2.2 (NUTS gradient).
PRIOR_STEP_SPEEDUP = 1.7
#: A whole step on TorchScript over one on inductor's kernels: 8-15 (SVI), 5-6 (NUTS gradient).
PRIOR_INDUCTOR_SPEEDUP = 6.0
#: Cold codegen seconds ~ a + b * capture seconds (simple SVI 12 s for a 0.7 s capture, HMM 104 s
#: for 12 s, NUTS 10.5 s for 0.2 s: a fixed start of about 10 s, then about 8 s per capture second).
PRIOR_CODEGEN = (10.0, 8.0)
#: MCMC: a whole potential-and-gradient evaluation is this much faster than one on the tier below,
#: counting NUTS's own Python per evaluation (bench_backends, the tutorial's NUTS: 3.1 ms eager,
#: 1.5 ms on Pyro's JIT, 1.24 ms on the whole step, per evaluation of a whole run).
PRIOR_POTENTIAL_SPEEDUP = {"eager": 2.5, "pyro": 1.25}
#: MCMC: capturing the potential and its gradient, in eager evaluations counting NUTS's own Python:
#: 70 (0.22 s over 3.1 ms) before captures made their fake values in one mode, which
#: ``bench_capture.py`` puts at 0.49 of the time now; 43 (0.61 of 70) errs on the dear side.
PRIOR_POTENTIAL_CAPTURE_EVALS = 43.0
#: Steps in the low tiers before a signature's step time is trusted (as many as Pyro's tier takes
#: before compiling, so that a run known to be long captures before Pyro traces).
MIN_LOW_STEPS = 3
#: Steps on TorchScript before its step time is trusted (and codegen considered).
MIN_STEP_STEPS = 3
RECENT = 50
#: Seconds a codegen put off until the cell (or MCMC run) ends waits before handing the graph
#: over, so that the cell's report is made and shown without its Python beside it.
AFTER_CELL_DELAY = 1.0


class Memory(Protocol):
    """What earlier runs left (see :class:`pyro_jitmagic.wholestep.memory.RunMemory`)."""

    def inductor_holds(self, digest: str | None) -> bool: ...
    def steps(self, key: str) -> int | None: ...
    def graph(self, key: str) -> str | None: ...
    def compiled(self, digest: str) -> None: ...
    def ran(self, counts: dict[str, tuple[int, str | None]]) -> None: ...


def _median(values: Any) -> float | None:
    values = list(values)
    return statistics.median(values) if values else None


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

    def explained(self) -> str:
        """Why it is on its tier, and what of inductor's codegen."""
        return f"{self.why}; {self.codegen_why}" if self.codegen_why else self.why

    def low_step(self) -> float | None:
        """Median of the latest steps in the low tiers (Pyro's JIT's when it has some)."""
        return _median(self.times["pyro"] or self.times["eager"])

    def step_time(self, tier: Tier) -> float | None:
        return _median(self.times[tier])

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
        book = self.book
        self.seconds += seconds_
        self.steps[tier] += 1
        book.steps[tier] += 1
        book.times[tier].append(seconds_)
        book.calls += 1
        if tier in ("eager", "pyro"):
            book.low_seconds += seconds_


class TierPolicy:
    """The session's measurements of capture and codegen cost and of each tier's speed, and the
    decisions made from them (see the module's text)."""

    def __init__(self, horizon: int = 200, memory: Memory | str | None = "default",
                 prior_capture_steps: float = PRIOR_CAPTURE_STEPS,
                 prior_potential_capture_evals: float = PRIOR_POTENTIAL_CAPTURE_EVALS) -> None:
        self.horizon = horizon
        self.prior_potential_capture_evals = prior_potential_capture_evals
        self._memory = memory
        self._find_memory: Callable[[], Memory | None] = lambda: None
        self.prior_capture_steps = prior_capture_steps
        self._capture: list[float] = []  # capture seconds over the low step
        self._step_speedup: list[float] = []
        self._inductor_speedup: list[float] = []
        self._codegen: list[float] = []  # cold codegen seconds over capture seconds
        self._potential_capture: list[float] = []  # potential captures, in eager evaluations
        #: per SVI (held weakly), its signatures' books
        self.books: weakref.WeakKeyDictionary[Any, dict[Any, TierBook]] = weakref.WeakKeyDictionary()

    @property
    def memory(self) -> Memory | None:
        """What earlier runs left: the one given, else the one the climbing compiler found."""
        if self._memory == "default":
            return self._find_memory()
        return self._memory  # type: ignore[return-value]

    def find_memory(self, find: Callable[[], Memory | None]) -> None:
        """Where the memory lives when none was given: beside inductor's cache of the moment (tests
        move it), which the compiler that climbs knows and this module, importing no torch, does not."""
        self._find_memory = find

    # -- what the session has learned -------------------------------------------
    def capture_steps(self) -> float:
        return statistics.median([*self._capture, self.prior_capture_steps])

    def step_speedup(self) -> float:
        return statistics.median([*self._step_speedup, PRIOR_STEP_SPEEDUP])

    def inductor_speedup(self) -> float:
        return statistics.median([*self._inductor_speedup, PRIOR_INDUCTOR_SPEEDUP])

    def codegen_seconds(self, capture: float) -> float:
        """Expected cold codegen seconds for a graph whose capture took ``capture`` seconds."""
        a, b = PRIOR_CODEGEN
        return statistics.median([*(r * capture for r in self._codegen), a + b * capture])

    def learn(self, book: TierBook) -> None:
        low, step, fast = book.low_step(), book.step_time("step"), book.step_time("inductor")
        if book.learned or low is None or book.capture_seconds is None:
            return
        book.learned = True
        self._capture.append(book.capture_seconds / low)
        if step:
            self._step_speedup.append(low / step)
            if fast:
                self._inductor_speedup.append(step / fast)
        if book.codegen_seconds is not None and book.codegen_cache == "cold" and book.capture_seconds > 0:
            self._codegen.append(book.codegen_seconds / book.capture_seconds)

    # -- decisions -------------------------------------------------------------------
    def future(self, book: TierBook, function_calls: int) -> tuple[float, str]:
        """Steps expected to follow for this signature, and where the figure comes from."""
        mine = book.calls - book.run_start
        if book.cell is not None:  # the cell's own loops: this signature's share of what is left
            left = book.cell.left_for(mine)
            return left, f"the cell's loops run {plural(book.cell.total, 'step')}"
        if book.expected_steps is not None:
            left = max(book.expected_steps - mine, 0)
            return float(left), f"its last run took {book.expected_steps} steps"
        return book.calls * max(1.0, self.horizon / max(function_calls, 1)), "as many again as so far"

    def climb_to_step(self, book: TierBook, function_calls: int, warm: bool) -> bool:
        """Whether this signature should capture its whole step now (``warm``: inductor's cache
        is known to hold its graph); sets ``book.why``."""
        low = book.low_step()
        if not low or book.steps["eager"] + book.steps["pyro"] < MIN_LOW_STEPS:
            return False  # (a step that takes no measurable time has nothing to save)
        cost = low * self.capture_steps()
        speedup = self.step_speedup() * (self.inductor_speedup() if warm else 1.0)
        future, whence = self.future(book, function_calls)
        saving = future * low * (1 - 1 / speedup)
        faster = "inductor's kernels (cached)" if warm else "the whole step"
        if saving >= cost:
            book.why = (f"captured after {plural(book.calls, 'step')}: the ~{future:.0f} steps expected "
                        f"({whence}) would save {seconds(saving)} on {faster}, more than the capture's "
                        f"expected {seconds(cost)}")
            return True
        if book.expected_steps is None and book.cell is None and book.low_seconds >= cost:
            # rent or buy: above the whole step lie inductor's kernels, whose steps cost next to
            # nothing, so the rent of staying below is about the whole time spent there
            book.why = (f"captured after {plural(book.calls, 'step')}, which took "
                        f"{seconds(book.low_seconds)}: the capture's expected cost ({seconds(cost)})")
            return True
        book.why = (f"stayed on {book.tier}: the ~{future:.0f} steps expected ({whence}) would save "
                    f"{seconds(saving)} on {faster}, under the capture's expected {seconds(cost)}")
        return False

    def start_codegen(self, book: TierBook, function_calls: int, warm: bool) -> CodegenStart:
        """When inductor's codegen should start, for a signature on ``step``: ``"now"``, ``"after
        the cell"`` or None (not yet: the whole step's time is not measured). Sets
        ``book.codegen_why``: a start says why; a put-off, unless an earlier look put it off.

        From inductor's disk cache it starts at once. Cold, it runs in a worker process, on a core
        the steps leave idle, but handing the graph over costs this process about a second the
        first time (inductor's import): it starts at once when its kernels can serve this run
        (the steps expected to follow take longer on the whole step than the codegen is expected
        to), else when the cell ends, for the next run.
        """
        if warm:
            book.codegen_why = "its kernels came from inductor's disk cache"
            return "now"
        step = book.step_time("step")
        if step is None or book.steps["step"] < MIN_STEP_STEPS or book.capture_seconds is None:
            return None
        expected = self.codegen_seconds(book.capture_seconds)
        future, whence = self.future(book, function_calls)
        left = future * step
        if left >= expected:
            book.codegen_why = (f"inductor's codegen started at step {book.calls} in a worker process "
                                f"(expected {seconds(expected)}, against the ~{future:.0f} steps expected "
                                f"({whence}), {seconds(left)} on the whole step)")
            return "now"
        if not book.codegen_why:  # the look that put it off says why; later ones that agree add nothing
            book.codegen_why = (f"inductor's codegen starts in a worker process when the cell ends, for "
                                f"the next run: the ~{future:.0f} steps expected ({whence}) take "
                                f"{seconds(left)} on the whole step, less than its expected "
                                f"{seconds(expected)}")
        return "after the cell"

    def potential_codegen_now(self, capture_seconds: float, remaining_seconds: float) -> bool:
        """MCMC: whether a cold codegen of the captured potential should start now (its kernels
        can serve this run: the evaluations left take longer than it is expected to), rather
        than when the run ends, for the next one."""
        return remaining_seconds >= self.codegen_seconds(capture_seconds)

    def climb_potential(self, tier: str, per_eval: float, eager_per_eval: float, remaining: float,
                        pyro_net: float) -> tuple[bool, str]:
        """MCMC: whether to capture the potential and its gradient now, from ``tier`` (eager or
        pyro) whose evaluations take ``per_eval`` (a sample's time over its evaluations), with
        ``remaining`` evaluations expected; ``pyro_net`` is what compiling on Pyro's JIT instead is
        expected to net (the whole step must net more). Returns the decision and why."""
        ratios = [*self._potential_capture, self.prior_potential_capture_evals]
        cost = eager_per_eval * statistics.median(ratios)
        speedup = PRIOR_POTENTIAL_SPEEDUP[tier]
        saving = remaining * per_eval * (1 - 1 / speedup)
        why = (f"the ~{remaining:.0f} evaluations still to come were expected to save {seconds(saving)} "
               f"on the whole potential and gradient, against its capture's {seconds(cost)}")
        return saving - cost > max(pyro_net, 0.0), why

    def learn_potential(self, capture_seconds: float, eager_per_eval: float) -> None:
        if eager_per_eval > 0:
            self._potential_capture.append(capture_seconds / eager_per_eval)

    # -- the report --------------------------------------------------------------
    def decision(self, tally: TierTally) -> AutoDecision:
        """One signature's tiers in one run, and estimates of what each single tier would have taken."""
        book = tally.book
        self.learn(book)
        low = book.low_step()
        times = {t: book.step_time(t) for t in TIERS}
        step = times["step"] or (low / self.step_speedup() if low else None)
        fast = times["inductor"] or (step / self.inductor_speedup() if step else None)
        capture = book.capture_seconds if book.capture_seconds is not None else (
            low * self.capture_steps() if low else None)
        codegen = book.codegen_seconds
        if codegen is None and capture is not None:
            codegen = 0.0 if self.memory is not None and self.memory.inductor_holds(book.digest) \
                else self.codegen_seconds(capture)
        n = sum(tally.steps.values())
        versus: list[tuple[str, float]] = []
        built = None if capture is None else capture + (codegen or 0.0)
        for name, per, upfront in (("eager", times["eager"], 0.0), ("pyro", times["pyro"], 0.0),
                                   ("step", step, capture), ("inductor", fast, built)):
            if per is not None and upfront is not None:
                versus.append((name, n * per + upfront))
        compiled = tally.steps["pyro"] + tally.steps["step"] + tally.steps["inductor"]
        return AutoDecision(
            kind="svi", owner=book.owner, key=book.key, state=book.tier, why=book.explained(),
            eager_steps=tally.steps["eager"], compiled_steps=compiled, compiled_at=None,
            seconds=tally.seconds, eager_step_seconds=times["eager"], compiled_step_seconds=(
                times[book.tier] if book.tier != "eager" else None),
            compile_seconds=book.capture_seconds, always_eager_seconds=dict(versus).get("eager"),
            always_compiled_seconds=dict(versus).get("pyro"), estimated=True,
            path=tuple(book.path), versus=tuple(versus))

    def remember(self, tallies: list[TierTally]) -> None:
        """The run ended: each signature's step count, for the next run of the same cell."""
        if self.memory is None:
            return
        counts = {t.book.memory_key: (sum(t.steps.values()), t.book.digest)
                  for t in tallies if t.book.memory_key and sum(t.steps.values())}
        self.memory.ran(counts)
