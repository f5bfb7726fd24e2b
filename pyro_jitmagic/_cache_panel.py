"""The compile-cache inspector as a widget: a table per compiled function, with clear buttons.

The display bundle carries the same content as ``text/plain`` and
``text/html``; without ipywidgets only those show.
"""

from __future__ import annotations

import html
import weakref
from collections.abc import Callable, Mapping
from typing import Any

from . import _render
from .records.cache import CacheSnapshot


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
        header = w.HTML(f'{_render._STYLE}<div class="pyrojit"><strong>pyrojit cache</strong>: '
                        f"{html.escape(_render.cache_totals(snapshot))}</div>")
        header.add_class("pyrojit-cache-totals")
        children: list[Any] = [header]
        if snapshot.functions:
            clear_all = w.Button(description="Clear all", button_style="warning",
                                 tooltip="drop every compiled trace; the next steps compile again")
            clear_all.add_class("pyrojit-clear-all")
            clear_all.on_click(lambda _: self._clear(inspector, None))
            children.append(clear_all)
        for f in snapshot.functions:
            table = w.HTML('<div class="pyrojit">' + _render.cache_function_html(f) + "</div>")
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
