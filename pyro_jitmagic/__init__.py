"""pyro_jitmagic: Pyro's inference compiled, as one line in Jupyter.

In IPython or Jupyter::

    %load_ext pyro_jitmagic

    %%pyrojit
    for step in range(1000):
        svi.step(data)

In a script, ``with pyro_jitmagic.compiled() as run:`` does the same, and ``run.report`` says
what it did. Importing the package, or loading the extension, imports neither torch nor Pyro:
they are imported when a cell first runs.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import display  # noqa: F401  (records find their views here: see records/shown.py)

if TYPE_CHECKING:
    from .comparison.twice import compare
    from .inspector import cache_snapshot, clear_cache
    from .jitrun import JitRun, compiled
    from .options import RunOptions
    from .policy.auto import AutoPolicy
    from .records.cache import CachedFunction, CacheEntry, CacheSnapshot
    from .records.comparison import Comparison, Isolation, MCMCComparison, SVIComparison
    from .records.report import (
        AutoDecision,
        CapturedWarning,
        Compilation,
        ExecutorChoice,
        JitReport,
        LossRun,
        MCMCRun,
        PosteriorSite,
        Progress,
        Step,
        SVIRun,
        Switch,
        WarmupAction,
    )
    from .run.advice import JitMagicError, RiskyTraceError, StrayParamError
    from .run.jit_warnings import RiskyTraceWarning
    from .run.session import Session

__version__ = "0.1.0"

# Each public name and the module that holds it: imported when first asked for, so that
# importing the package (and loading the extension) costs only the records and their views.
_PUBLIC = {
    **dict.fromkeys(("JitMagicError", "RiskyTraceError", "StrayParamError"), "run.advice"),
    "AutoPolicy": "policy.auto",
    "compare": "comparison.twice",
    **dict.fromkeys(("cache_snapshot", "clear_cache"), "inspector"),
    "RiskyTraceWarning": "run.jit_warnings",
    **dict.fromkeys(("JitRun", "compiled"), "jitrun"),
    "Session": "run.session",
    "RunOptions": "options",
    **dict.fromkeys(("CachedFunction", "CacheEntry", "CacheSnapshot"), "records.cache"),
    **dict.fromkeys(("Comparison", "Isolation", "MCMCComparison", "SVIComparison"), "records.comparison"),
    **dict.fromkeys(("AutoDecision", "CapturedWarning", "Compilation", "ExecutorChoice", "JitReport",
                     "LossRun", "MCMCRun", "PosteriorSite", "Progress", "Step", "SVIRun", "Switch",
                     "WarmupAction"), "records.report"),
}

__all__ = [
    "AutoDecision",
    "AutoPolicy",
    "CacheEntry",
    "CacheSnapshot",
    "CachedFunction",
    "CapturedWarning",
    "Comparison",
    "Compilation",
    "ExecutorChoice",
    "Isolation",
    "JitMagicError",
    "JitReport",
    "JitRun",
    "LossRun",
    "MCMCComparison",
    "MCMCRun",
    "PosteriorSite",
    "Progress",
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
    "cache_snapshot",
    "clear_cache",
    "compare",
    "compiled",
    "load_ipython_extension",
    "unload_ipython_extension",
]


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module 'pyro_jitmagic' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # found once
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})


def load_ipython_extension(ipython: Any) -> None:
    """Register ``%%pyrojit`` (``%load_ext pyro_jitmagic``)."""
    from .magics import PyroJitMagics

    ipython.register_magics(PyroJitMagics(ipython))


def unload_ipython_extension(ipython: Any) -> None:
    """Remove the magics (``%unload_ext pyro_jitmagic``); nothing stays patched."""
    from .magics import unregister

    unregister(ipython)
