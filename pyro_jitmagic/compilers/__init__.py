"""The compilers behind ``%%pyrojit``, made by name (``RunOptions.backend``) for each run.

:mod:`.pyro` is Pyro's JIT, :mod:`.step` the whole step (``step`` and ``inductor``), and
:mod:`.auto` the climb through both that plain ``%%pyrojit`` runs; :mod:`.eager` compiles
nothing (the first run of ``--compare``). Each meets the run at the seam of
:mod:`pyro_jitmagic.run.route`. A compiler is made per run, and per look at the caches, with the
session it keeps its objects in.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from ..run.context import Compiler
from ..run.session import Session
from .auto import Tiered
from .eager import AsWritten
from .pyro import PyroJit
from .step import WholeStep

#: name -> how to make the compiler (options.BACKENDS says what each does)
COMPILERS: dict[str, Callable[[Session], Compiler]] = {
    "pyro": PyroJit,
    "step": partial(WholeStep, backend="step"),
    "inductor": partial(WholeStep, backend="inductor"),
    "eager": AsWritten,
}
_CLASSES = (PyroJit, WholeStep, AsWritten)


def make(name: str, session: Session, auto: bool = False) -> Compiler:
    """The compiler called ``name``, for one run or one look at the caches; with ``auto`` and a
    whole-step backend, ``--auto``'s tiers up to that backend."""
    if auto and name in ("step", "inductor"):
        return Tiered(session, top=name)
    return COMPILERS[name](session)


def inspected(session: Session) -> list[Compiler]:
    """A compiler of each kind that compiles, for the cache inspector (one whole-step compiler
    shows the graphs of both its backends)."""
    return [PyroJit(session), WholeStep(session)]


def wrapped() -> list[tuple[Any, str]]:
    """What every compiler wraps at class or module level while a run is active, for healing."""
    return [target for cls in _CLASSES for target in cls.wrapped()]
