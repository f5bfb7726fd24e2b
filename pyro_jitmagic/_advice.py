"""One line of advice for the JIT failures every Pyro user meets.

Each rule recognises a failure from the exception and the step's arguments and
says what to change. The advice is attached to the original exception as a
note (PEP 678), so it prints right under the error, and goes in the report.
"""

from __future__ import annotations

from typing import Any


class JitMagicError(RuntimeError):
    """A problem ``%%pyrojit`` found and stopped on, with what to do about it."""


class RiskyTraceError(JitMagicError):
    """``--warnings error``: a trace converted a tensor to a Python value."""


class StrayParamError(JitMagicError):
    """A ``pyro.param`` was first created while tracing."""


NOTE_PREFIX = "pyro_jitmagic: "


def _type_name(value: Any) -> str:
    return type(value).__name__


def advise(exc: BaseException, args: tuple[Any, ...], kwargs: dict[str, Any],
           check_trace: bool = False) -> str | None:
    """What to do about ``exc`` raised by a compiled ``SVI.step(*args, **kwargs)``.

    ``check_trace``: the ELBO's ``jit_options`` ask torch to check the trace.
    """
    import torch

    text = str(exc)
    if isinstance(exc, AssertionError) and check_trace:
        # pyro/ops/jit.py asserts that the params it traced with are the param
        # store's own tensors; check_trace re-runs the trace on copies of them.
        return ("jit_options={'check_trace': True} cannot work with Pyro's compiled ELBOs (torch "
                "re-runs the trace on copies of the params, which Pyro rejects): remove check_trace; "
                "%%pyrojit still names the risky lines of a trace")
    if isinstance(exc, RuntimeError) and "cannot be traced" in text:
        for position, value in enumerate(args, start=1):
            if not torch.is_tensor(value):
                return (f"positional argument {position} of the step is a {_type_name(value)}, "
                        "but Pyro's JIT traces positional arguments as tensors: pass it as a "
                        "keyword argument (each value then gets its own compiled trace)")
    if isinstance(exc, TypeError) and text.startswith("unhashable type"):
        for name, value in kwargs.items():
            try:
                hash(value)
            except TypeError:
                return (f"keyword argument {name}={_type_name(value)} is unhashable, and Pyro "
                        "keys each compiled trace on the keyword values: pass a hashable value "
                        "(int, str, tuple) or pass tensors positionally")
    if isinstance(exc, RuntimeError) and "requires grad as a constant" in text:
        return ("the model uses a tensor that requires grad but is neither an argument nor a "
                "pyro.param (a global?): pass it as a positional argument, make it a pyro.param, "
                "or .detach() it")
    if isinstance(exc, NotImplementedError) and "found new param" in text:
        return "create every pyro.param on the model's and guide's first call"
    return None


def attach(exc: BaseException, advice: str) -> None:
    """Print ``advice`` under ``exc``'s traceback, once."""
    note = NOTE_PREFIX + advice
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
