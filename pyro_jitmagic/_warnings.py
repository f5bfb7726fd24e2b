"""Capture the JIT's warnings instead of printing them, and tell the risky ones apart.

Tracing a Pyro model raises dozens of ``TracerWarning``s. Most are harmless
(constants registered in the trace), but one family means the compiled loss may
be wrong: a tensor turned into a Python value (``if x > 0:``, ``int(n)``,
iterating a tensor). Those are *risky*; we point at the user's line that did it.
Warnings that are not the JIT's pass through to the previous handler untouched.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import warnings
from collections.abc import Callable
from typing import Any, Literal

from .report import CapturedWarning, WarningKind

Mode = Literal["capture", "show", "error"]

# Substrings of torch's TracerWarning texts (torch/csrc/jit/frontend/tracer.cpp,
# torch/jit/_trace.py) that mean "a value was baked into the trace".
_RISKY_PATTERNS = re.compile(
    "|".join(
        [
            r"Converting a tensor to a Python",
            r"Converting a tensor to a NumPy",
            r"Iterating over a tensor",
            r"might cause the trace to be incorrect",
            r"might not generalize",
            r"cannot be understood by the tracer",
            r"does not match the corresponding output",
            r"[Gg]raphs differ across invocations",
            r"nondeterministic nodes",
            # pyro/ops/jit.py: an unhashable keyword value is keyed by id(), so a
            # mutated object silently reuses a stale trace.
            r"Failed to hash kwargs",
        ]
    )
)
# Says "might cause the trace to be incorrect" too, but only for tensors built
# from Python constants, which Pyro's distributions do on every call.
_BENIGN_PATTERNS = re.compile(r"results are registered as constants")
_DEPRECATION = re.compile(r"torch\.jit\.\w+.*deprecated", re.DOTALL)


def _library_dirs() -> tuple[str, ...]:
    import pyro
    import torch

    dirs = [os.path.dirname(m.__file__ or "") for m in (torch, pyro, warnings)]
    dirs.append(os.path.dirname(__file__))
    return tuple(d + os.sep for d in dirs if d)


class RiskyTraceWarning(UserWarning):
    """Shown by ``pyro_jitmagic.compiled()`` for each risky JIT warning it captured."""


def classify(category: type[Warning], message: str, filename: str) -> WarningKind | None:
    """The kind of a JIT warning, or None when the warning is not the JIT's."""
    import torch

    tracer_warning = getattr(torch.jit, "TracerWarning", None)
    if tracer_warning is not None and issubclass(category, tracer_warning):
        if _BENIGN_PATTERNS.search(message):
            return "benign"
        return "risky" if _RISKY_PATTERNS.search(message) else "benign"
    if issubclass(category, (DeprecationWarning, FutureWarning)) and _DEPRECATION.search(message):
        return "deprecation"
    if filename.replace(os.sep, "/").endswith("pyro/ops/jit.py"):
        return "risky" if _RISKY_PATTERNS.search(message) else "benign"
    return None


def default_location_name(filename: str, lineno: int) -> str:
    return f"{os.path.basename(filename)}:{lineno}"


class WarningCapture:
    """Context manager that records JIT warnings and forwards all others.

    Parameters
    ----------
    mode : {"capture", "show", "error"}
        ``"show"`` also prints each JIT warning as usual; ``"error"`` is handled
        by the runner, which asks :meth:`risky_since` after each trace.
    name_location : callable
        ``(filename, lineno) -> str``; IPython's runner names cells ``In[3]``.
    """

    def __init__(
        self,
        mode: Mode = "capture",
        name_location: Callable[[str, int], str] = default_location_name,
    ) -> None:
        self.mode = mode
        self.name_location = name_location
        self._groups: dict[tuple[str, str, str, str], list[Any]] = {}
        self._risky_count = 0
        self._catcher: Any = None
        self._library: tuple[str, ...] = ()

    # -- recording ---------------------------------------------------------
    def __enter__(self) -> WarningCapture:
        import torch

        self._library = _library_dirs()
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        tracer_warning = getattr(torch.jit, "TracerWarning", None)
        if tracer_warning is not None:
            # "always": the default "once per location" would hide the second
            # compile's warnings from its report.
            warnings.filterwarnings("always", category=tracer_warning)
        warnings.filterwarnings("always", message=r".*torch\.jit.*deprecated", category=DeprecationWarning)
        warnings.filterwarnings("always", message=r".*torch\.jit.*deprecated", category=FutureWarning)
        warnings.filterwarnings("always", message=r"Failed to hash kwargs")
        previous = warnings.showwarning

        def showwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                        file: Any = None, line: str | None = None) -> None:
            kind = classify(category, str(message), filename)
            if kind is None:
                previous(message, category, filename, lineno, file, line)
                return
            self._record(kind, category, str(message), filename, lineno)
            if self.mode == "show":
                previous(message, category, filename, lineno, file, line)

        warnings.showwarning = showwarning
        return self

    def __exit__(self, *exc: Any) -> None:
        self._catcher.__exit__(*exc)

    def _user_frame(self, filename: str, lineno: int) -> tuple[str, int]:
        from ._stack import caller_frame

        frame: Any = sys._getframe(2)
        caller = caller_frame()
        while frame is not None:
            name = frame.f_code.co_filename
            if not name.startswith(self._library) and not name.startswith("<frozen"):
                return name, frame.f_lineno
            frame = frame.f_back
            if frame is None:  # a trace runs on a thread of its own (see _stack): go on up its caller's
                frame, caller = caller, None
        return filename, lineno

    def _record(self, kind: WarningKind, category: type[Warning], message: str,
                filename: str, lineno: int) -> None:
        user_file, user_line = self._user_frame(filename, lineno)
        where = self.name_location(user_file, user_line)
        key = (kind, category.__name__, message, where)
        group = self._groups.get(key)
        if group is None:
            source = linecache.getline(user_file, user_line).strip()
            self._groups[key] = [source, 1, user_file, user_line]
        else:
            group[1] += 1
        if kind == "risky":
            self._risky_count += 1

    def checkpoint(self) -> Any:
        """What has been captured so far, for :meth:`rollback`."""
        return {key: list(group) for key, group in self._groups.items()}, self._risky_count

    def rollback(self, checkpoint: Any) -> None:
        """Forget what was captured since ``checkpoint``: warnings of a trace that was thrown away."""
        groups, self._risky_count = checkpoint
        self._groups = {key: list(group) for key, group in groups.items()}

    # -- reading -----------------------------------------------------------
    @property
    def risky_count(self) -> int:
        return self._risky_count

    def risky_since(self, count: int) -> list[CapturedWarning]:
        """Risky warning groups recorded after ``risky_count`` was ``count``."""
        if self._risky_count == count:
            return []
        return [w for w in self.captured() if w.kind == "risky"]

    def announce_risky(self) -> None:
        """Warn once per risky group at the user's line, for scripts that show no report."""
        for w in self.captured():
            if w.kind == "risky":
                warnings.warn_explicit(
                    f"{w.message.splitlines()[0]} (while compiling: the compiled step may "
                    "compute a wrong result for other inputs)",
                    RiskyTraceWarning, w.filename, w.lineno)

    def captured(self) -> tuple[CapturedWarning, ...]:
        order = {"risky": 0, "deprecation": 1, "benign": 2}
        items = [
            CapturedWarning(kind=k[0], category=k[1], message=k[2], where=k[3],  # type: ignore[arg-type]
                            source=v[0], count=v[1], filename=v[2], lineno=v[3])
            for k, v in self._groups.items()
        ]
        return tuple(sorted(items, key=lambda w: order[w.kind]))
