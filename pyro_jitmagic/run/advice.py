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
                return _not_a_tensor(position, value)
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


def untraceable_argument(exc: BaseException, args: tuple[Any, ...]) -> str | None:
    """Why a trace could not take this call's positional arguments (a float, a numpy array: Pyro's JIT
    passes them to the trace as tensors), with what to do; None for other failures."""
    import torch

    text = str(exc)
    if isinstance(exc, RuntimeError) and ("cannot be traced" in text or "Tracer cannot infer type" in text):
        for position, value in enumerate(args, start=1):
            if not torch.is_tensor(value):
                return _not_a_tensor(position, value)
    return None


def _not_a_tensor(position: int, value: Any) -> str:
    # The same answer as the recompilation watch gives (_cache.changing_keyword): a float that
    # changes from step to step (an annealing factor) as a keyword would compile a trace per value.
    start = (f"positional argument {position} of the step is a {_type_name(value)}, but Pyro's JIT "
             "passes positional arguments to the trace as tensors: ")
    if isinstance(value, float):
        return start + (f"pass torch.tensor({value!r}) instead (as a keyword, every new value would "
                        "compile a new trace)")
    if isinstance(value, int):
        return start + ("if it sets a size or a count, pass it as a keyword argument (each value then "
                        f"gets its own compiled trace); if it only enters the arithmetic, pass "
                        f"torch.tensor({value!r})")
    if hasattr(value, "__array__") and hasattr(value, "shape"):  # a numpy array
        return start + "pass torch.as_tensor(x) instead"
    return start + "pass it as a keyword argument (each value then gets its own compiled trace)"


def describe_args(args: tuple[Any, ...]) -> tuple[Any, ...]:
    """What a trace is compiled for, per positional argument: a tensor's shape, else the type name."""
    import torch

    return tuple(tuple(a.shape) if torch.is_tensor(a) else _type_name(a) for a in args)


def advise_call(exc: BaseException, args: tuple[Any, ...], compiled_for: tuple[Any, ...]) -> str | None:
    """What to do when a trace refused the arguments of a call it was compiled for (same key).

    Pyro keys a trace on the number of positional arguments and the keyword values, never on
    shapes or types, so a call with another shape or a float where a tensor was reuses the trace.
    """
    import torch

    for position, (now, then) in enumerate(zip(args, compiled_for, strict=False), start=1):
        if not torch.is_tensor(now) and isinstance(then, tuple):
            return _not_a_tensor(position, now)
        if torch.is_tensor(now) and isinstance(then, tuple) and tuple(now.shape) != then:
            return (f"positional argument {position} has shape {tuple(now.shape)} here, but the trace "
                    f"this call reused was compiled for shape {then}: Pyro keys its traces on keyword "
                    "values, never on shapes; pass the size as a keyword (e.g. length=len(seq)) so that "
                    "each shape gets its own trace, or pad to one shape")
    return None


_AT_USERS_LINE = "__pyrojit_at_users_line__"


def at_users_line(exc: BaseException) -> None:
    """Mark ``exc`` to be shown ending at the user's line: its frames inside Pyro and the
    magic say nothing the advice does not."""
    setattr(exc, _AT_USERS_LINE, True)


def ends_at_users_line(exc: BaseException) -> bool:
    return bool(getattr(exc, _AT_USERS_LINE, False))


def advised(exc: BaseException) -> bool:
    return any(note.startswith(NOTE_PREFIX) for note in getattr(exc, "__notes__", ()))


def attach(exc: BaseException, advice: str) -> None:
    """Print ``advice`` under ``exc``'s traceback, once."""
    note = NOTE_PREFIX + advice
    if note not in getattr(exc, "__notes__", ()):
        exc.add_note(note)
