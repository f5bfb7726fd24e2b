"""What one run shares with the code that intercepts and compiles for it (a :class:`RunContext`), and
what a compiler does for a run (the :class:`Compiler` protocol)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from ..options import RunOptions
from ..patch import ORIGINAL_ATTR, PatchSet, unwrap
from ..policy.auto import AutoPolicy
from .jit_warnings import WarningCapture
from .naming import name_in
from .recorder import Recorder
from .session import Session

if TYPE_CHECKING:
    from ..records.cache import CachedFunction
    from .route import Ladder, MCMCRoute


@dataclass
class RunContext:
    """One run's options, session, records and patches, as its wrappers and compiler see them.

    ``active`` is False once the run has ended: a wrapper can outlive its run when
    Pyro keeps a reference to it, and then calls straight through.
    """

    options: RunOptions
    session: Session
    recorder: Recorder
    capture: WarningCapture
    names: Mapping[str, Any] | None = None
    # --auto: the policy that decides (the session's, or one given); None without --auto
    auto: AutoPolicy | None = None
    # each SVI and MCMC, first met: --compare saves its state
    on_first_use: Callable[[Any], None] | None = None
    patches: PatchSet = field(default_factory=PatchSet)
    active: bool = False
    # inside SVI.evaluate_loss or Predictive: ELBO losses run as written there
    as_written: int = 0
    compiler: Compiler | None = None
    # --auto: how many steps the cell's loops make each SVI (by name) take, read from its text
    step_counts: Mapping[str, int] = field(default_factory=dict)
    # what ended the run, known as its patches are restored (None: it ran to the end)
    ended_by: BaseException | None = None

    def name_of(self, obj: Any, fallback: str) -> str:
        """``obj`` as the user's namespace names it, else ``fallback``."""
        return name_in(self.names, obj) or fallback

    def wrap(self, owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]],
             patches: PatchSet | None = None) -> None:
        """Replace ``owner.name`` by ``make(original)`` until the run ends (or ``patches`` are restored)."""
        original = unwrap(getattr(owner, name))
        wrapper = make(original)
        setattr(wrapper, ORIGINAL_ATTR, original)
        wrapper.__name__ = getattr(original, "__name__", name)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        (patches or self.patches).set(owner, name, wrapper)


class Compiler(Protocol):
    """A backend that compiles Pyro inference, behind the one seam.

    A compiler is made per run (and per cache inspection) with the session it
    keeps its objects in: ``compiler = COMPILERS[name](session)``.
    """

    #: Its name, as ``RunOptions.backend`` spells it.
    name: str
    #: False for the eager compiler: its runs compile nothing (no start-up paid, "eager" progress).
    compiles: bool

    def install(self, ctx: RunContext, patches: PatchSet) -> None:
        """While the run is active: the process-wide wrappers and settings it needs, through ``patches``."""

    def plan_svi(self, svi: Any, elbo: Any, target: str, as_written: Callable[..., Any]) -> Ladder:
        """How this SVI's steps run (``elbo`` is its ELBO, None for a custom loss);
        ``as_written`` is ``SVI.step`` itself."""

    def plan_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str,
                  as_written: Callable[..., Any], args: tuple[Any, ...]) -> Ladder:
        """How direct calls of ``elbo.method`` for this model and guide run; ``as_written`` is
        Pyro's method bound to ``elbo``, ``args`` the first call's positional arguments."""

    def plan_mcmc(self, mcmc: Any, target: str) -> MCMCRoute:
        """How this ``MCMC.run`` runs."""

    def cached(self, namespace: Mapping[str, Any], objects: list[Any] | None) -> list[CachedFunction]:
        """The compiled functions alive in the process (or those of ``objects``), for the inspector."""

    def clear(self, ident: int | None) -> int:
        """Drop the traces of the function ``ident`` from the last :meth:`cached` (None: all of
        them); how many were dropped."""

    @staticmethod
    def wrapped() -> list[tuple[Any, str]]:
        """Everything ``install`` wraps at class or module level, for healing a cut-off run."""
