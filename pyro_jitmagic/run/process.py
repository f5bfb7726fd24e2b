"""What is process-wide by nature, in one object: :data:`PROCESS`.

A run patches classes and torch's executor flags, which every shell, thread and script in the
process shares. So what runs must know of each other lives here, not in module globals: the runs
active now (a wrapper found with none active is a leftover), the executor settings not yet
restored, and whether torch's start-up is paid. It also holds the default :class:`~.session.Session`,
which the magic and the twins share. What is per thread stays beside its reason (:mod:`.stack`,
:mod:`.tensor_reads`).
"""

from __future__ import annotations

from typing import Any

from .session import Session


class Process:
    """The process's runs, executor settings, start-up and default session."""

    def __init__(self) -> None:
        # runs active now, innermost last (a JitRun each)
        self.runs: list[Any] = []
        # runs that patched and have not restored their patches (active, or cut off before their
        # cleanup): none, and there is nothing to heal (looking was part of every cell's set-up)
        self.unrestored = 0
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
