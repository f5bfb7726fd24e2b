"""What is process-wide by nature, in one object: :data:`PROCESS`.

A run patches classes and functions (``SVI.step``, ``torch.jit.trace``, the
code of Pyro's ELBO loss methods) and torch's executor flags, which every
shell, thread and script in the process shares. So what a run must find of
the others is process-wide too, and it is all here rather than in module
globals: the runs active now (a wrapper found installed while none is active
is a leftover, healed by the next run), the executor settings applied and not
yet restored, whether torch's one-off start-up has been paid, what was learned
of this torch and this Pyro, and the default :class:`~.session.Session`, which
the magic and the plain-Python twins share (compiled traces belong to ELBO
objects, which are process-wide themselves).

Two things stay per thread, each beside its reason: the frame that called a
trace moved to a shallow stack (:mod:`.stack`), and the read a traced tensor is
making (:mod:`.reads`); and the trampolines' target (:data:`.direct.calls`) is a
constant in their code.
"""

from __future__ import annotations

from typing import Any

from .session import Session


class Process:
    """The process's runs, executor settings, start-up and default session."""

    def __init__(self) -> None:
        # runs active now, innermost last (a JitRun each)
        self.runs: list[Any] = []
        # executor settings applied and not yet restored, newest last (an ExecutorSetting each)
        self.executor_settings: list[Any] = []
        # torch's one-off start-up was paid (see seeds.prime_once)
        self.primed = False
        # trace function -> (it, why it cannot trace or None): tried once per function
        self.trace_checks: dict[int, tuple[Any, str | None]] = {}
        # the installed Pyro's ELBO loss functions, as direct.py catches them: found once
        self.loss_methods: dict[str, Any] = {}
        self._session: Session | None = None

    @property
    def session(self) -> Session:
        """The default session: where ``%%pyrojit`` and the twins keep compiled companions."""
        if self._session is None:
            self._session = Session()
        return self._session

    def compiling(self) -> bool:
        """Whether the innermost active run compiles (not the eager half of ``--compare``)."""
        return bool(self.runs) and self.runs[-1].options.compiles


#: The one process-wide object.
PROCESS = Process()
