"""Which TorchScript executor runs the traces a cell compiles.

Pyro hands its traces to TorchScript's graph executor, and how that executor
treats a trace is a process-wide torch setting that changes both what
compiling costs and how fast compiled steps are. Measured on the tutorial's
workloads (bench/bench_executor.py, figures in docs/benchmarks.md), torch's
default (the profiling executor, optimising) spends its first calls of every
trace profiling and re-optimising it: seconds per trace on the HMM, for steady
steps no faster than the trace run as recorded. ``no-opt``
(``torch.jit.optimized_execution(False)``) compiles 3 to 8 times cheaper on all
three workloads, runs the HMM's and NUTS's steady steps as fast or faster, and
loses only on the tiny simple-SVI graph (~0.1 ms a step). It is the default.

A setting applies while a cell runs and is restored after it, by
:class:`ExecutorSetting`; a trace keeps the executor kind (legacy or
profiling) it first ran under.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: The default: the trace runs as recorded, with no profiling runs and no optimisation passes.
DEFAULT = "no-opt"


@dataclass(frozen=True)
class Executor:
    name: str
    description: str
    # the torch flags it sets: graph executor optimize, profiling executor, profiling mode
    # (None: left as the user had it)
    flags: tuple[bool | None, bool | None, bool | None]


EXECUTORS = {
    "no-opt": Executor("no-opt", "traces run as recorded: torch.jit.optimized_execution(False)",
                       (False, None, None)),
    "optimizing": Executor("optimizing", "torch's default: the profiling executor, optimising each trace "
                                         "over its first calls", (True, True, True)),
    "legacy": Executor("legacy", "the executor before the profiling one, optimising on the first call "
                                 "(torch._C._jit_set_profiling_executor(False))", (True, False, False)),
}


def _flags() -> list[tuple[Callable[[], Any], Callable[[Any], Any]]]:
    """(get, set) of every torch flag a setting touches; the profiling pair has no getter
    of its own, so its setters (which return the old value) read it."""
    import torch

    c = torch._C
    return [(c._get_graph_executor_optimize, c._set_graph_executor_optimize),
            (lambda: _read(c._jit_set_profiling_executor), c._jit_set_profiling_executor),
            (lambda: _read(c._jit_set_profiling_mode), c._jit_set_profiling_mode)]


def _read(setter: Callable[[bool], bool]) -> bool:
    old = setter(True)
    setter(old)
    return old


def available() -> bool:
    """Whether this torch has the executor flags (they are private API)."""
    try:
        _flags()
    except (ImportError, AttributeError):
        return False
    return True


# Settings applied and not yet restored, newest last: a run cut off before its
# cleanup leaves its setting here, and the next run heals it (see heal()).
_APPLIED: list[ExecutorSetting] = []


def heal() -> bool:
    """Restore torch's flags under settings whose run never restored them; True if any."""
    healed = bool(_APPLIED)
    while _APPLIED:
        _APPLIED[-1].restore()
    return healed


class ExecutorSetting:
    """Set an executor for the length of a run; :meth:`restore` puts torch's flags back."""

    def __init__(self, name: str) -> None:
        if name not in EXECUTORS:
            raise ValueError(f"executor must be one of {', '.join(EXECUTORS)}, not {name!r}")
        self.executor = EXECUTORS[name]
        self._saved: list[tuple[Callable[[Any], Any], Any]] = []

    def apply(self) -> None:
        if not available():
            return
        _APPLIED.append(self)
        for (get, set_), value in zip(_flags(), self.executor.flags, strict=True):
            if value is not None:
                self._saved.append((set_, get()))
                set_(value)

    def restore(self) -> None:
        while self._saved:
            set_, value = self._saved.pop()
            set_(value)
        if self in _APPLIED:
            _APPLIED.remove(self)
