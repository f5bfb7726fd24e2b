"""Whole steps and potentials compiled in the session, by the object they serve.

Each SVI (and each HMC/NUTS kernel) keeps its compiled graphs, one per call
signature, for exactly as long as the user keeps the object (weak keys): the
next cell reuses them, and nothing is held once the object is dropped. A
compiled step holds its SVI weakly, so it never keeps its own key alive.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Any


@dataclass
class WholeStepEntry:
    """One compiled graph: what it was compiled for, what it cost, how often it served."""

    compiled: Any  # a wholestep CompiledStep or CompiledPotential
    key: str  # the call signature in words
    compile_seconds: float
    last_hit: float | None = None
    # inductor's codegen ran in the background, and no report has yet said how it ended
    unannounced: bool = False

    @property
    def hits(self) -> int:
        """Calls the graph ran (a step it handed to Pyro's eager step is not one)."""
        compiled = self.compiled
        return getattr(compiled, "steps", getattr(compiled, "calls", 0))


class WholeStepStore:
    """Per SVI or kernel, its compiled graphs by call signature."""

    def __init__(self) -> None:
        self._by_owner: weakref.WeakKeyDictionary[Any, dict[Any, WholeStepEntry]] = (
            weakref.WeakKeyDictionary())

    def of(self, owner: Any) -> dict[Any, WholeStepEntry]:
        """The graphs of ``owner`` (made empty on first use)."""
        return self._by_owner.setdefault(owner, {})

    def owners(self) -> list[tuple[Any, dict[Any, WholeStepEntry]]]:
        """Every live owner with at least one graph."""
        return [(owner, entries) for owner, entries in list(self._by_owner.items()) if entries]

    def clear(self, ident: int | None = None) -> int:
        """Drop the graphs of the owner ``id(owner) == ident`` (None: of all); how many were dropped."""
        dropped = 0
        for owner, entries in list(self._by_owner.items()):
            if ident is None or id(owner) == ident:
                dropped += len(entries)
                entries.clear()
        return dropped
