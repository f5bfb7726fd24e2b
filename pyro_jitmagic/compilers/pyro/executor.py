"""Which TorchScript executor runs the traces a cell compiles.

How TorchScript treats a trace is a process-wide torch setting, and it changes both what compiling
costs and how fast compiled steps are. torch's default re-optimises each trace over its first
calls; ``no-opt`` compiles several times cheaper, but over thousands of steps a small graph runs
faster optimised (docs/benchmarks.md, Executor settings). So the default, ``adaptive``, starts
every key no-opt and tries a key that keeps being called under the optimizing executor once that
is worth its price (:class:`ExecutorTrial`), keeping the faster. :class:`ExecutorSetting` applies
a setting for one run and restores torch's flags after it.
"""

from __future__ import annotations

import statistics
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from ...compat import jit as compat
from ...records.units import seconds
from ...run.process import PROCESS

#: adaptive, SVI: a key is tried optimizing once its compiled steps have taken
#: this many times what optimizing it is expected to cost, so that a trial that
#: gains nothing costs at most a tenth of the time the key has taken.
TRY_FACTOR = 10.0
#: Optimizing a trace costs about this many no-opt compiles of it (between the simple
#: SVI's ratio and the HMM's: docs/benchmarks.md, Executor settings).
OPTIMIZE_COST = 6.0
#: adaptive, MCMC: a run knows how long it has left; the potential is tried
#: when this share of the time left would repay twice the expected cost.
EXPECTED_GAIN = 0.1
#: Calls under the optimizing executor that profile and optimise the trace,
#: then calls measured against the last no-opt ones.
TRIAL_WARM = 3
TRIAL_STEPS = 30
#: The optimised trace is dropped only when its steps are slower than the
#: no-opt ones by more than this factor: it has been paid for, and steps on a
#: shared machine are noisy (a burst on either side must not undo it).
SLOWER_ABOVE = 1.1


# The torch flags each executor sets: graph executor optimize, profiling executor,
# profiling mode (None: left as the user had it). Names and descriptions: options.EXECUTORS.
_SETTINGS: dict[str, tuple[bool | None, bool | None, bool | None]] = {
    "adaptive": (False, None, None),
    "no-opt": (False, None, None),
    "optimizing": (True, True, True),
    "legacy": (True, False, False),
}


def available() -> bool:
    """Whether this torch has the executor flags (they are private API)."""
    try:
        compat.executor_flags()
    except (ImportError, AttributeError):
        return False
    return True


def heal() -> bool:
    """Restore torch's flags under settings whose run never restored them; True if any."""
    # a run cut off before its cleanup leaves its setting applied: the next run heals it
    applied = PROCESS.executor_settings
    healed = bool(applied)
    while applied:
        applied[-1].restore()
    return healed


class ExecutorSetting:
    """Set an executor for the length of a run; :meth:`restore` puts torch's flags back."""

    def __init__(self, name: str) -> None:
        self.name = name  # checked by RunOptions
        self._flags = _SETTINGS[name]
        self._saved: list[tuple[Callable[[Any], Any], Any]] = []

    def apply(self) -> None:
        if not available():
            return
        PROCESS.executor_settings.append(self)
        for (get, set_), value in zip(compat.executor_flags(), self._flags, strict=True):
            if value is not None:
                self._saved.append((set_, get()))
                set_(value)

    def restore(self) -> None:
        while self._saved:
            set_, value = self._saved.pop()
            set_(value)
        if self in PROCESS.executor_settings:
            PROCESS.executor_settings.remove(self)


def optimize_setter() -> Callable[[bool], Any]:
    """torch's graph-executor optimize flag: read when a trace runs and has no optimised plan yet,
    so it is set before every compiled call (one key may be optimized and the next not)."""
    return compat.optimize_setter()  # a torch without it: see torchcheck.executor_problem


@dataclass
class ExecutorTrial:
    """adaptive: the executor one cache key (or one MCMC potential) runs under, and why.

    ``after_step`` is told the time of each compiled step of the key (for a
    potential, each sample's time and its number of evaluations); ``optimize``
    is the flag to run its next call under. Moving to the optimizing executor
    is one way for a trace: once torch has built the optimised plan it runs it
    whatever the flag says (``ProfilingGraphExecutorImpl::getPlanFor`` returns
    ``optimized_plan_`` first). So a key is measured no-opt, then optimized;
    if the optimised steps turn out slower, ``drop`` asks for its trace to be
    thrown away, and the key compiles again, no-opt, for good.
    """

    owner: str
    key: str
    compile_seconds: float
    unit: str = "step"  # what after_step counts
    per: str = "a step"  # what its times are per
    optimize: bool = False
    state: str = "no-opt"  # "no-opt", "optimizing", "no-opt, kept"
    drop: bool = False  # the optimised trace was slower: throw it away, compile again no-opt
    spent: float = 0.0
    before: deque[tuple[float, float]] = field(default_factory=lambda: deque(maxlen=TRIAL_STEPS))
    after: list[tuple[float, float]] = field(default_factory=list)
    warm: int = 0  # calls spent letting the optimizing executor profile and optimise
    since: int = 0
    why: str = ""

    def after_step(self, seconds: float, step: int, remaining: float | None = None,
                   weight: float = 1.0) -> bool:
        """Record a step (``weight``: potential evaluations in it); True when the executor changed."""
        if self.state == "no-opt":
            self.spent += seconds
            self.before.append((seconds, weight))
            if len(self.before) == TRIAL_STEPS and self._worth_trying(remaining):
                self.state, self.optimize, self.since = "optimizing", True, step + 1
                self.why = f"optimizing from {self.unit} {self.since}"
                return True
        elif self.state == "optimizing" and len(self.after) < TRIAL_STEPS:
            if self.warm < TRIAL_WARM:
                self.warm += 1
                return False
            self.after.append((seconds, weight))
            if len(self.after) == TRIAL_STEPS:
                return self._settle(step)
        return False

    def _settle(self, step: int) -> bool:
        optimized, before = _per_weight(self.after), _per_weight(list(self.before))
        figures = f"{seconds(optimized)} {self.per} optimized against {seconds(before)} no-opt before"
        if optimized <= before * SLOWER_ABOVE:
            self.why = f"optimizing from {self.unit} {self.since}: {figures}"
            return True
        self.state, self.optimize, self.drop = "no-opt, kept", False, True
        self.why = (f"back to no-opt at {self.unit} {step + 1} (compiled again) after optimizing from "
                    f"{self.unit} {self.since}: {figures}")
        return True

    def _worth_trying(self, remaining: float | None) -> bool:
        cost = OPTIMIZE_COST * self.compile_seconds
        if remaining is not None:
            return remaining * EXPECTED_GAIN >= 2 * cost
        return self.spent >= TRY_FACTOR * cost


def _per_weight(measured: list[tuple[float, float]]) -> float:
    """The median step's seconds per unit of weight (robust to a collection or a hiccup)."""
    return statistics.median(seconds / weight for seconds, weight in measured)
