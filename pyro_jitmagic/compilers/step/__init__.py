"""The whole step behind the seam: an SVI step (loss, gradients, optimizer update) or an HMC/NUTS
potential and its gradient, captured as one graph by :mod:`pyro_jitmagic.wholestep`.

``--backend step`` runs the graph on TorchScript (cheap to build, no C++ toolchain); ``--backend
inductor`` compiles it into C++ kernels, and runs ``step`` where there is no C++ compiler. What the
capture cannot write, and ELBO losses the cell calls itself, run on Pyro's JIT
(:class:`~..pyro.PyroJit`), with the reason in the report. :mod:`.routes` runs each SVI's steps,
:mod:`.mcmc` HMC/NUTS, and :mod:`.caches` shows what it keeps compiled.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ...patch import PatchSet
from ...records.cache import CachedFunction
from ...run.context import RunContext
from ...run.route import Ladder, MCMCRoute
from ...run.session import Session
from ..pyro import PyroJit
from .caches import whole_step_caches
from .mcmc import WholeMCMCRoute
from .routes import WholeStepRoute


class WholeStep:
    """The whole-step compiler (``RunOptions(backend="step")`` or ``"inductor"``)."""

    compiles = True

    def __init__(self, session: Session, backend: str = "step") -> None:
        self.name = backend
        self.session = session
        self._pyro = PyroJit(session)  # for what the whole step cannot capture
        self._ctx: RunContext | None = None

    def install(self, ctx: RunContext, patches: PatchSet) -> None:
        self._ctx = ctx
        self._pyro.install(ctx, patches)

    @staticmethod
    def wrapped() -> list[tuple[Any, str]]:
        return PyroJit.wrapped()

    def plan_svi(self, svi: Any, elbo: Any, target: str, as_written: Callable[..., Any]) -> Ladder:
        assert self._ctx is not None
        return WholeStepRoute.plan(self._ctx, self._pyro, self.name, svi, elbo, target, as_written)

    def plan_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str,
                  as_written: Callable[..., Any], args: tuple[Any, ...]) -> Ladder:
        route = self._pyro.route_loss(method, elbo, model, guide, target, as_written, args)
        if route.compiled:
            route.note = (f"{target}: ran on Pyro's JIT: --backend {self.name} compiles whole SVI steps, "
                          f"and this loss is called directly")
        return Ladder(route)

    def plan_mcmc(self, mcmc: Any, target: str) -> MCMCRoute:
        assert self._ctx is not None
        return WholeMCMCRoute.plan(self._ctx, self._pyro, self.name, mcmc, target)

    def cached(self, namespace: Mapping[str, Any], objects: list[Any] | None = None) -> list[CachedFunction]:
        return whole_step_caches(self.session, namespace, objects)

    def clear(self, ident: int | None = None) -> int:
        return self.session.whole_steps.clear(ident)
