"""Compiled companions that outlive a cell.

A :class:`Session` keeps, for each user ELBO and each (model, guide) pair it
is stepped with, the Jit* companion that runs it compiled. The companion, and
the traces it compiled, live exactly as long as the user's ELBO object (weak
keys), so the next ``%%pyrojit`` cell reuses its traces and nothing is held
once the user drops the ELBO.

Keying on (model, guide) as well is what fixes Pyro's reused-ELBO bug: a Jit*
ELBO keeps the model of its first call in its compiled closure, so one ELBO
object shared by two models would silently return the first model's loss.

The process has a default session (``PROCESS.session``, see :mod:`.process`):
compiled traces belong to ELBO objects, which are themselves process-wide, so
the magic and its plain-Python twin share it; the magic holds it as
``PyroJitMagics.session``, and a twin takes another as ``session=``.

It also keeps each SVI's (and each HMC/NUTS kernel's) whole-step graphs, one
per call signature and world, for as long as the user keeps the object
(:class:`WholeStepStore`).
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


class Session:
    """Registry of the compiled companions of user ELBOs, and of what the caches cost.

    Attributes
    ----------
    cache : CacheStats
        Per compiled function and cache key: compile time, hits, last hit (what
        ``%pyrojit_cache`` shows beside the traces).
    auto : AutoPolicy
        What ``--auto`` has learned of compile costs and speedups in this session.
    whole_steps : WholeStepStore
        The whole steps and potentials ``--backend step`` and ``inductor`` compiled.
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
        # whole steps and potentials compiled by --backend step or inductor, per SVI or kernel
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
