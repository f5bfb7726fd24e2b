"""What pyro_jitmagic needs from torch, checked when a compiled run first uses torch.

The package admits any torch from 2.1 on, so that installing it never replaces the user's torch;
what it truly needs is checked here instead. Without a working ``torch.jit.trace`` the cell runs
eager, and the report says why. Without the executor settings (private torch functions, see
:mod:`..compilers.pyro.executor`), the default ``adaptive`` leaves torch's executor as it is, and
a named executor stops the cell with one line saying what to do.
"""

from __future__ import annotations

import warnings
from typing import Any

from ..compat import jit as compat
from ..patch import unwrap
from .process import PROCESS


def _double(x: Any) -> Any:
    return x * 2


def trace_problem() -> str | None:
    """Why ``torch.jit.trace`` cannot compile in this torch, in one line; None when it can."""
    import torch

    trace = unwrap(getattr(torch.jit, "trace", None))
    if not callable(trace):
        return f"torch.jit.trace is not available in torch {torch.__version__}"
    known = PROCESS.trace_checks.get(id(trace))
    if known is not None and known[0] is trace:
        return known[1]
    problem = None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # its deprecation notice: the cell's own trace reports it
            traced = trace(_double, (torch.ones(1),), check_trace=False)
            if not torch.equal(traced(torch.ones(1)), torch.full((1,), 2.0)):
                problem = f"torch.jit.trace computed a wrong result in torch {torch.__version__}"
    except Exception as exc:  # any failure means: run eager, and say why
        first = str(exc).splitlines()[0] if str(exc) else ""
        problem = (f"torch.jit.trace failed in torch {torch.__version__} "
                   f"({type(exc).__name__}{': ' + first if first else ''})")
    PROCESS.trace_checks[id(trace)] = (trace, problem)
    return problem


def executor_problem(executor: str, default: str) -> str | None:
    """With executor settings missing: the note for the default executor, or raise for another.

    Raises
    ------
    JitMagicError
        When ``executor`` was asked for by name and this torch cannot set it.
    """
    import torch

    from .advice import JitMagicError

    missing = compat.missing_executor_flags()
    if not missing:
        return None
    lacking = f"torch {torch.__version__} has no torch._C.{missing[0]}"
    if executor != default:
        raise JitMagicError(f"--executor {executor} needs TorchScript's executor settings, and {lacking}: "
                            f"leave out --executor (traces then run as torch runs them), or use a torch "
                            f"that has them (2.1 to 2.13 were checked)")
    return (f"--executor {executor} left the TorchScript executor as torch set it: {lacking} "
            "(traces ran under torch's own executor)")
