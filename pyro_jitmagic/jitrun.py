"""The core of ``%%pyrojit``: while a :class:`JitRun` is active, Pyro inference runs compiled.

Inference is caught where it runs, not in the cell's text: ``SVI.step``, the ELBOs' loss methods
and ``MCMC.run`` are wrapped at class level for the run (:mod:`.run.svi`, :mod:`.run.direct`,
:mod:`.run.mcmc`), so every object is caught wherever it was built. The run's compiler
(:mod:`.compilers`) plans each one, and every step is timed and recorded (:mod:`.run.recorder`).
Every patch goes through one :class:`~.patch.PatchSet`, undone in ``__exit__`` whatever ended the
run; what an earlier run, cut off, left patched is healed when the next one starts.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from typing import Any

from . import compilers
from .compilers.pyro import executor
from .options import RunOptions
from .patch import heal
from .policy.auto import AutoPolicy
from .records.report import JitReport, Progress
from .run import direct, mcmc, svi
from .run.context import RunContext
from .run.jit_warnings import WarningCapture, default_location_name
from .run.process import PROCESS
from .run.recorder import Recorder
from .run.session import Session


class JitRun:
    """Run Pyro inference compiled while the ``with`` block is active.

    This is the plain-Python twin of ``%%pyrojit``; see :func:`compiled`, which
    makes one with the caller's names. ``options`` (or the same fields by name)
    say how it runs; ``auto`` may be an :class:`AutoPolicy`.

    Parameters
    ----------
    options : RunOptions, optional
        How to run; fields given by name replace its own.
    names : mapping, optional
        A namespace used to name objects in the report (``"svi"``).
    name_location : callable, optional
        ``(filename, lineno) -> str``: how the report names a line (IPython names cells).
    session : Session, optional
        Where compiled companions are kept between runs (the process's default).
    announce : bool
        Warn once per risky JIT warning at the user's line when the block ends
        (for scripts, which show no report).
    auto_policy : AutoPolicy, optional
        With ``auto``: the policy that decides (by default the session's).
    on_first_use, on_progress, on_step : callable, optional
        Called with each SVI and MCMC object when first met (``--compare`` saves
        its state), with a :class:`~pyro_jitmagic.records.report.Progress` a few
        times a second, and after every step.
    source : str, optional
        The code the block runs (the magic passes the cell): with ``auto``, its loops tell how
        many steps each SVI will take (see :mod:`.policy.loops`).
    """

    def __init__(
        self,
        options: RunOptions | None = None,
        *,
        names: Mapping[str, Any] | None = None,
        name_location: Callable[[str, int], str] = default_location_name,
        session: Session | None = None,
        announce: bool = False,
        auto_policy: AutoPolicy | None = None,
        on_first_use: Callable[[Any], None] | None = None,
        on_progress: Callable[[Progress], None] | None = None,
        on_step: Callable[[], None] | None = None,
        source: str | None = None,
        **fields: Any,
    ) -> None:
        if isinstance(fields.get("auto"), AutoPolicy):  # compiled(auto=policy): --auto with that policy
            auto_policy, fields["auto"] = fields["auto"], True
        # (from the fields themselves when none are given: nothing named climbs every tier)
        options = RunOptions(**fields) if options is None else options.replace(**fields)
        self.options = options
        self.announce = announce
        self.session = session or PROCESS.session
        # --auto: the session's policy (or one given)
        auto = (auto_policy or self.session.auto) if options.auto else None
        self._ctx = RunContext(options, self.session, Recorder(options, auto, on_progress, on_step),
                               WarningCapture(options.warnings, name_location), names=names, auto=auto,
                               on_first_use=on_first_use)
        if auto is not None and source:  # how long the block runs, as its loops say
            from .policy.loops import step_counts

            self._ctx.step_counts = step_counts(source, names)
        self._error: BaseException | None = None
        self._report: JitReport | None = None

    # -- entering and leaving ------------------------------------------------
    def __enter__(self) -> JitRun:
        import torch

        ctx, recorder = self._ctx, self._ctx.recorder
        if self.options.seed is not None:
            from .run.seeds import seed_everything

            seed_everything(self.options.seed)
        recorder.cuda_initialized, recorder.synchronize = torch.cuda.is_initialized, torch.cuda.synchronize
        recorder.begin()
        for name in heal_leftovers():
            recorder.notes.append(f"restored {name}, left patched by an earlier run that was cut off")
        PROCESS.runs.append(self)
        PROCESS.unrestored += 1
        ctx.active = True
        try:
            ctx.capture.__enter__()
            ctx.compiler = compilers.make(self.options.backend, self.session, auto=self.options.auto)
            svi.install(ctx)
            mcmc.install(ctx)
            direct.install(ctx)
            ctx.compiler.install(ctx, ctx.patches)
        except BaseException:
            self._leave()
            raise
        return self

    def __exit__(self, exc_type: Any, exc: BaseException | None, tb: Any) -> None:
        self._ctx.recorder.end = self._ctx.recorder.clock()
        if exc is not None:
            self._error = exc
        self._ctx.ended_by = self._error  # (what is undone with the patches may depend on it)
        self._leave()
        if self.announce and self.options.warnings == "capture":
            self._ctx.capture.announce_risky()

    def _leave(self) -> None:
        self._ctx.active = False
        try:
            self._ctx.patches.restore()
            PROCESS.unrestored = max(PROCESS.unrestored - 1, 0)
            self._ctx.recorder.leave_express()  # (after the patches: nothing it does may keep them)
            self._ctx.recorder.learn()
        finally:
            try:
                self._ctx.capture.__exit__(None, None, None)
            finally:
                if self in PROCESS.runs:
                    PROCESS.runs.remove(self)

    def failed(self, error: BaseException | None) -> None:
        """Record the error that ended the code, when it was caught before the ``with`` ended
        (inside the ``with`` block, so that its end knows it)."""
        if error is not None:
            self._error = error
            self._report = None

    @property
    def report(self) -> JitReport | None:
        """What the block did (None while it runs): made once, when first asked for."""
        if self._ctx.recorder.end is None:
            return None
        if self._report is None:
            self._report = self.snapshot(self._error)
        return self._report

    def snapshot(self, exc: BaseException | None = None) -> JitReport:
        """The report of what has run so far."""
        return self._ctx.recorder.snapshot(exc, self._ctx.capture.captured())

    def compiled_objects(self) -> list[Any]:
        """The Jit* ELBOs and HMC/NUTS kernels this run compiled with: what the cell's caches hold."""
        return self._ctx.recorder.compiled_objects()


def heal_leftovers() -> list[str]:
    """Undo wrappers left by a run whose cleanup never ran; the names healed."""
    if PROCESS.runs or not PROCESS.unrestored:  # a wrapper of an active run is no leftover
        return []
    PROCESS.unrestored = 0
    targets = [*svi.wrapped(), *mcmc.wrapped(), *compilers.wrapped()]
    healed = [f"{getattr(owner, '__name__', owner)}.{name}" for owner, name in targets if heal(owner, name)]
    healed += direct.heal()
    if executor.heal():
        healed.append("the TorchScript executor settings")
    return healed


def compiled(
    options: RunOptions | None = None,
    *,
    names: Mapping[str, Any] | None = None,
    session: Session | None = None,
    **fields: Any,
) -> JitRun:
    """Run the Pyro inference inside a ``with`` block compiled, as ``%%pyrojit`` does.

    Every ``SVI.step`` whose ELBO has a Jit* counterpart runs compiled (warmed
    up first), and so does every ``MCMC.run`` with an HMC/NUTS kernel. So does
    every call of such an ELBO's ``differentiable_loss``, ``loss`` or
    ``loss_and_grads`` made in the block (a custom objective, a ``PyroModule``
    trained with a torch optimizer). By default each call signature climbs from
    eager through Pyro's JIT and the whole step to inductor's kernels as far as
    pays, as the magic does; ``backend="pyro"`` (``"step"``, ``"inductor"``)
    compiles with that backend from the first step instead. JIT warnings are
    captured, and each risky one is warned once, as a
    :class:`~.run.jit_warnings.RiskyTraceWarning` at the user's line, when the
    block ends. After the block, objects behave as written again and
    ``run.report`` says what happened.

    Parameters
    ----------
    options : RunOptions, optional
        How to run; any field of :class:`~pyro_jitmagic.RunOptions` can also be
        given by name (``warmup``, ``warnings``, ``auto``, ``executor``,
        ``max_entries``, ``seed``, ``backend``), as the magic's flags are. ``auto`` may
        be an :class:`AutoPolicy`: the climb with that policy instead of the session's.
    names : mapping, optional
        A namespace used to name objects in the report (``"svi"``); by default
        the calling module's globals.
    session : Session, optional
        Where compiled companions are kept between runs (the process's default).

    Examples
    --------
    >>> with pyro_jitmagic.compiled() as run:          # doctest: +SKIP
    ...     for _ in range(1000):
    ...         svi.step(data)
    >>> print(run.report)                               # doctest: +SKIP
    """
    if names is None:  # name objects as the calling script does
        names = sys._getframe(1).f_globals
    return JitRun(options, names=names, session=session, announce=True, **fields)
