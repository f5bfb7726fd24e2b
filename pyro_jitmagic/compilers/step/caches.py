"""What the whole-step compiler keeps compiled, for the cache inspector.

Each SVI and HMC/NUTS kernel that ran a whole step holds its graphs in the session
(:class:`~...run.session.WholeStepStore`). An entry shows its backend, graph size, inductor's
kernels, capture and codegen time, and whether inductor's disk cache was cold or warm.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ...records.cache import CachedFunction, CacheEntry
from ...run.naming import label, name_in
from ...run.session import Session, WholeStepEntry


def whole_step_caches(session: Session, namespace: Mapping[str, Any],
                      objects: list[Any] | None = None) -> list[CachedFunction]:
    """The compiled whole steps and potentials alive in the session (or those of ``objects``)."""
    wanted = None if objects is None else {id(o) for o in objects}
    functions = []
    for owner, entries in session.whole_steps.owners():
        if wanted is not None and id(owner) not in wanted:
            continue
        svi = hasattr(owner, "optim")
        name = name_in(namespace, owner) or type(owner).__name__
        serves = (f"model={label(owner.model)}, guide={label(owner.guide)}" if svi
                  else f"model={label(getattr(owner, 'model', None) or owner.potential_fn)}")
        whole = "step" if svi else "potential"
        functions.append(CachedFunction(
            ident=id(owner), owner=f"{name} (its whole {whole}, compiled by %%pyrojit)",
            kind="whole step" if svi else "potential and gradient", serves=serves,
            entries=tuple(_entry(e) for e in entries.values())))
    return functions


def _entry(entry: WholeStepEntry) -> CacheEntry:
    compiled = entry.compiled
    graph = compiled.captured.graph
    return CacheEntry(
        key=entry.key, compile_seconds=entry.compile_seconds, hits=entry.hits, last_hit=entry.last_hit,
        input_shapes=tuple(str(tuple(t.shape)) for t in compiled.captured.example_inputs),
        graph_nodes=compiled.graph_nodes, code=graph.code, backend=compiled.backend,
        kernels=compiled.kernels, capture_seconds=compiled.capture_seconds,
        codegen_seconds=compiled.codegen_seconds, disk_cache=compiled.cache,
        guards=compiled.world.described() if hasattr(compiled, "world") else ())
