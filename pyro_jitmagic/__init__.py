"""pyro_jitmagic: Pyro's JIT compiler as one line in Jupyter.

In IPython or Jupyter::

    %load_ext pyro_jitmagic

    %%pyrojit
    for step in range(1000):
        svi.step(data)

In scripts, the same as a context manager::

    with pyro_jitmagic.compiled() as run:
        for step in range(1000):
            svi.step(data)
    print(run.report)

Importing this package, or loading the extension, imports neither torch nor
pyro; they are imported when a magic first runs.
"""

from __future__ import annotations

from typing import Any

from . import display  # noqa: F401  (records find their views: see records/shown.py)
from .core.advice import JitMagicError, RiskyTraceError, StrayParamError
from .core.auto import AutoPolicy
from .core.compare import compare
from .core.jit_warnings import RiskyTraceWarning
from .core.run import JitRun, compiled
from .core.session import Session
from .options import RunOptions
from .records.comparison import Comparison, Isolation, MCMCComparison, SVIComparison
from .records.report import (
    AutoDecision,
    CapturedWarning,
    Compilation,
    JitReport,
    LossRun,
    MCMCRun,
    Step,
    SVIRun,
    Switch,
    WarmupAction,
)

__version__ = "0.1.0"

__all__ = [
    "AutoDecision",
    "AutoPolicy",
    "CapturedWarning",
    "Comparison",
    "Compilation",
    "Isolation",
    "JitMagicError",
    "JitReport",
    "JitRun",
    "LossRun",
    "MCMCComparison",
    "MCMCRun",
    "RiskyTraceError",
    "RiskyTraceWarning",
    "RunOptions",
    "SVIComparison",
    "SVIRun",
    "Session",
    "Step",
    "StrayParamError",
    "Switch",
    "WarmupAction",
    "compare",
    "compiled",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%pyrojit`` (``%load_ext pyro_jitmagic``)."""
    from .magics import PyroJitMagics

    ipython.register_magics(PyroJitMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics (``%unload_ext pyro_jitmagic``); nothing stays patched."""
    from .magics import unregister

    unregister(ipython)
