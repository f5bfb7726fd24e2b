"""A trajectory leaf's two halves, captured once per layout and kept, in the process and on disk.

A NUTS leaf is the leapfrog's first half, the model's potential, then the rest of the leaf
(:func:`~.leapfrog.packed_halves`). The halves are this package's own code: given the layout of
the latent sites (their shapes, the mass matrix's blocks), the tree's depth, the dtype and the
divergence threshold, they are the same graph for every model. Tracing them costs most of a
trajectory's capture (docs/benchmarks.md, The whole step), so each layout's are traced once and
kept: in this process, and as a small JSON file beside inductor's cache for the next process. The
model's potential is never kept here; it is captured for each run and put between the halves.

A stored file holds the graphs' nodes: aten ops by name, their arguments, each value's shape,
strides and dtype. It is keyed by the layout, the torch release and the text of the code that
builds the halves, so a change to either is a new key. A file that cannot be read, or names
something this torch lacks, is ignored and the halves are traced.
"""

from __future__ import annotations

import functools
import hashlib
import json
import operator
import os
from pathlib import Path
from typing import Any

from ..compat import capture as compat
from .capture import prune, simplify, trace_restoring
from .leapfrog import Layout, packed_halves

#: each layout's halves, captured or loaded (a few layouts in a session)
_KEPT: dict[Any, tuple[Any, Any]] = {}
_KEPT_MAX = 16
_FOLDER = "pyro_jitmagic_leaves"
_FORMAT = 1


#: where a capture's halves came from, and what a run's report says of each
TRACED, KEPT, STORED = "traced", "kept", "stored"
SAID = {TRACED: "the leapfrog's own graph traced for this layout",
        KEPT: "the leapfrog's own graph kept from an earlier model of this layout",
        STORED: "the leapfrog's own graph read from disk"}


def leaf_halves(layout: Layout, inputs: list[Any], max_sliced: float) -> tuple[Any, Any, str]:
    """The graphs of a packed leaf's halves for this layout, with the layout's split of the flat
    vector into the potential's sites and the gradient's join: ``before(*inputs) -> (z, r,
    *sites)``, ``after(*inputs, z, r, pe, ok, *site_grads) -> (vectors, scalars, checkpoints,
    stop)``; ``inputs`` are a leaf's example inputs (their shapes and dtype are the key). Third,
    where they came from: :data:`TRACED` now, :data:`KEPT` from this process, :data:`STORED` on disk."""
    key = (layout, inputs[0].dtype, inputs[0].device, inputs[2].shape[1], max_sliced)
    halves = _KEPT.get(key)
    if halves is not None:
        return (*halves, KEPT)
    source, path = STORED, _path(key)
    halves = _load(path) if path is not None else None
    if halves is None:
        source, halves = TRACED, _trace(layout, inputs, max_sliced)
        if path is not None:
            _store(path, halves)
    while len(_KEPT) >= _KEPT_MAX:
        del _KEPT[next(iter(_KEPT))]
    _KEPT[key] = halves
    return (*halves, source)


def _trace(layout: Layout, inputs: list[Any], max_sliced: float) -> tuple[Any, Any]:
    import torch

    before, after = packed_halves(layout.diagonal, max_sliced)
    order = sorted(range(len(layout.names)), key=lambda i: layout.slices[i][0])

    def before_sites(*inputs: Any) -> tuple[Any, ...]:
        z, r = before(*inputs)
        return (z, r, *layout.sites(z))

    def after_sites(*values: Any) -> tuple[Any, Any, Any, Any]:
        grads = values[len(inputs) + 4:]
        return after(*values[:len(inputs) + 4], torch.cat([grads[i].reshape(-1) for i in order]))

    z, r, *sites = before_sites(*inputs)
    potential_out = [torch.zeros((), dtype=z.dtype), torch.ones((), dtype=torch.bool),
                     *(torch.zeros_like(site) for site in sites)]
    return (_captured(before_sites, inputs), _captured(after_sites, [*inputs, z, r, *potential_out]))


def _captured(fn: Any, inputs: list[Any]) -> Any:
    graph = trace_restoring(fn, inputs, lambda patches: None, "the NUTS trajectory")
    for node in graph.graph.nodes:
        node.type = None  # (the leaf's annotations: a string global inductor's cache key cannot hold)
    simplify(graph)
    prune(graph)
    return graph


# -- on disk ---------------------------------------------------------------------------------------

def folder() -> Path | None:
    """Where the halves are stored: beside the runs' memory, in inductor's cache folder (None
    where there is none)."""
    from . import memory

    beside = memory.default_path()
    return beside.parent / _FOLDER if beside is not None else None


def _path(key: tuple[Any, ...]) -> Path | None:
    """The file of ``key``'s halves, or None where no folder is known."""
    import torch

    where = folder()
    if where is None:
        return None
    layout, dtype, device, depth, max_sliced = key
    text = repr((_FORMAT, torch.__version__, _code(), layout, str(dtype), str(device), depth, max_sliced))
    return where / (hashlib.sha256(text.encode()).hexdigest()[:32] + ".json")


