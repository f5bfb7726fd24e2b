"""The sentinel: a compiled step's loss checked against eager's while the cell runs.

Guards catch the changes they can name; the sentinel catches the rest (a value reached through
``getattr``, a draw hidden in a library) by its effect. At an artifact's first compiled call, then
at gaps that quadruple (:data:`FIRST_GAP`, :data:`GROWTH`), the same call is computed eagerly from
the same params and random state, and the two losses must agree to float rounding
(:func:`agree`). What the checks cost: docs/benchmarks.md, Guards and the sentinel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

#: Calls between the first check and the second; each later gap is :data:`GROWTH` times the one
#: before. A 10,000-step run is checked four times: each check is an eager loss, about 2.6 ms
#: against a compiled step's 16 us, and the checks must stay under 3% of the run (six checks, the
#: gaps tripling from 64, took 3.4% of it once the step came down to 16 us; docs/benchmarks.md,
#: Guards and the sentinel).
FIRST_GAP = 128
GROWTH = 4
#: How far two computations of the same loss may drift by float rounding, in units of the
#: dtype's epsilon times the magnitude of the terms summed: sums done in another order (a fused
#: kernel's, a vectorised reduction's) differ by about sqrt(n) eps of the terms' magnitudes for
#: n terms, and by n eps at worst; 2**10 covers plates of tens of thousands and is still 1e-4
#: relative in float32, where a frozen value (a stale minibatch, a dropped scale) moves a loss
#: by far more.
ROUNDING_EPS = 2.0 ** 10


def agree(compiled: float, eager: float, scale: float, eps: float) -> bool:
    """Whether ``compiled`` is ``eager`` up to float rounding, for a loss summed from terms whose
    magnitudes add up to ``scale`` in a dtype of epsilon ``eps``."""
    if math.isnan(compiled) or math.isnan(eager):
        return math.isnan(compiled) and math.isnan(eager)
    if math.isinf(compiled) or math.isinf(eager):
        return compiled == eager
    bound = ROUNDING_EPS * eps * max(scale, abs(eager), abs(compiled), 1e-30)
    return abs(compiled - eager) <= bound


def relative(compiled: float, eager: float) -> float:
    """How far apart, relative to eager's value (for the report)."""
    if compiled == eager:
        return 0.0
    return abs(compiled - eager) / max(abs(eager), 1e-30)


@dataclass
class Sentinel:
    """When one artifact's calls are checked: :meth:`due` is called once per compiled call."""

    calls: int = 0
    next_check: int = 1
    gap: int = FIRST_GAP
    checks: int = 0
    seconds: float = 0.0  # what its checks cost (the eager calls, and comparing)

    def due(self) -> bool:
        """Count a compiled call; True when this one is checked."""
        self.calls += 1
        if self.calls < self.next_check:
            return False
        self.checks += 1
        self.next_check = self.calls + self.gap
        self.gap *= GROWTH
        return True

    def postpone(self) -> None:
        """The check just due moves to the next call (the interpreter is busy beside the steps: a
        check's eager call would wait on it, tens of milliseconds instead of one)."""
        self.checks -= 1
        self.gap //= GROWTH
        self.next_check = self.calls + 1


@dataclass(frozen=True)
class Finding:
    """A check the compiled call failed: at which of its calls, and how.

    ``raised``: eager raised this where the compiled call ran (a validation error); ``draws``: the
    losses agree but the compiled call drew other random numbers than eager."""

    call: int
    compiled: float
    eager: float
    raised: str = ""
    draws: bool = False

    def __str__(self) -> str:
        if self.raised:
            return f"eager raised {self.raised} where the compiled call computed {self.compiled:.6g}"
        if self.draws:
            return "the compiled call drew other random numbers than eager does"
        return (f"its loss was {self.compiled:.6g} where eager computes {self.eager:.6g} from the same "
                f"params and random draws (relative difference {relative(self.compiled, self.eager):.2g})")
