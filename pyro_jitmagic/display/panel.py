"""The ``--compare`` panel: an ipywidgets view over a :class:`~pyro_jitmagic.records.comparison.Comparison`.

The display bundle always carries ``text/plain`` and ``text/html`` (the same
content, static) beside the widget view, so terminal IPython, a notebook saved
without widget state, and an nbconvert export all still read well. Without
ipywidgets it warns once and shows the HTML.
"""

from __future__ import annotations

import base64
import html
import warnings
from typing import Any

from ..records.comparison import Comparison
from ..records.shown import kept
from . import plots
from .cache_panel import cache_html
from .comparison import agreement_lines, changes_html, comparison_html, timing_table_html
from .report import STYLE, warnings_html

WIDGET_MIME = "application/vnd.jupyter.widget-view+json"


def _img(png: bytes | None, alt: str) -> str:
    if png is None:
        return ""
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}" style="max-width:100%">'


def _ipywidgets() -> Any:
    try:
        import ipywidgets
    except ImportError:
        warnings.warn("ipywidgets is not installed: the --compare panel is shown as HTML "
                      "(pip install ipywidgets for the interactive panel)", stacklevel=3)
        return None
    return ipywidgets


def build_panel(c: Comparison, timing: bytes | None, agreement: bytes | None, cache: Any = None) -> Any:
    """The widget: a one-line verdict over tabs (Timing, Agreement, Warnings, Changes, Cache)."""
    w = _ipywidgets()
    if w is None:
        return None
    style = STYLE
    verdict_class = "agree" if c.agree else "risky"
    header = w.HTML(
        f'{style}<style>.pyrojit .agree{{background:#e8f5e9;border-left:4px solid #2e7d32;'
        f'padding:6px 10px}}</style><div class="pyrojit"><div class="{verdict_class}">'
        f"<strong>{html.escape(c.verdict)}</strong></div></div>")
    header.add_class("pyrojit-verdict")

    def image(png: bytes | None) -> list[Any]:
        return [w.Image(value=png, format="png", layout=w.Layout(max_width="100%"))] if png else []

    tabs = {
        "Timing": w.VBox([w.HTML(style + '<div class="pyrojit">' + timing_table_html(c) + "</div>"),
                          *image(timing)]),
        "Agreement": w.VBox([w.HTML('<div class="pyrojit">' + "<br>".join(
            html.escape(x) for x in agreement_lines(c)) + "</div>"), *image(agreement)]),
        "Warnings": w.HTML('<div class="pyrojit">' + warnings_html(c.compiled) + "</div>"),
        "Changes": w.HTML('<div class="pyrojit">' + changes_html(c) + "</div>"),
    }
    if cache is not None:
        tabs["Cache"] = cache.widget
    tab = w.Tab(children=list(tabs.values()))
    tab.titles = tuple(tabs)
    for child, name in zip(tab.children, tabs, strict=True):
        child.add_class(f"pyrojit-tab-{name.lower()}")
    panel = w.VBox([header, tab])
    panel.add_class("pyrojit-panel")
    return panel


def comparison_bundle(c: Comparison, widget: bool = True, cache: Any = None) -> dict[str, Any]:
    """text/plain, text/html and, when ipywidgets is there, the widget view.

    ``cache`` is a :class:`~pyro_jitmagic.display.cache_panel.CachePanel` for the Cache tab.
    The plots, the HTML and the panel without a Cache tab are made once per
    comparison, when it is first shown, and kept on it.
    """
    timing, agreement = kept(c, "plots", lambda: (plots.timing_png(c), plots.agreement_png(c)))
    html_form = kept(c, "html", lambda: comparison_html(
        c, {"timing": _img(timing, "step time, eager and compiled"),
            "agreement": _img(agreement, "losses, eager and compiled")}))
    if cache is not None and cache.snapshot is not None:
        html_form += cache_html(cache.snapshot)
    bundle: dict[str, Any] = {"text/plain": str(c), "text/html": html_form}
    if widget:
        panel = (build_panel(c, timing, agreement, cache) if cache is not None
                 else kept(c, "panel", lambda: build_panel(c, timing, agreement)))
        if panel is not None:
            view = panel._repr_mimebundle_()
            if view and WIDGET_MIME in view:
                bundle[WIDGET_MIME] = view[WIDGET_MIME]
    return bundle
