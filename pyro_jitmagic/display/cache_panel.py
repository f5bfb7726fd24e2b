"""The compile-cache inspector: a :class:`~pyro_jitmagic.records.cache.CacheSnapshot` as text,
as HTML, and as a widget with a table per compiled function and Clear buttons.

The widget's display bundle carries the same content as ``text/plain`` and
``text/html``; without ipywidgets only those show.
"""

from __future__ import annotations

import html
import time
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from ..records.cache import CachedFunction, CacheEntry, CacheSnapshot
from ..records.units import plural, seconds
from .report import STYLE


def _unknown(value: float | int | None, fmt: Any = str) -> str:
    return "unknown" if value is None else fmt(value)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "unknown"
    ago = time.time() - timestamp
    return "just now" if ago < 1 else f"{seconds(ago)} ago"


def cache_totals(snapshot: CacheSnapshot) -> str:
    unknown = any(e.compile_seconds is None for f in snapshot.functions for e in f.entries)
    entries = snapshot.entry_count
    return (f"{plural(len(snapshot.functions), 'compiled function')}, "
            f"{entries} {'entry' if entries == 1 else 'entries'}"
            f", {seconds(snapshot.compile_seconds)} compiling"
            + (" (some unknown)" if unknown else "") + f", {snapshot.hits} hits")


def _backend(e: CacheEntry) -> str:
    """How a whole-step entry runs, in words; empty for a trace of Pyro's JIT."""
    if e.backend == "pyro":
        return ""
    parts = [e.backend]
    if e.kernels is not None:
        parts.append(plural(e.kernels, "C++ kernel"))
    if e.capture_seconds is not None:
        parts.append(f"capture {seconds(e.capture_seconds)}")
    if e.codegen_seconds is not None:
        parts.append(f"codegen {seconds(e.codegen_seconds)}")
    if e.disk_cache is not None:
        parts.append(f"{e.disk_cache} disk cache")
    return ", ".join(parts)


def cache_text(snapshot: CacheSnapshot) -> str:
    lines = [f"pyrojit cache: {cache_totals(snapshot)}"]
    if not snapshot.functions:
        lines.append("  no compiled functions are alive in this session")
    for f in snapshot.functions:
        lines.append(f"  {f.owner}" + (f" -- {f.serves}" if f.serves else ""))
        for e in f.entries:
            lines.append(f"    {e.key}: compiled in {_unknown(e.compile_seconds, seconds)}, "
                         f"{_unknown(e.hits)} hits, last {_when(e.last_hit)}, "
                         f"{e.graph_nodes} graph nodes, inputs {', '.join(e.input_shapes) or '()'}"
                         + (f"; {_backend(e)}" if _backend(e) else ""))
            lines += [f"      guard: {g}" for g in e.guards]
    return "\n".join(lines)


def cache_function_html(f: CachedFunction) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(e.key)}</td><td>{esc(_unknown(e.compile_seconds, seconds))}</td>"
        f"<td>{esc(_unknown(e.hits))}</td><td>{esc(_when(e.last_hit))}</td>"
        f"<td>{esc(', '.join(e.input_shapes))}</td><td>{e.graph_nodes}</td>"
        f"<td>{esc(_backend(e) or 'pyro')}</td></tr>"
        f"<tr><td colspan='7'>{_guards_html(e)}<details><summary>"
        f"{'traced code' if e.backend == 'pyro' else 'captured graph'}</summary>"
        f"<pre>{esc(e.code)}</pre></details></td></tr>"
        for e in f.entries)
    return (f"<h4>{esc(f.owner)}</h4><p>{esc(f.serves)}</p>"
            "<table class='pyrojit-cache'><tr><th>key</th><th>compile</th><th>hits</th>"
            f"<th>last hit</th><th>input shapes</th><th>graph nodes</th><th>backend</th></tr>{rows}</table>")


def _guards_html(e: CacheEntry) -> str:
    """What an entry assumed of the world, folded: a call where one no longer holds compiles again."""
    if not e.guards:
        return ""
    items = "".join(f"<li>{html.escape(g)}</li>" for g in e.guards)
    return (f"<details class='pyrojit-guards'><summary>guards ({len(e.guards)}): what it assumed of the "
            f"world</summary><ul>{items}</ul></details>")


def cache_html(snapshot: CacheSnapshot) -> str:
    esc = html.escape
    body = "".join(cache_function_html(f) for f in snapshot.functions) or \
        "<p>No compiled functions are alive in this session.</p>"
    return (f'{STYLE}<div class="pyrojit"><strong>pyrojit cache</strong>: '
            f"{esc(cache_totals(snapshot))}{body}</div>")


class CachePanel:
    """A view of the caches, rebuilt by :meth:`refresh` (after each ``%%pyrojit`` cell, for the
    inspectors ``%pyrojit_cache`` displayed)."""

    def __init__(self, inspector: Callable[[], Any], namespace: Mapping[str, Any],
                 objects: list[Any] | None = None) -> None:
        import ipywidgets as w

        self._w = w
        self._inspector = inspector
        self._namespace = namespace
        # only these ELBOs/kernels' caches (default: all live ones), held weakly: the
        # widget lives as long as the notebook, the traces should not
        self._objects = None if objects is None else [weakref.ref(o) for o in objects]
        self.widget = w.VBox()
        self.widget.add_class("pyrojit-cache-panel")
        self.snapshot: CacheSnapshot | None = None
        self.refresh()

    def refresh(self, inspector: Any = None, snapshot: CacheSnapshot | None = None) -> None:
        """Show the caches as they are now (or as ``snapshot``, taken by ``inspector``)."""
        w = self._w
        if inspector is None or snapshot is None:
            inspector = self._inspector()
            objects = (None if self._objects is None
                       else [o for o in (r() for r in self._objects) if o is not None])
            snapshot = inspector.snapshot(self._namespace, objects)
        self.snapshot = snapshot
        header = w.HTML(f'{STYLE}<div class="pyrojit"><strong>pyrojit cache</strong>: '
                        f"{html.escape(cache_totals(snapshot))}</div>")
        header.add_class("pyrojit-cache-totals")
        children: list[Any] = [header]
        if snapshot.functions:
            clear_all = w.Button(description="Clear all", button_style="warning",
                                 tooltip="drop every compiled trace; the next steps compile again")
            clear_all.add_class("pyrojit-clear-all")
            clear_all.on_click(lambda _: self._clear(inspector, None))
            children.append(clear_all)
        for f in snapshot.functions:
            table = w.HTML('<div class="pyrojit">' + cache_function_html(f) + "</div>")
            button = w.Button(description="Clear", tooltip=f"drop the traces of {f.owner}")
            button.add_class("pyrojit-clear")
            button.on_click(lambda _, ident=f.ident: self._clear(inspector, ident))
            row = w.VBox([table, button])
            row.add_class("pyrojit-cache-function")
            children.append(row)
        self.widget.children = tuple(children)

    def _clear(self, inspector: Any, ident: int | None) -> None:
        inspector.clear(ident)
        self.refresh()

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        assert self.snapshot is not None
        bundle: dict[str, Any] = {"text/plain": str(self.snapshot), "text/html": self.snapshot._repr_html_()}
        view = self.widget._repr_mimebundle_()
        if view:
            bundle.update({k: v for k, v in view.items() if k != "text/plain"})
        return bundle
