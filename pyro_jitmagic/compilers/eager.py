"""The eager compiler: compiles nothing, so that a run records the cell as written.

It is the first run of ``--compare`` (``RunOptions(backend="eager")``): every
SVI step, ELBO loss and MCMC run is intercepted, timed and recorded as in a
compiled run, and runs exactly as the cell wrote it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from ..run.direct import unhooked
from ..run.naming import label
from ..run.route import Ladder, MCMCRoute, Route

if TYPE_CHECKING:
    from ..patch import PatchSet
    from ..records.cache import CachedFunction
    from ..run.context import RunContext
    from ..run.session import Session

AS_WRITTEN = "run as written"


def eager_step(as_written: Callable[..., Any], svi: Any, elbo: Any, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    """One SVI step as eager Pyro runs it: ``SVI.step`` (``as_written``) on the user's own ELBO,
    whatever companion of Pyro's JIT the run pointed the SVI at (a companion computes its loss in
    float32 and calls backward under ``torch.no_grad()``; its trace holds what a step declines for)."""
    __tracebackhide__ = True
    user = getattr(elbo, "loss_and_grads", None)
    patched = svi.__dict__.get("loss_and_grads")
    if user is None or patched is None or patched == user:
        return as_written(svi, *args, **kwargs)
    svi.loss_and_grads = unhooked(user)
    try:
        return as_written(svi, *args, **kwargs)
    finally:
        svi.loss_and_grads = patched


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

    def plan_svi(self, svi: Any, elbo: Any, target: str, as_written: Callable[..., Any]) -> Ladder:
        name = type(elbo).__name__ if elbo is not None else label(svi.loss)
        return Ladder(Route(before=name, after=name, compiled=False, call=as_written, reason=AS_WRITTEN))

    def plan_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str,
                  as_written: Callable[..., Any], args: tuple[Any, ...]) -> Ladder:
        name = type(elbo).__name__
        return Ladder(Route(before=name, after=name, compiled=False, call=partial(as_written, elbo),
                            reason=AS_WRITTEN))

    def plan_mcmc(self, mcmc: Any, target: str) -> MCMCRoute:
        name = type(mcmc.kernel).__name__
        return MCMCRoute(before=name, after=name, compiled=False, reason=AS_WRITTEN)

    def cached(self, namespace: Mapping[str, Any], objects: list[Any] | None = None) -> list[CachedFunction]:
        return []

    def clear(self, ident: int | None = None) -> int:
        return 0
