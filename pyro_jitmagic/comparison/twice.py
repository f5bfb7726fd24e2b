"""Run a cell twice, eager then compiled, from the same start: the core of ``--compare``.

The cell itself is a callable, so the magic passes "run this cell in the
shell" and scripts pass a function; nothing here knows about IPython.
"""

from __future__ import annotations

import math
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass
from typing import Any

from ..jitrun import JitRun
from ..options import RunOptions
from ..policy.auto import AutoPolicy
from ..records.comparison import Comparison, Isolation
from ..records.report import JitReport, Progress
from ..run.jit_warnings import default_location_name
from ..run.naming import name_in
from ..run.seeds import prime_once, seed_everything
from ..run.session import Session
from .state import CellState
from .trail import ParamTrail, spread_ratio
from .verdict import compare_reports, relative_difference


@dataclass(frozen=True)
class CompareOutcome:
    """What the two runs gave: the comparison, or the report of the run that failed.

    ``compiled_objects`` are the ELBOs and kernels the compiled run used, for the Cache tab.
    """

    comparison: Comparison | None
    failed: JitReport | None
    error: BaseException | None
    compiled_objects: tuple[Any, ...] = ()


def _param_values() -> dict[str, list[float]]:
    import pyro

    return {name: value.detach().reshape(-1).double().tolist()
            for name, value in pyro.get_param_store().items()}


def _params_difference(a: dict[str, list[float]], b: dict[str, list[float]]) -> float:
    worst = math.nan
    for name in a.keys() & b.keys():
        d = relative_difference(a[name], b[name])
        if not math.isnan(d):
            worst = d if math.isnan(worst) else max(worst, d)
    return worst


def run_twice(
    execute: Callable[[], BaseException | None],
    namespace: MutableMapping[str, Any],
    options: RunOptions | None = None,
    *,
    session: Session | None = None,
    auto_policy: AutoPolicy | None = None,
    name_location: Callable[[str, int], str] = default_location_name,
    on_progress: Callable[[Progress], None] | None = None,
) -> CompareOutcome:
    """Run ``execute`` eager, put the state back, run it compiled; compare.

    ``execute`` runs the cell once and returns the exception that ended it
    (or None). If the eager half fails, everything is put back as it was
    before the cell, and the compiled half does not run. ``options.seed``
    seeds both halves, each from the same start.
    """
    options = options or RunOptions()
    seed = options.seed
    # the seed is applied here, around the state saved and restored, not by each run
    options = options.replace(seed=None)
    prime_once()
    if seed is not None:
        seed_everything(seed)
    state = CellState.save(namespace)

    eager_trail, compiled_trail = ParamTrail(), ParamTrail()
    eager = JitRun(options.replace(backend="eager", auto=False), names=namespace, session=session,
                   name_location=name_location, on_first_use=state.before_first_use,
                   on_progress=on_progress, on_step=eager_trail)
    with state.watching():
        error = _run_once(eager, execute)
    if error is not None:
        state.restore()
        return CompareOutcome(None, eager.report, error)
    eager_params = _param_values()

    mutated = state.mutated()
    discarded = state.restore()
    if seed is not None:
        seed_everything(seed)

    compiled = JitRun(options, names=namespace, session=session, auto_policy=auto_policy,
                      name_location=name_location, on_progress=on_progress, on_step=compiled_trail)
    error = _run_once(compiled, execute)
    if error is not None:
        return CompareOutcome(None, compiled.report, error)

    restored = state.restored()
    restored += [f"AutoGuide prototype of {name_in(namespace, guide) or type(guide).__name__}"
                 for guide in state.guides.values()]
    isolation = Isolation(restored=tuple(restored), discarded=tuple(discarded), mutated=tuple(mutated))
    assert eager.report is not None and compiled.report is not None
    comparison = compare_reports(eager.report, compiled.report, isolation,
                                 _params_difference(eager_params, _param_values()), seed,
                                 param_spread=spread_ratio(eager_trail, compiled_trail))
    return CompareOutcome(comparison, None, None, tuple(compiled.compiled_objects()))


def _run_once(run: JitRun, execute: Callable[[], BaseException | None]) -> BaseException | None:
    """Run the cell once under ``run``; the exception that ended it, returned or raised."""
    try:
        with run:
            error = execute()
            run.failed(error)
    except BaseException as exc:  # an interrupt too: the caller restores state, then re-raises
        error = exc
    run.failed(error)
    return error


def compare(fn: Callable[[], Any], options: RunOptions | None = None, *,
            namespace: MutableMapping[str, Any] | None = None, session: Session | None = None,
            **fields: Any) -> Comparison:
    """Run ``fn()`` eager, then compiled from the same start, and compare: the twin of ``--compare``.

    Parameters
    ----------
    fn : callable
        Runs the inference once (e.g. a training loop). Called twice.
    options : RunOptions, optional
        How the compiled run runs; any field of :class:`~pyro_jitmagic.RunOptions`
        can also be given by name (``seed`` seeds both runs, ``auto`` may be an
        :class:`~pyro_jitmagic.AutoPolicy`), as for :func:`~pyro_jitmagic.compiled`.
    namespace : mapping, optional
        A namespace whose bindings are restored between the runs and used to
        name objects (a script's ``globals()``).
    session : Session, optional
        Where compiled companions are kept between runs (the process's default).

    Raises
    ------
    Exception
        Whatever ``fn`` raised, in either run (state is put back if it was
        the eager run).
    """
    ns: MutableMapping[str, Any] = namespace if namespace is not None else {}
    auto_policy = None
    if isinstance(fields.get("auto"), AutoPolicy):
        auto_policy, fields["auto"] = fields["auto"], True
    options = (options or RunOptions()).replace(**fields)

    def execute() -> BaseException | None:
        fn()
        return None

    outcome = run_twice(execute, ns, options, session=session, auto_policy=auto_policy)
    if outcome.error is not None:
        raise outcome.error
    assert outcome.comparison is not None
    return outcome.comparison
