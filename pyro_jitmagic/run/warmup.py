"""The eager work that compiling needs done first (see the Pyro JIT tutorial).

An AutoGuide builds a prototype trace on its first call, by running the model; done here, once
and eagerly, that work is not compiled into the trace. Only the prototype is built, so the param
store gets only what the guide creates and the random stream moves as in an eager first step.
``TraceEnum_ELBO`` guesses ``max_plate_nesting`` by running model and guide once; done here, the
guess is not repeated inside the trace.
"""

from __future__ import annotations

import math
import time
from typing import Any

from ..compat import jit as compat
from ..records.report import WarmupAction
from .naming import label


def warm_up(target: str, elbo: Any, model: Any, guide: Any,
            args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[WarmupAction]:
    """Do the eager warm-up for one compiled ELBO; return what was done."""
    from pyro.infer import TraceEnum_ELBO
    from pyro.infer.autoguide import AutoGuide

    done = []
    if isinstance(guide, AutoGuide) and getattr(guide, "prototype_trace", True) is None:
        start = time.perf_counter()
        compat.build_prototype(guide, args, kwargs)
        done.append(WarmupAction(target, "AutoGuide prototype",
                                 f"{label(guide)} ran the model once to build its prototype",
                                 time.perf_counter() - start))

    guesses = isinstance(elbo, TraceEnum_ELBO) or (
        elbo.vectorize_particles and elbo.num_particles > 1)
    if guesses and math.isinf(elbo.max_plate_nesting):
        start = time.perf_counter()
        compat.guess_max_plate_nesting(elbo, model, guide, args, kwargs)
        done.append(WarmupAction(target, "max_plate_nesting",
                                 f"found max_plate_nesting={elbo.max_plate_nesting}",
                                 time.perf_counter() - start))
    return done
