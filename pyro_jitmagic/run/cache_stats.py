"""What the compile caches cost, as runs record it: per compiled function and cache key.

A session's :class:`CacheStats` holds each key's compile time and every call served, whichever
compiler made the function, and warns of one that keeps compiling (:class:`RecompilationWarning`).
It holds all of it weakly: a dropped ELBO takes its traces and its figures with it. The inspector
(:mod:`..inspector`) reads it beside what the compilers find alive.
"""

from __future__ import annotations

import time
import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

# The recompilation watch: warn when a function holds at least WATCH_MIN_ENTRIES
# traces and made a new one on most of its last WATCH_WINDOW calls, or holds
# more than WATCH_MAX_ENTRIES however slowly they came.
WATCH_MIN_ENTRIES = 4
WATCH_WINDOW = 8
WATCH_MAX_ENTRIES = 32


class RecompilationWarning(UserWarning):
    """A compiled function keeps compiling new traces: a keyword value changes between calls."""


@dataclass
class EntryStats:
    compile_seconds: float | None = None
    hits: int = 0
    last_hit: float | None = None
    trial: Any = None  # the executor it runs under with --executor adaptive (an executor.ExecutorTrial)
    args: tuple[Any, ...] = ()  # the positional arguments it was compiled for: shapes or type names
    guards: Any = None  # what its trace assumed of the world (a guards.Guards), checked on each call
    layout: Any = None  # its positional arguments' shapes, dtypes and strides (or types), checked too
    sentinel: Any = None  # when its calls are checked against eager's (a guards.Sentinel)


@dataclass
class FunctionStats:
    entries: dict[Any, EntryStats] = field(default_factory=dict)
    recent_new: deque[bool] = field(default_factory=lambda: deque(maxlen=WATCH_WINDOW))
    last_key: Any = None
    warned: bool = False
    eager_past_cap: int = 0

    def keeps_recompiling(self, entries: int) -> bool:
        if self.warned:
            return False
        if entries > WATCH_MAX_ENTRIES:
            return True
        return (entries >= WATCH_MIN_ENTRIES and len(self.recent_new) == WATCH_WINDOW
                and sum(self.recent_new) > WATCH_WINDOW // 2)


class CacheStats:
    """Per compiled function and key: compile time, hits, last hit."""

    def __init__(self) -> None:
        self._functions: weakref.WeakKeyDictionary[Any, FunctionStats] = weakref.WeakKeyDictionary()
        # a trace never changes: its size, code and input shapes are worked out once
        self._graphs: weakref.WeakKeyDictionary[Any, tuple[int, str, tuple[str, ...]]] = (
            weakref.WeakKeyDictionary())

    def graph(self, traced: Any, work_out: Callable[[Any], tuple[int, str, tuple[str, ...]]],
              ) -> tuple[int, str, tuple[str, ...]]:
        """A trace's size, code and input shapes, as ``work_out`` finds them: once per trace."""
        try:
            known = self._graphs.get(traced)
        except TypeError:  # not weakly referenceable: work it out each time
            return work_out(traced)
        if known is None:
            known = self._graphs[traced] = work_out(traced)
        return known

    def of(self, compiled: Any) -> FunctionStats:
        stats = self._functions.get(compiled)
        if stats is None:
            stats = self._functions[compiled] = FunctionStats()
        return stats

    def known(self, compiled: Any) -> FunctionStats | None:
        return self._functions.get(compiled)

    def hit(self, compiled: Any, key: Any, compile_seconds: float | None = None, calls: int = 1) -> None:
        entry = self.of(compiled).entries.setdefault(key, EntryStats())
        if compile_seconds is not None:
            entry.compile_seconds = compile_seconds
        entry.hits += calls
        entry.last_hit = time.time()
