"""The compiler seam: what a compiler does for a run, and what the run does for it.

The run intercepts inference where it runs (``SVI.step``, the ELBO loss methods,
``MCMC.run``; see :mod:`..svi`, :mod:`..direct`, :mod:`..mcmc`), times and records
every step, and leaves the rest to a :class:`Compiler`: for each SVI object,
each ELBO loss the cell calls itself (per model and guide) and each MCMC run,
the compiler returns a *route* that says whether and how it runs compiled.
Interception, recording, ``--compare`` and the cache inspector see routes,
:class:`~pyro_jitmagic.records.cache.CachedFunction` records and the run's
:class:`~..recorder.Recorder`, never which compiler made a step.

A compiler reports what it did through the run's recorder (``ctx.recorder``):
each trace or graph it built (:meth:`~..recorder.Recorder.record_compile`),
notes, a step whose random draws part from eager's, and with ``--auto`` the
per-key tallies that :class:`~..auto.AutoPolicy` decides from; the recorder
makes the report from them, the same for every compiler.

Today's compilers are Pyro's JIT (:mod:`.pyro_jit`) and the eager one that
records the cell as written (:mod:`.eager`, the first run of ``--compare``). A
compiler of the whole step (loss, gradients and optimizer update in one graph)
fits the same seam: its SVI route's ``call`` runs one compiled ``svi.step``,
returns eager's float loss and owns the optimizer state between calls; its
MCMC route's ``prepare`` installs a compiled potential-and-gradient on the
kernel for the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from ..patch import PatchSet
    from ..records.cache import CachedFunction
    from .context import RunContext
    from .mcmc import MCMCClock


@dataclass
class Route:
    """How one SVI's steps, or one ELBO loss's direct calls, run in one run.

    ``call(*head, *args, **kwargs)`` runs one step (the run's ``head`` is
    ``(svi,)`` for an SVI, ``(model, guide)`` for a loss called directly) and
    returns what the eager step returns. ``before`` and ``after`` name the
    inference as written and as run, ``reason`` says why it runs as it does
    when that is not plain (empty otherwise), ``note`` is said once in the
    report. ``runner`` is what a compiled step runs on (the cache tab of
    ``--compare`` shows its caches); ``warm`` the ELBO to warm up eagerly before
    the first compiled step (AutoGuide prototype, ``max_plate_nesting``), or None.
    """

    before: str
    after: str
    compiled: bool
    call: Callable[..., Any]
    reason: str = ""
    note: str = ""
    runner: Any = None
    warm: Any = None

    def recover(self, exc: BaseException) -> bool:
        """A compiled step failed with ``exc``: when that is a limit of the compiler (not the
        user's to fix), put back what the failed step changed, make this route eager from now
        on (``call``, ``compiled``, ``after``, ``reason``) and return True to run it again."""
        return False

    def advice(self, exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
        """One line on what to do about ``exc``, raised by a compiled step; None when none is known."""
        return None

    def first_done(self) -> str | None:
        """After the first step: anything the compiler does then; a note for the report, or None."""
        return None


@dataclass
class MCMCRoute:
    """How one ``MCMC.run`` runs: its switch, and what the compiler does around it.

    ``prepare`` runs before ``MCMC.run``: it may patch the kernel for the run
    (through ``patches``, restored after it) and set the clock's hooks around
    each sample (:class:`~..mcmc.MCMCClock`). ``finish`` runs after it, whatever
    ended it. ``runner`` is what the run compiled with (the kernel), or None.
    """

    before: str
    after: str
    compiled: bool
    reason: str = ""
    runner: Any = None

    def prepare(self, patches: PatchSet, clock: MCMCClock) -> None:
        """Before the run: patch the kernel for it, set the clock's hooks."""

    def finish(self, clock: MCMCClock, compile_seconds: float) -> None:
        """After the run, whatever ended it."""


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

    def plan_svi(self, svi: Any, elbo: Any, target: str, as_written: Callable[..., Any]) -> Route:
        """How this SVI's steps run (``elbo`` is its ELBO, None for a custom loss);
        ``as_written`` is ``SVI.step`` itself."""

    def plan_loss(self, method: str, elbo: Any, model: Any, guide: Any, target: str,
                  as_written: Callable[..., Any], args: tuple[Any, ...]) -> Route:
        """How direct calls of ``elbo.method`` for this model and guide run; ``as_written`` is
        Pyro's method bound to ``elbo``, ``args`` the first call's positional arguments."""

    def plan_mcmc(self, mcmc: Any, target: str) -> MCMCRoute:
        """How this ``MCMC.run`` runs."""

    def step_begins(self) -> None:
        """An SVI step (or a direct loss call) begins: forget what the last one noted."""

    def step_ends(self, seconds: float | None, step: int) -> None:
        """It ended after ``seconds`` (None: it failed), as step ``step`` of its SVI or loss."""

    def cached(self, namespace: Mapping[str, Any], objects: list[Any] | None) -> list[CachedFunction]:
        """The compiled functions alive in the process (or those of ``objects``), for the inspector."""

    def clear(self, ident: int | None) -> int:
        """Drop the traces of the function ``ident`` from the last :meth:`cached` (None: all of
        them); how many were dropped."""

    @staticmethod
    def wrapped() -> list[tuple[Any, str]]:
        """Everything ``install`` wraps at class or module level, for healing a cut-off run."""
