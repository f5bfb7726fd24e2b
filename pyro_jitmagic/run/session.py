"""What a session keeps between cells: compiled companions, whole-step graphs, and what compiling cost.

A :class:`Session` keeps, per user ELBO and per (model, guide) it steps, the ``Jit*`` companion
that runs it compiled; per SVI or kernel, its whole-step graphs (:class:`WholeStepStore`); and what
the climb has learned. All are keyed weakly on the user's objects: the next cell reuses them, and
they go when the user's objects go. Keying companions on (model, guide) fixes Pyro's reused-ELBO
bug: a ``Jit*`` ELBO shared by two models silently returns the first model's loss. The magic and
the twins share the process's default session (:mod:`.process`); a twin may be given another.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..compat import jit as compat
from ..policy.auto import AutoPolicy
from .cache_stats import CacheStats


@dataclass
class WholeStepEntry:
    """One compiled graph: what it was compiled for, what it cost, how often it served."""

    compiled: Any  # a wholestep CompiledStep, CompiledPotential or CompiledTrajectory
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


#: How many earlier MCMC runs' graphs a session keeps for a later run of the same model.
KEPT_RUNS = 8


class WholeStepStore:
    """Per SVI or kernel, its compiled graphs by call signature; and the graphs of the last
    :data:`KEPT_RUNS` MCMC runs, kept for a later run of the same model on the same data (``kept``:
    the whole-step compiler's ``Kept``, opaque here but for its ``graphs()``), newest last."""

    def __init__(self) -> None:
        self._by_owner: weakref.WeakKeyDictionary[Any, dict[Any, WholeStepEntry]] = (
            weakref.WeakKeyDictionary())
        self.kept: list[Any] = []

    def keep(self, kept: Any) -> None:
        """Keep ``kept`` (the newest), forgetting the oldest beyond :data:`KEPT_RUNS`."""
        self.kept = [k for k in self.kept if k is not kept] + [kept]
        del self.kept[:-KEPT_RUNS]

    def of(self, owner: Any) -> dict[Any, WholeStepEntry]:
        """The graphs of ``owner`` (made empty on first use)."""
        return self._by_owner.setdefault(owner, {})

    def owners(self) -> list[tuple[Any, dict[Any, WholeStepEntry]]]:
        """Every live owner with at least one graph."""
        return [(owner, entries) for owner, entries in list(self._by_owner.items()) if entries]

    def clear(self, ident: int | None = None) -> int:
        """Drop the graphs of the owner ``id(owner) == ident`` (None: of all), and the kept runs that
        hold them; how many were dropped."""
        dropped, graphs = 0, set[int]()
        for owner, entries in list(self._by_owner.items()):
            if ident is None or id(owner) == ident:
                dropped += len(entries)
                graphs.update(id(e.compiled.captured.graph) for e in entries.values())
                entries.clear()
        self.kept = [k for k in self.kept if ident is not None and not graphs & set(map(id, k.graphs()))]
        return dropped


class Session:
    """What compiled runs keep between cells: the companions of user ELBOs, the whole-step graphs,
    what the caches cost and what the climb has learned.

    Attributes
    ----------
    cache : CacheStats
        Per compiled function and cache key: compile time, hits, last hit (what
        ``%pyrojit_cache`` shows beside the traces).
    auto : AutoPolicy
        What the climb has learned of compile costs and speedups in this session.
    whole_steps : WholeStepStore
        The whole steps and potentials compiled by the climb or by ``--backend step`` and
        ``inductor``.
    """

    def __init__(self) -> None:
        # per user ELBO: (model, guide, companion, the ELBO's settings it copied)
        self._companions: weakref.WeakKeyDictionary[Any, list[tuple[Any, Any, Any, dict[str, Any]]]] = (
            weakref.WeakKeyDictionary())
        self.cache = CacheStats()
        # user ELBOs that met a limit of Pyro's JIT: why they run eager from now on
        self._eager: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()
        # what --auto has learned of compile costs and speedups in this session
        self.auto = AutoPolicy()
        # whole steps and potentials compiled by the climb, --backend step or inductor, per SVI or kernel
        self.whole_steps = WholeStepStore()

    def companion(self, elbo: Any, model: Any, guide: Any,
                  make: Callable[[Any], Any]) -> tuple[Any, str | None]:
        """The companion of ``elbo`` for this model and guide, and None when it is not new; else why
        it is (``"new"``, or the settings of ``elbo`` that changed since the last one was made: a
        companion copies them, so a changed ``num_particles`` needs a new one and new traces)."""
        from ..guards import plain_settings

        settings = plain_settings(elbo, compat.COMPILED_ATTRS)
        entries = self._companions.setdefault(elbo, [])
        why = "new"
        for i, (known_model, known_guide, jit_elbo, known) in enumerate(entries):
            if known_model is model and known_guide is guide:
                if known == settings:
                    return jit_elbo, None
                name, changed = type(elbo).__name__, sorted(set(known) ^ set(settings) | {
                    k for k in known if k in settings and known[k] != settings[k]})
                why = "; ".join(f"{name}.{k} {known.get(k)!r} -> {settings.get(k)!r}" for k in changed)
                del entries[i]
                break
        jit_elbo = make(elbo)
        entries.append((model, guide, jit_elbo, settings))
        return jit_elbo, why

    def never_compile(self, elbo: Any, why: str) -> None:
        """Run ``elbo`` eager in later cells too: compiling it failed on a limit of Pyro's JIT."""
        self._eager[elbo] = why

    def cannot_compile(self, elbo: Any) -> str | None:
        """Why ``elbo`` runs eager, when compiling it failed in an earlier step."""
        return self._eager.get(elbo)

    def companions(self) -> list[tuple[Any, Any, Any, Any]]:
        """Every live (user ELBO, model, guide, companion)."""
        return [(elbo, m, g, c) for elbo, entries in list(self._companions.items())
                for m, g, c, _ in entries]