@functools.lru_cache(maxsize=1)
def _code() -> str:
    """The text of the code that builds the halves (a change to it is a new key)."""
    import inspect
    import sys

    return "".join(inspect.getsource(sys.modules[name]) for name in (__name__, packed_halves.__module__))


def _store(path: Path, halves: tuple[Any, Any]) -> None:
    """Write ``halves`` to ``path`` (atomically); a graph this format cannot say is not stored."""
    try:
        text = json.dumps([_graph_data(graph) for graph in halves])
    except _Unsaid:
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(f".{os.getpid()}.partial")
        partial.write_text(text)
        os.replace(partial, path)
    except OSError:
        pass


def _load(path: Path) -> tuple[Any, Any] | None:
    try:
        data = json.loads(path.read_text())
        before, after = (_graph_of(graph) for graph in data)
    except (OSError, ValueError, KeyError, TypeError, AttributeError, _Unsaid):
        return None
    return before, after


class _Unsaid(Exception):
    """A node argument or value this format has no word for."""


def _graph_data(graph: Any) -> list[dict[str, Any]]:
    nodes = []
    for node in graph.graph.nodes:
        if node.op not in ("placeholder", "call_function", "output"):
            raise _Unsaid(node.op)  # (a constant: the halves hold none)
        if node.op == "call_function":
            if node.target is operator.getitem:
                target = "getitem"
            elif compat.aten_op(node.target) is not None:
                target = node.target.name()  # "aten::where.self"
            else:
                raise _Unsaid(node.target)
        else:
            target = node.target
        nodes.append({"name": node.name, "op": node.op, "target": target, "args": _said(node.args),
                      "kwargs": _said(node.kwargs), "val": _said_value(node.meta.get("val"))})
    return nodes


def _said(value: Any) -> Any:
    import torch

    if isinstance(value, torch.fx.Node):
        return {"node": value.name}
    if isinstance(value, (list, tuple)):  # (fx's immutable lists too)
        return {"list" if isinstance(value, list) else "tuple": [_said(v) for v in value]}
    if isinstance(value, dict):
        return {"dict": [[k, _said(v)] for k, v in value.items()]}
    if isinstance(value, torch.dtype):
        return {"dtype": str(value).removeprefix("torch.")}
    if isinstance(value, torch.device):
        return {"device": str(value)}
    if isinstance(value, torch.layout):
        return {"layout": str(value).removeprefix("torch.")}
    if isinstance(value, torch.memory_format):
        return {"memory_format": str(value).removeprefix("torch.")}
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return {"float": repr(value)}  # (inf and nan too, which JSON has no word for)
    raise _Unsaid(type(value).__name__)


def _said_value(value: Any) -> Any:
    import torch

    if isinstance(value, torch.Tensor):
        return [list(value.shape), list(value.stride()), str(value.dtype).removeprefix("torch."),
                str(value.device)]
    if isinstance(value, (list, tuple)):
        return {"values": [_said_value(v) for v in value]}
    if value is None:
        return None
    raise _Unsaid(type(value).__name__)


def _graph_of(nodes: list[dict[str, Any]]) -> Any:
    """The graph ``nodes`` describe, each value a fake tensor of its recorded layout."""
    import torch

    graph = torch.fx.Graph()
    made: dict[str, Any] = {}
    fake = compat.fake_values()

    def value_of(said: Any) -> Any:
        if said is None:
            return None
        if isinstance(said, dict):
            return [value_of(v) for v in said["values"]]
        shape, stride, dtype, device = said
        return fake(tuple(shape), tuple(stride), getattr(torch, dtype), torch.device(device))

    def unsaid(value: Any) -> Any:
        if isinstance(value, dict):
            ((kind, inner),) = value.items()
            if kind == "node":
                return made[inner]
            if kind in ("list", "tuple"):
                items = [unsaid(v) for v in inner]
                return items if kind == "list" else tuple(items)
            if kind == "dict":
                return {k: unsaid(v) for k, v in inner}
            if kind == "float":
                return float(inner)
            if kind in ("dtype", "layout", "memory_format"):
                return getattr(torch, inner)
            if kind == "device":
                return torch.device(inner)
            raise _Unsaid(kind)
        return value

    for data in nodes:
        op, target = data["op"], data["target"]
        if op == "call_function":
            target = operator.getitem if target == "getitem" else _aten(target)
        node = graph.create_node(op, target, unsaid(data["args"]), unsaid(data["kwargs"]), data["name"])
        if node.name != data["name"]:
            raise ValueError(f"node {data['name']!r} became {node.name!r}")
        made[node.name] = node
        value = value_of(data["val"])
        if value is not None:
            node.meta["val"] = value
    return _Loaded(graph)


class _Loaded:
    """A loaded half: its graph alone, which is all a splice reads (no GraphModule: its code
    would be generated for nothing, a third of the load)."""

    def __init__(self, graph: Any) -> None:
        self.graph = graph


def _aten(name: str) -> Any:
    """``torch.ops.aten.where.self`` from ``"aten::where.self"``."""
    import torch

    namespace, _, qualified = name.partition("::")
    packet, _, overload = qualified.partition(".")
    return getattr(getattr(getattr(torch.ops, namespace), packet), overload or "default")
