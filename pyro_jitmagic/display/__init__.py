"""The views: records as text, HTML, widgets and plots; and the live progress line.

Importing this package registers how each record shows (see
:mod:`pyro_jitmagic.records.shown`); it imports only the standard library's
``html`` and the records, so it costs nothing: ipywidgets and matplotlib are
imported when a panel or a plot is first built.
"""

from __future__ import annotations

from .. import _panel, _render
from ..records.cache import CacheSnapshot
from ..records.comparison import Comparison
from ..records.report import JitReport
from ..records.shown import register

register(JitReport, text=_render.report_text, html=_render.report_html)
register(Comparison, text=_render.comparison_text, html=_render.comparison_html,
         bundle=_panel.comparison_bundle)
register(CacheSnapshot, text=_render.cache_text, html=_render.cache_html)
