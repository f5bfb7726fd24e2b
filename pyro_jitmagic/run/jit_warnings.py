"""Capture the JIT's warnings instead of printing them, and tell the risky ones apart.

Tracing a Pyro model raises dozens of ``TracerWarning``s. One family means the compiled loss may be
wrong: a tensor read as a Python value, which the trace then holds as a constant. A size read is
benign (a trace assumes its shapes, whoever reads them), and so is a value read by a torch or Pyro
function in :data:`REVIEWED_READS`. Any other value read is risky, named at the user's line: an
unreviewed read is not assumed harmless. A tensor used as a Python integer, which torch does not
warn of, is reported too (:mod:`.tensor_reads`). Other warnings pass through untouched.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType
from typing import Any

from ..options import WarningMode as Mode
from ..records.report import CapturedWarning, WarningKind
from .tensor_reads import current_read

# Substrings of torch's TracerWarning texts (torch/csrc/jit/frontend/tracer.cpp,
# torch/csrc/utils/python_arg_parser.cpp, torch/_tensor.py, torch/jit/_trace.py,
# torch 2.13) that mean "the trace may not compute what the code does".
_RISKY_PATTERNS = re.compile(
    "|".join(
        [
            r"Converting a tensor to a Python",
            r"Converting a tensor to a NumPy",
            r"Iterating over a tensor",
            r"might cause the trace to be incorrect",
            r"might not generalize",
            r"cannot be understood by the tracer",
            r"show up as a constant in the graph",
            r"does not match the corresponding output",
            r"[Gg]raphs differ(ed)? across invocations",
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
# The reads that are judged by what was read and who read it.
_VALUE_READS = re.compile(
    r"Converting a tensor to a (Python|NumPy)|Iterating over a tensor|Using len to get tensor shape"
    r"|Using a tensor as a Python integer")

# torch's notices that TorchScript is deprecated, in every text known (torch/jit/*.py):
# "`torch.jit.trace` is deprecated. Please switch to ...", on Python 3.14+
# "`torch.jit.trace` is not supported in Python 3.14+ and may break. ...", the same
# for trace_method, script, script_method, save, load, freeze, fork, wait, interface,
# set_fusion_strategy and optimize_for_inference; "`optimize` is deprecated and has no
# effect. Use `with torch.jit.optimized_execution()` instead" (jit_options={"optimize": ...});
# and "Lite Interpreter is deprecated. ...". DeprecationWarning up to torch 2.13 (FutureWarning
# for `optimize`), FutureWarning from 2.14.
DEPRECATION_TEXT = (r"(`torch\.jit\.\w+` is (deprecated|not supported in Python [\d.]+\+)"
                    r"|`optimize` is deprecated and has no effect"
                    r"|Lite Interpreter is deprecated"
                    r"|TorchScript is deprecated)")
_DEPRECATION = re.compile(DEPRECATION_TEXT)
# Reads of a size, whatever the tensor (torch/_tensor.py: __len__, __iter__).
_SIZE_READS = re.compile(r"Iterating over a tensor|Using len to get tensor shape")
SIZE_READ = "reads a tensor's size, not its values: a trace assumes the shapes it was traced with"

#: What a tensor used as a Python integer while tracing is reported as: torch
#: itself says nothing (``range(n)`` calls ``Tensor.__index__``, which does not warn).
INTEGER_READ = ("Using a tensor as a Python integer (range(), a repeat count) might cause the trace "
                "to be incorrect: the trace keeps the number it had while tracing, for every later "
                "call with the same cache key. Pass the number as a keyword argument (Pyro compiles "
                "one trace per value), or keep it a tensor. (Reported by pyro_jitmagic: torch does "
                "not warn about this one.)")


@dataclass(frozen=True)
class ReviewedRead:
    """A value read inside torch or Pyro, reviewed and found not to change the compiled result.

    ``path`` is the file under site-packages (``"torch/nn/functional.py"``),
    ``function`` the function's qualified name (``"*"``: any in the file),
    ``reads`` a pattern of the warnings it was reviewed for, ``why`` the reason.
    """

    path: str
    function: str
    reads: str
    why: str

    def matches(self, path: str, function: str, message: str) -> bool:
        # Python 3.10 has no co_qualname: a method is known by its own name there
        named = self.function in ("*", function) or self.function.endswith("." + function)
        return path == self.path and named and re.search(self.reads, message) is not None


#: Value reads inside torch and Pyro that cannot change the compiled result. Found by
#: tracing a VAE with Bernoulli(logits) and AutoNormal, the HMM of Pyro's examples/hmm.py
#: (model_1: enumeration, pyro.markov, a subsampled plate), a deep Markov model (masks,
#: poutine.scale, an RNN and an IAF in the guide), TraceGraph_ELBO, the low-rank and IAF
#: AutoGuides, and NUTS potentials (logistic regression, an enumerated mixture,
#: LKJCholesky), under torch 2.13 and Pyro 1.9.2; the other reads those models make are of
#: sizes (Bernoulli's shape check, masks, broadcasting, plates, sums over plates, RNN and
#: factor shape checks).
#: Each has a test that traces a small model triggering it (tests/core/test_warning_triage.py).
REVIEWED_READS = (
    ReviewedRead("torch/distributions/distribution.py", "Distribution.__init__", "Python boolean",
                 "validation: checks the parameters against their constraints and only raises"),
    ReviewedRead("torch/distributions/distribution.py", "Distribution._validate_sample", "Python boolean",
                 "validation: checks a value's support and only raises"),
    ReviewedRead("torch/_tensor_str.py", "*", ".",
                 "formats a tensor as text (print, repr): the trace records nothing it reads"),
    ReviewedRead("torch/_tensor.py", "Tensor.__format__", "Python number",
                 "formats a tensor as text (an f-string): the trace records nothing it reads"),
    ReviewedRead("pyro/distributions/transforms/affine_autoregressive.py", "AffineAutoregressive._inverse",
                 "Python integer",
                 "indexes a list by the network's input permutation, a buffer fixed when the transform "
                 "is built"),
)

# Frames that only forward a call for someone else: the read is their caller's.
_FORWARDING = {("torch/overrides.py", "handle_torch_function"),
               ("pyro/ops/provenance.py", "__torch_function__")}


class _Places:
    """Where code lives: torch's, Pyro's, the standard library's, ours, or the user's."""

    def __init__(self) -> None:
        import pyro
        import torch

        self.roots = [(os.path.dirname(m.__file__ or "") + os.sep, m.__name__) for m in (torch, pyro)]
        self.ours = os.path.dirname(os.path.dirname(__file__)) + os.sep  # the whole package
        self.stdlib = os.path.dirname(warnings.__file__) + os.sep

    def relative(self, filename: str) -> str | None:
        """``"torch/nn/functional.py"`` for a file of torch or Pyro, else None."""
        for root, name in self.roots:
            if filename.startswith(root):
                return name + "/" + filename[len(root):].replace(os.sep, "/")
        return None

    def is_library(self, filename: str) -> bool:
        if filename.startswith("<frozen") or filename.startswith(self.ours):
            return True
        if self.relative(filename) is not None:
            return True
        # the standard library, but not packages installed beneath it (a user's among them)
        rest = filename[len(self.stdlib):] if filename.startswith(self.stdlib) else None
        return rest is not None and "site-packages" not in rest and "dist-packages" not in rest

    def forwards(self, frame: FrameType) -> bool:
        if frame.f_code.co_filename.startswith(self.ours):  # our wrappers and watch read nothing
            return True
        path = self.relative(frame.f_code.co_filename)
        if path is None:
            return False
        name = frame.f_code.co_name
        # Tensor's own Python methods read for their caller (__contains__, __array__, ...);
        # __format__ only makes text, and is reviewed as such
        return (path, name) in _FORWARDING or (path == "torch/_tensor.py" and name != "__format__")


def _function_name(code: Any) -> str:
    return getattr(code, "co_qualname", code.co_name)


class RiskyTraceWarning(UserWarning):
    """Shown by ``pyro_jitmagic.compiled()`` for each risky JIT warning it captured."""


def classify(category: type[Warning], message: str, filename: str) -> WarningKind | None:
    """The kind of a JIT warning from its text alone, or None when the warning is not the JIT's.

    A value read is risky here; :class:`WarningCapture` then judges it by the frame that read it.
    """
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


@dataclass(frozen=True)
class _Judgement:
    kind: WarningKind
    origin: str = ""  # the library function that read the value
    why: str = ""  # why a library read is benign


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
        self._groups: dict[tuple[str, ...], list[Any]] = {}
        self._risky_count = 0
        self._catcher: Any = None
        self._places: _Places | None = None

    # -- recording ---------------------------------------------------------
    def __enter__(self) -> WarningCapture:
        import torch

        self._places = _Places()
        self._catcher = warnings.catch_warnings()
        self._catcher.__enter__()
        tracer_warning = getattr(torch.jit, "TracerWarning", None)
        if tracer_warning is not None:
            # "always": the default "once per location" would hide the second
            # compile's warnings from its report.
            warnings.filterwarnings("always", category=tracer_warning)
        for category in (DeprecationWarning, FutureWarning):
            warnings.filterwarnings("always", message=DEPRECATION_TEXT, category=category)
        warnings.filterwarnings("always", message=r"Failed to hash kwargs")
        previous = warnings.showwarning

        def showwarning(message: Any, category: type[Warning], filename: str, lineno: int,
                        file: Any = None, line: str | None = None) -> None:
            kind = classify(category, str(message), filename)
            if kind is None:
                previous(message, category, filename, lineno, file, line)
                return
            user_file, user_line = self._record(kind, category, str(message), filename, lineno)
            if self.mode == "show":  # at the user's line (torch may name its own, or ours)
                previous(message, category, user_file, user_line, file, None)

        warnings.showwarning = showwarning
        return self

    def __exit__(self, *exc: Any) -> None:
        self._catcher.__exit__(*exc)

    def _frame_named(self, filename: str, lineno: int) -> FrameType | None:
        """The frame a warning names (torch names the frame that called it)."""
        frame: FrameType | None = sys._getframe(2)
        while frame is not None:
            if frame.f_code.co_filename == filename and frame.f_lineno == lineno:
                return frame
            frame = frame.f_back
        return None

    def _user_frame(self, frame: FrameType | None, filename: str, lineno: int) -> tuple[str, int]:
        from .stack import caller_frame

        assert self._places is not None
        caller = caller_frame()
        if frame is None:
            frame = sys._getframe(2)
        while frame is not None:
            name = frame.f_code.co_filename
            if not self._places.is_library(name):
                return name, frame.f_lineno
            frame = frame.f_back
            if frame is None:  # a trace runs on a thread of its own (see stack.py): go on up its caller's
                frame, caller = caller, None
        return filename, lineno

    def _judge(self, kind: WarningKind, message: str, frame: FrameType | None,
               filename: str) -> tuple[_Judgement, FrameType | None]:
        """Judge a value read (see the module's docstring); also the frame that read it."""
        assert self._places is not None
        if kind != "risky" or not _VALUE_READS.search(message):
            return _Judgement(kind), frame
        read = current_read()  # set by watch_reads, whose wrapper is the frame torch names
        reader, size = read if read is not None else (frame, False)
        while reader is not None and self._places.forwards(reader):
            reader = reader.f_back
        size = size or _SIZE_READS.search(message) is not None
        if reader is None:  # not on this stack: judged by the file torch named
            library = self._places.is_library(filename)
            origin = (self._places.relative(filename) or os.path.basename(filename)) if library else ""
            return _Judgement("benign" if size else "risky", origin, SIZE_READ if size else ""), None
        name = reader.f_code.co_filename
        origin = ""
        if self._places.is_library(name):
            function = _function_name(reader.f_code)
            origin = f"{self._places.relative(name) or os.path.basename(name)}: {function}"
        if size:
            return _Judgement("benign", origin, SIZE_READ), reader
        if not origin:
            return _Judgement("risky"), reader
        path, function = origin.split(": ", 1)
        for reviewed in REVIEWED_READS:
            if reviewed.matches(path, function, message):
                return _Judgement("benign", origin, reviewed.why), reader
        return _Judgement("risky", origin), reader

    def _record(self, kind: WarningKind, category: type[Warning], message: str,
                filename: str, lineno: int) -> tuple[str, int]:
        """Record a JIT warning; the user's file and line it is filed under."""
        frame = self._frame_named(filename, lineno)
        judged, reader = self._judge(kind, message, frame, filename)
        user_file, user_line = self._user_frame(reader or frame, filename, lineno)
        where = self.name_location(user_file, user_line)
        key = (judged.kind, category.__name__, message, where, judged.origin)
        group = self._groups.get(key)
        if group is None:
            source = linecache.getline(user_file, user_line).strip()
            self._groups[key] = [source, 1, user_file, user_line, judged.why]
        else:
            group[1] += 1
        if judged.kind == "risky":
            self._risky_count += 1
        return user_file, user_line

    def integer_read(self, frame: FrameType) -> None:
        """``frame`` used a tensor that holds no size as a Python integer while tracing (see
        :func:`~.tensor_reads.watch_reads`): torch does not warn, so warn as torch would."""
        import torch

        module = frame.f_globals.get("__name__", "")
        warnings.warn_explicit(INTEGER_READ, torch.jit.TracerWarning, frame.f_code.co_filename,
                               frame.f_lineno, module=module)

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
                inside = f"; read in {w.origin}" if w.origin else ""
                warnings.warn_explicit(
                    f"{w.message.splitlines()[0]} (while compiling{inside}: the compiled step may "
                    "compute a wrong result for other inputs)",
                    RiskyTraceWarning, w.filename, w.lineno)

    def captured(self) -> tuple[CapturedWarning, ...]:
        order = {"risky": 0, "deprecation": 1, "benign": 2}
        items = [
            CapturedWarning(kind=k[0], category=k[1], message=k[2], where=k[3],  # type: ignore[arg-type]
                            source=v[0], count=v[1], filename=v[2], lineno=v[3], origin=k[4], why=v[4])
            for k, v in self._groups.items()
        ]
        return tuple(sorted(items, key=lambda w: order[w.kind]))
