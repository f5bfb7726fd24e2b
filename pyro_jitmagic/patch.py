"""Attribute patches taken and restored by one mechanism.

Everything ``%%pyrojit`` changes while a cell runs (``SVI.step``, ``MCMC.run``, ``torch.jit.trace``,
a kernel's ``jit_compile``, an SVI's ``loss_and_grads``, the code of Pyro's ELBO loss methods) goes
through a :class:`PatchSet`. Patches are undone in reverse order in ``finally`` blocks, so nested
runs, exceptions and interrupts restore exactly what was there, even a missing instance attribute.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

# Marks "this attribute was not in the object's own __dict__": restoring then
# deletes it, so a class attribute shows through again (as line_profiler's
# _PatchDict does with its sentinel).
_ABSENT = object()

# Set on every wrapper we install, pointing at what it wraps. A wrapper found
# on a class while no run is active is a leftover from a process that died
# mid-cell (or a ``finally`` that was itself interrupted); it is healed.
ORIGINAL_ATTR = "__pyrojit_original__"

# Marks an undo that is a call, not an attribute to put back (see PatchSet.on_restore).
_CALL = "__pyrojit_call__"


def unwrap(fn: Any) -> Any:
    """The function beneath any number of our wrappers."""
    while hasattr(fn, ORIGINAL_ATTR):
        fn = getattr(fn, ORIGINAL_ATTR)
    return fn


class PatchSet:
    """A stack of attribute patches, undone together in reverse order."""

    def __init__(self) -> None:
        self._undo: list[tuple[Any, str, Any]] = []

    def on_restore(self, undo: Callable[[], Any]) -> None:
        """Call ``undo()`` when the patches are restored, in its place among them (a setting
        that is not an attribute, such as torch's executor flags)."""
        self._undo.append((undo, _CALL, None))

    def set(self, obj: Any, name: str, value: Any) -> None:
        """Set ``obj.name = value`` until :meth:`restore`."""
        own = getattr(obj, "__dict__", None)
        if own is None or _is_data_descriptor(type(obj), name):
            # stored by its type, not in the object's __dict__ (a function's
            # __code__): there is no absence to restore, only the old value
            old = getattr(obj, name)
        else:
            old = own.get(name, _ABSENT)
        self._undo.append((obj, name, old))
        setattr(obj, name, value)

    def restore(self) -> None:
        """Undo every patch, newest first. Safe to call twice."""
        errors: list[BaseException] = []
        while self._undo:
            obj, name, old = self._undo.pop()
            try:
                if name is _CALL:
                    obj()
                elif old is _ABSENT:
                    if name in vars(obj):
                        delattr(obj, name)
                else:
                    setattr(obj, name, old)
            except BaseException as exc:  # keep restoring the rest
                errors.append(exc)
        if errors:
            raise errors[0]

    def __len__(self) -> int:
        return len(self._undo)


def _is_data_descriptor(cls: type, name: str) -> bool:
    # (a type's own descriptors do not change; a run sets thirty-odd attributes, each looked up here)
    known = _DESCRIPTORS.get((cls, name))
    if known is None:
        attr = inspect.getattr_static(cls, name, None)
        known = _DESCRIPTORS[(cls, name)] = attr is not None and hasattr(type(attr), "__set__")
    return known


_DESCRIPTORS: dict[tuple[type, str], bool] = {}


def heal(owner: Any, name: str) -> bool:
    """Remove a leftover wrapper of ours from ``owner.name``; True if one was found."""
    current = vars(owner).get(name)
    if current is not None and hasattr(current, ORIGINAL_ATTR):
        setattr(owner, name, unwrap(current))
        return True
    return False
