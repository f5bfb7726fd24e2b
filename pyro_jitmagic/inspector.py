"""The cache inspector: every live compiled function in the session, and clearing them.

``%pyrojit_cache`` and its twins, :func:`cache_snapshot` and :func:`clear_cache`, read what each
compiler keeps compiled beside what the runs recorded of it (the session's
:class:`~.run.cache_stats.CacheStats`), without knowing which compiler made what.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from typing import Any

from . import compilers
from .records.cache import CacheSnapshot
from .run.process import PROCESS
from .run.session import Session


class Inspector:
    """Finds the live compiled functions of a session, and clears them.

    A displayed inspector holds this object (its Clear buttons call :meth:`clear`),
    so it holds the functions it found weakly, and the user's ELBOs not at all.
    """

    def __init__(self, session: Session) -> None:
        self._compilers = compilers.inspected(session)

    def snapshot(self, namespace: Mapping[str, Any], objects: list[Any] | None = None) -> CacheSnapshot:
        """The compiled functions of ``objects`` (Jit* ELBOs, HMC/NUTS kernels), by default of
        every live object in the process; owners are named as ``namespace`` names them."""
        return CacheSnapshot(tuple(f for c in self._compilers for f in c.cached(namespace, objects)))

    def clear(self, ident: int | None = None) -> int:
        """Drop the traces of one function of the last snapshot (by ``CachedFunction.ident``), or
        all of them; how many were dropped."""
        return sum(c.clear(ident) for c in self._compilers)


def cache_snapshot(namespace: Mapping[str, Any] | None = None, *, session: Session | None = None,
                   ) -> CacheSnapshot:
    """What the compile caches hold: the twin of ``%pyrojit_cache -q -o NAME``.

    Parameters
    ----------
    namespace : mapping, optional
        Names the functions' owners as the user does (``"svi"``); by default the
        calling module's globals.
    session : Session, optional
        Whose recorded figures (compile times, hits) to show (the process's default).

    Returns
    -------
    CacheSnapshot
        Every live compiled function (of ``Jit*`` ELBOs, built by ``%%pyrojit`` or
        by hand, and HMC/NUTS potentials) and each trace it holds.
    """
    if namespace is None:
        namespace = sys._getframe(1).f_globals
    return Inspector(session or PROCESS.session).snapshot(namespace)


def clear_cache(owner: str | None = None, *, namespace: Mapping[str, Any] | None = None,
                session: Session | None = None) -> int:
    """Drop compiled traces, so that the next steps compile again: the twin of ``%pyrojit_cache --clear``.

    Parameters
    ----------
    owner : str, optional
        Drop the traces of the compiled functions whose owner starts with this
        (``"svi"``: the functions ``svi`` steps with); by default all of them.
    namespace : mapping, optional
        Names the owners as the user does; by default the calling module's globals.
    session : Session, optional
        The session whose figures are cleared with the traces (the process's default).

    Returns
    -------
    int
        How many traces were dropped.

    Raises
    ------
    ValueError
        When no compiled function is owned by ``owner``; the message lists the owners.
    """
    if namespace is None:
        namespace = sys._getframe(1).f_globals
    inspector = Inspector(session or PROCESS.session)
    functions = inspector.snapshot(namespace).functions
    chosen = [f for f in functions if f.owner.startswith(owner or "")]
    if owner and not chosen:
        owners = ", ".join(f.owner.split(" ")[0] for f in functions) or "none"
        raise ValueError(f"no compiled function is owned by {owner!r}; owners: {owners}")
    return sum(inspector.clear(f.ident) for f in chosen)
