"""Naming objects in the user's words: by their name in the namespace when they have one."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def label(obj: Any) -> str:
    """A function's or class's own name, else its type's (``model``, ``AutoNormal``)."""
    return getattr(obj, "__name__", None) or type(obj).__name__


def name_in(namespace: Mapping[str, Any] | None, obj: Any) -> str | None:
    """The public name ``obj`` is bound to in ``namespace``, if any."""
    if namespace is not None:
        for name, value in list(namespace.items()):
            if value is obj and not name.startswith("_"):
                return name
    return None
