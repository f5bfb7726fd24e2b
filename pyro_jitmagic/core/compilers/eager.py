"""The eager compiler: compiles nothing, so that a run records the cell as written.

It is the first run of ``--compare`` (``RunOptions(backend="eager")``): every
SVI step, ELBO loss and MCMC run is intercepted, timed and recorded as in a
compiled run, and runs exactly as the cell wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ..naming import label
from .base import MCMCRoute, Route

if TYPE_CHECKING:
    from ...records.cache import CachedFunction
    from ..context import RunContext
    from ..patch import PatchSet
    from ..session import Session

AS_WRITTEN = "run as written"


class AsWritten:
    """The compiler that leaves every step as written."""

    name = "eager"
    compiles = False

    def __init__(self, session: Session) -> None:
        self.session = session

    def install(self, ctx: RunContext, patches: PatchSet) -> None:
        pass

    @staticmethod
    def wrapped() -> list[tuple[Any, str]]:
        return []

    def plan_svi(self, svi: Any, elbo: Any, target: str, as_written: Callable[..., Any]) -> Route:
        name = type(elbo).__name__ if elbo is not None else label(svi.loss)
        return Route(before=name, after=name, compiled=False, call=as_written, reason=AS_WRITTEN)

    def plan_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str,
                  as_written: Callable[..., Any], args: tuple[Any, ...]) -> Route:
        name = type(elbo).__name__
        return Route(before=name, after=name, compiled=False, call=partial(as_written, elbo),
                     reason=AS_WRITTEN)

    def plan_mcmc(self, mcmc: Any, target: str) -> MCMCRoute:
        name = type(mcmc.kernel).__name__
        return MCMCRoute(before=name, after=name, compiled=False, reason=AS_WRITTEN)

    def step_begins(self) -> None:
        pass

    def step_ends(self, seconds: float | None, step: int) -> None:
        pass

    def cached(self, namespace: Mapping[str, Any], objects: list[Any] | None = None) -> list[CachedFunction]:
        return []

    def clear(self, ident: int | None = None) -> int:
        return 0
