"""Pyro's JIT behind the seam: ``Jit*`` ELBOs for SVI and ELBO losses, ``jit_compile=True`` for HMC/NUTS.

It is ``--backend pyro``, and the low tiers of the climb. :mod:`.elbos` says which ELBO has a
``Jit*`` counterpart, :mod:`.routes` how each SVI and loss runs and falls back, and :mod:`.calls`
what each call of a compiled function does (keys, compiles, hits). :mod:`.guarded` keeps what each
trace assumed, :mod:`.traces` watches every ``torch.jit.trace``, :mod:`.executor` picks
TorchScript's executor, :mod:`.mcmc` serves HMC/NUTS and :mod:`.caches` the inspector.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from ... import options as run_options
from ...compat import jit as compat
from ...patch import PatchSet
from ...records.cache import CachedFunction
from ...run import torchcheck
from ...run.context import RunContext
from ...run.process import PROCESS
from ...run.recorder import MCMCPlan
from ...run.route import Ladder, MCMCRoute
from ...run.session import Session
from . import routes
from .caches import PyroCaches
from .calls import KeyCalls
from .executor import ExecutorSetting
from .mcmc import PyroMCMCRoute, potential_builder
from .routes import PyroRoute
from .traces import Traces


class PyroJit:
    """Pyro's JIT (``RunOptions(backend="pyro")``), and the tier below the whole step."""

    name = "pyro"
    compiles = True

    def __init__(self, session: Session) -> None:
        self.session = session
        self._caches = PyroCaches(session)
        self._ctx: RunContext | None = None
        self._calls: KeyCalls | None = None
        self._can_trace = False
        self._adaptive = False

    def install(self, ctx: RunContext, patches: PatchSet) -> None:
        import pyro.ops.jit
        import torch

        self._ctx = ctx
        # what this torch can do, checked here: the package admits any torch release
        cannot_trace = torchcheck.trace_problem()
        self._can_trace = callable(getattr(torch.jit, "trace", None)) and cannot_trace is None
        if not self._can_trace:
            ctx.recorder.notes.append(f"{cannot_trace}: the cell ran eager")
            self._calls = KeyCalls(ctx, adaptive=False)
            return
        executor = ctx.options.executor
        self._adaptive = executor == "adaptive"
        note = torchcheck.executor_problem(executor, run_options.DEFAULT_EXECUTOR)
        if note is not None:
            self._adaptive = False
            ctx.recorder.notes.append(note)
        setting = ExecutorSetting(executor)
        setting.apply()
        patches.on_restore(setting.restore)
        self._calls = calls = KeyCalls(ctx, self._adaptive)
        ctx.wrap(torch.jit, "trace", Traces(ctx, calls).wrapper, patches)
        ctx.wrap(pyro.ops.jit.CompiledFunction, "__call__", calls.wrapper, patches)
        recorder = ctx.recorder
        ctx.wrap(compat.potential_maker_class(), "get_potential_fn", lambda original: potential_builder(
            original, lambda: isinstance(recorder.current, MCMCPlan), PROCESS.compiling), patches)

    @staticmethod
    def wrapped() -> list[tuple[Any, str]]:
        import pyro.ops.jit
        import torch

        return [(torch.jit, "trace"), (pyro.ops.jit.CompiledFunction, "__call__"),
                (compat.potential_maker_class(), "get_potential_fn")]

    def route_svi(self, svi: Any, elbo: Any, target: str, as_written: Callable[..., Any]) -> PyroRoute:
        """How an SVI's steps run on Pyro's JIT: the route alone, for a ladder that stands above it."""
        assert self._ctx is not None
        return routes.plan_svi(self._ctx, self._calls, self._can_trace, svi, elbo, target, as_written)

    def route_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str,
                   as_written: Callable[..., Any], args: tuple[Any, ...]) -> PyroRoute:
        assert self._ctx is not None
        return routes.plan_loss(self._ctx, self._calls, self._can_trace, method, elbo, model, guide,
                                target, as_written, args)

    def plan_svi(self, svi: Any, elbo: Any, target: str, as_written: Callable[..., Any]) -> Ladder:
        return Ladder(self.route_svi(svi, elbo, target, as_written))

    def plan_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str,
                  as_written: Callable[..., Any], args: tuple[Any, ...]) -> Ladder:
        return Ladder(self.route_loss(method, elbo, model, guide, target, as_written, args))

    def plan_mcmc(self, mcmc: Any, target: str) -> MCMCRoute:
        assert self._ctx is not None
        return PyroMCMCRoute(self._ctx, mcmc, target, self._can_trace, self._adaptive)

    @property
    def can_trace(self) -> bool:
        """Whether this torch can trace (known once installed)."""
        return self._can_trace

    @property
    def adaptive(self) -> bool:
        """Whether the traces run under the adaptive executor (known once installed)."""
        return self._adaptive

    def cached(self, namespace: Mapping[str, Any], objects: list[Any] | None = None) -> list[CachedFunction]:
        return self._caches.cached(namespace, objects)

    def clear(self, ident: int | None = None) -> int:
        return self._caches.clear(ident)
