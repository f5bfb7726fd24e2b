"""Run one real model the five ways, in an IPython shell, and keep what each way gave.

The ways, each after a fresh run of the model's setup cell:

* ``eager``: the run cell as written;
* ``by hand``: the run cell after the by-hand setup (Pyro's own ``Jit*`` ELBOs,
  ``jit_compile=True``), to learn whether Pyro's JIT runs the model at all;
* ``magic``: ``%%pyrojit --backend pyro -q -o report`` over the run cell;
* ``compare``: ``%%pyrojit --backend pyro --compare -q -o comparison --seed 0`` over it;
* ``auto``: ``%%pyrojit --auto -q -o report`` over it.

Used by ``test_real_models.py`` and ``bench/bench_real_models.py``.
"""

from __future__ import annotations

import contextlib
import gc
import time
import warnings
from dataclasses import dataclass
from typing import Any

from IPython.utils.capture import capture_output
from zoo import RealModel

WAYS = ("eager", "by hand", "magic", "compare", "auto")

# each magic way's line, and the name it stores its result in
_MAGIC_LINES = {
    "magic": ("%%pyrojit -q -o report", "report"),
    "compare": ("%%pyrojit --compare -q -o comparison --seed 0", "comparison"),
    "auto": ("%%pyrojit --auto -q -o report", "report"),
    # (not one of the five: --auto's tiers, compared with eager, where --backend lets it climb)
    "tiers": ("%%pyrojit --compare --auto -q -o comparison --seed 0", "comparison"),
}


@dataclass
class WayResult:
    """What one way of running a model gave.

    ``result`` is the report (or the comparison) the magic stored, None for the
    eager and by-hand ways; ``error`` the exception that ended the setup or run
    cell, as ``"Type: message"``; ``left_patched`` what the way left patched
    (empty when nothing); ``seconds`` the run cell's wall time.
    """

    way: str
    ok: bool
    error: str
    result: Any
    seconds: float
    left_patched: str
    output: str


@dataclass(repr=False)
class ModelRun:
    """A model run the five ways: ``ways[way]`` for each of :data:`WAYS`."""

    model: RealModel
    ways: dict[str, WayResult]

    def __getitem__(self, way: str) -> WayResult:
        return self.ways[way]

    def __repr__(self) -> str:  # pytest shows it with every failure: the name, not every report
        return f"ModelRun({self.model.name}: " + ", ".join(
            f"{w.way} {'ok' if w.ok else w.error}" for w in self.ways.values()) + ")"


def _error_text(result: Any) -> str:
    exc = result.error_before_exec or result.error_in_exec
    if exc is None:
        return ""
    first = str(exc).splitlines()[0] if str(exc) else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def patch_targets() -> dict[str, tuple[Any, str | None, Any]]:
    """What a run may patch, as it is now (see ``conftest.patched_targets``)."""
    from patches import current_targets

    return current_targets()


def left_patched(targets: dict[str, tuple[Any, str | None, Any]]) -> str:
    """Empty when everything in ``targets`` is as it was, else what is not."""
    from patches import assert_nothing_patched

    try:
        assert_nothing_patched(targets)
    except AssertionError as exc:
        return str(exc)
    return ""


def run_way(shell: Any, model: RealModel, way: str, backend: str = "pyro") -> WayResult:
    """Set the model up afresh and run its cell one way (the magic's ways with ``--backend``);
    the names it bound are removed after."""
    import pyro

    before = set(shell.user_ns)
    pyro.clear_param_store()
    targets = patch_targets()
    try:
        # Pyro's JIT prints its TracerWarnings by hand: keep the output readable. The
        # other ways run under the filters as they are, so that a leaked filter shows.
        quiet = warnings.catch_warnings() if way == "by hand" else contextlib.nullcontext()
        with capture_output() as captured, quiet:
            if way == "by hand":
                warnings.simplefilter("ignore")
            setup = shell.run_cell(model.by_hand if way == "by hand" else model.setup)
            if not setup.success:
                return WayResult(way, False, "setup cell: " + _error_text(setup), None, 0.0, "",
                                 captured.stdout + captured.stderr)
            line, stored_as = _MAGIC_LINES.get(way, ("", ""))
            # magic and compare name their backend (Pyro's JIT unless told), as plain %%pyrojit
            # climbs; auto and tiers climb to every tier unless another backend caps them
            if line and (backend != "pyro" or way in ("magic", "compare")):
                line += f" --backend {backend}"
            cell = f"{line}\n{model.run}" if line else model.run
            shell.user_ns.pop(stored_as, None)  # a result left by an earlier cell is not this one's
            start = time.perf_counter()
            result = shell.run_cell(cell)
            seconds = time.perf_counter() - start
        stored = shell.user_ns.get(stored_as) if stored_as else None
        return WayResult(way, result.success, _error_text(result), stored, seconds,
                         left_patched(targets), captured.stdout + captured.stderr)
    finally:
        for name in set(shell.user_ns) - before:
            del shell.user_ns[name]
        pyro.clear_param_store()
        gc.collect()


def run_model(shell: Any, model: RealModel, ways: tuple[str, ...] = WAYS, backend: str = "pyro") -> ModelRun:
    """The model run each of ``ways``, in order (the magic's ways with ``--backend``)."""
    return ModelRun(model, {way: run_way(shell, model, way, backend) for way in ways})
