"""The views: records as text, HTML, widgets and plots; and the live progress line.

Importing this package registers how each record shows (see
:mod:`pyro_jitmagic.records.shown`); it imports only the standard library's
``html`` and the records, so it costs nothing: ipywidgets and matplotlib are
imported when a panel or a plot is first built.
"""

from __future__ import annotations

from ..records.cache import CacheSnapshot
from ..records.comparison import Comparison
from ..records.report import JitReport
from ..records.shown import register
from .cache_panel import cache_html, cache_text
from .comparison import comparison_html, comparison_text
from .panel import comparison_bundle
from .report import report_html, report_text

register(JitReport, text=report_text, html=report_html)
register(Comparison, text=comparison_text, html=comparison_html, bundle=comparison_bundle)
register(CacheSnapshot, text=cache_text, html=cache_html)
