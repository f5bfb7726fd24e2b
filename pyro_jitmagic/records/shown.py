"""How a record shows, without the record importing a view.

A record that shows itself derives from :class:`Shown`: its ``str()``, HTML and IPython display
bundle are looked up by type in a registry that :mod:`pyro_jitmagic.display` fills when imported
(``import pyro_jitmagic`` imports it). So views import records and no record imports a view. What
a view builds at some cost (plots, a widget) it may keep on the record (:func:`kept`); a copy or a
pickle of the record does not carry it.
"""

from __future__ import annotations

import html
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any, ClassVar

_KEPT = "_shown_kept"


@dataclass(frozen=True)
class Views:
    """How one type of record shows: as text, as HTML, and (optionally) as a whole display bundle."""

    text: Callable[[Any], str]
    html: Callable[[Any], str]
    bundle: Callable[[Any], dict[str, Any]] | None = None


class Shown:
    """Text, HTML and IPython display for a record: one display bundle carries both forms."""

    # type -> its views; filled by pyro_jitmagic.display, read on every display
    _views: ClassVar[dict[type, Views]] = {}

    def _shown_by(self) -> Views | None:
        for cls in type(self).__mro__:
            views = Shown._views.get(cls)
            if views is not None:
                return views
        return None

    def __str__(self) -> str:
        views = self._shown_by()
        return views.text(self) if views is not None else repr(self)

    def _repr_html_(self) -> str:
        views = self._shown_by()
        return views.html(self) if views is not None else f"<pre>{html.escape(repr(self))}</pre>"

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        views = self._shown_by()
        if views is not None and views.bundle is not None:
            return views.bundle(self)
        return {"text/plain": str(self), "text/html": self._repr_html_()}

    def _repr_pretty_(self, printer: Any, cycle: bool) -> None:
        printer.text(str(self))

    def __getstate__(self) -> dict[str, Any]:
        # what views kept on the record (widgets, images) is not part of it
        return {k: v for k, v in vars(self).items() if k != _KEPT}


def register(cls: type, *, text: Callable[[Any], str], html: Callable[[Any], str],
             bundle: Callable[[Any], dict[str, Any]] | None = None) -> None:
    """Show records of type ``cls`` (and its subclasses) with these views."""
    Shown._views[cls] = Views(text, html, bundle)


def kept(record: Any, name: str, make: Callable[[], Any]) -> Any:
    """What ``make()`` returns, made once per record and kept on it (a frozen dataclass too)."""
    store = vars(record).get(_KEPT)
    if store is None:
        store = {}
        object.__setattr__(record, _KEPT, store)
    if name not in store:
        store[name] = make()
    return store[name]


def summary(record: Any, **shown: str) -> str:
    """A dataclass's repr with the fields in ``shown`` replaced by their text (long tuples, code)."""
    parts = [f"{f.name}={shown[f.name] if f.name in shown else repr(getattr(record, f.name))}"
             for f in fields(record)]
    return f"{type(record).__name__}({', '.join(parts)})"
