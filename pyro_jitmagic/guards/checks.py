"""Guards: what a compiled graph assumed about the world, checked before every call.

A :class:`Guards` holds one artifact's assumptions (values read from globals and closures, module
modes, torch's default dtype, Pyro's validation flags, the ELBO's settings) as one generated
function, as ``torch.compile`` keeps its guards: one call on the hot path. When it fails,
:meth:`Guards.changes` says what changed in the user's words (``global prior_scale 10.0 -> 0.05``),
and the caller compiles again or runs eager. :class:`CallSite` is the state of one call (grad mode,
a Pyro handler) that no graph holds: a step made under it runs eager.
"""

from __future__ import annotations

import functools
import math
import types
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from ..compat import jit as compat
from .world import Read, Source, World

#: Lists, tuples, dicts and sets of plain values at most this long are guarded by value;
#: longer ones by identity and length.
MAX_VALUE_ITEMS = 64
#: numpy arrays of at most this many elements are guarded by their contents too.
MAX_ARRAY_CONTENTS = 4096

_PLAIN = (bool, int, float, complex, str, bytes, type(None), type(Ellipsis))


@dataclass(frozen=True)
class Change:
    """One assumption that no longer holds: ``what`` went from ``before`` to ``after``."""

    what: str
    before: str
    after: str

    def __str__(self) -> str:
        return f"{self.what} {self.before} -> {self.after}"


@dataclass(frozen=True)
class Guard:
    """One assumption: a Python expression over bound constants, and how to say what it was.

    ``fast``: part of the check on every call; otherwise only read to say what changed, another
    expression checking it with others at once (an object's settings, as one tuple)."""

    what: str
    expression: str
    before: str
    now: Callable[[], str]
    fast: bool = True


@dataclass(frozen=True)
class Combined:
    """An expression that checks several guards at once. ``settings``: the dict (an object's
    ``vars``) whose values it compares, where none of them can change in place: the dict left as
    it was when the expression held, the expression holds."""

    expression: str
    settings: dict[str, Any] | None = None


def immutable(value: Any) -> bool:
    """Whether ``value`` cannot change in place: a plain number or string, or a tuple or frozenset
    of them."""
    if isinstance(value, _PLAIN):
        return True
    return isinstance(value, (tuple, frozenset)) and all(immutable(v) for v in value)


def show(value: Any) -> str:
    """A value as a guard's change shows it: short; a tensor by its shape; an object by its type, never
    by its ``repr`` (which may run code: a ``PyroModule``'s samples its ``PyroSample`` attributes)."""
    import torch

    if isinstance(value, torch.Tensor):
        return f"a tensor of shape {tuple(value.shape)}"
    if _plain(value) or isinstance(value, _Missing):
        text = repr(value)
        return text if len(text) <= 40 else text[:37] + "..."
    name = getattr(value, "__qualname__", None) if isinstance(value, (type, types.FunctionType)) else None
    return name or f"a {type(value).__name__}"


def _plain(value: Any, depth: int = 0) -> bool:
    """Whether ``value`` is compared by value: plain numbers and strings, and small containers of them."""
    if isinstance(value, _PLAIN):
        return True
    if depth > 2 or not isinstance(value, (tuple, list, dict, set, frozenset)):
        return False
    if len(value) > MAX_VALUE_ITEMS:
        return False
    items = list(value.items()) if isinstance(value, dict) else list(value)
    flat = [x for item in items for x in (item if isinstance(value, dict) else (item,))]
    return all(_plain(x, depth + 1) for x in flat)


def _copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


class Constants:
    """The objects that generated code refers to, by the names :meth:`bind` gives them; ``namespace``
    holds them by name, for the code's globals."""

    def __init__(self, prefix: str = "K") -> None:
        self.namespace: dict[str, Any] = {}
        self._names: dict[int, str] = {}
        #: the names' first letter: code over two sets of constants, one prefix each, shares a namespace
        self.prefix = prefix

    def bind(self, obj: Any) -> str:
        """A name for ``obj`` in the generated code (the same object, the same name)."""
        name = self._names.get(id(obj))
        if name is None or self.namespace[name] is not obj:
            name = f"{self.prefix}{len(self.namespace)}"
            self.namespace[name] = obj
            self._names[id(obj)] = name
        return name


@dataclass
class GuardBuilder:
    """Collects guards, then :meth:`build` makes them one function."""

    guards: list[Guard] = field(default_factory=list)
    #: expressions that check several guards at once, on every call (those guards are not ``fast``)
    combined: list[Combined] = field(default_factory=list)
    # (their own prefix: a compiled step's short way checks them inline, among its own constants)
    _bound: Constants = field(default_factory=lambda: Constants("W"))

    @property
    def constants(self) -> dict[str, Any]:
        return self._bound.namespace

    def bind(self, obj: Any) -> str:
        """A name for ``obj`` in the generated function (the same object, the same name)."""
        return self._bound.bind(obj)

    def add(self, what: str, expression: str, before: str, now: Callable[[], str], fast: bool = True) -> None:
        self.guards.append(Guard(what, expression, before, now, fast))

    # -- values read from outside --------------------------------------------------------
    def read(self, read: Read, as_input: bool = False) -> None:
        """Guard one read by what it holds (a tensor ``as_input`` is the graph's input: only
        its layout is assumed, and the caller checks that when it binds it)."""
        import torch

        source, value = read.source, read.value
        fetch = source.expression(self.bind)
        what = read.describe()

        def now(source: Source = source) -> str:
            try:
                return show(source.fetch())
            except LookupError:
                return "gone"

        if isinstance(value, torch.Tensor):
            if as_input:
                return
            k, version = self.bind(value), compat.tensor_version(value)
            self.add(what, f"(({fetch}) is {k} and {k}.{compat.VERSION_ATTR} == {version})",
                     show(value) + f" (version {version})", partial(_tensor_now, source, value))
            return
        if isinstance(value, float) and math.isnan(value):
            self.add(what, f"(type(_v := {fetch}) is float and _v != _v)", "nan", now)
            return
        if _plain(value):
            k = self.bind(_copy(value))
            t = self.bind(type(value))
            self.add(what, f"(type(_v := {fetch}) is {t} and _v == {k})", show(value), now)
            return
        numpy = _numpy()
        k = self.bind(value)
        if numpy is not None and isinstance(value, numpy.ndarray):
            if value.size <= MAX_ARRAY_CONTENTS:
                contents = value.copy()
                snapshot, equal = self.bind(contents), self.bind(numpy.array_equal)
                self.add(what, f"((_v := {fetch}) is {k} and {equal}(_v, {snapshot}))",
                         f"an array of shape {value.shape}", partial(_array_now, source, contents))
            else:
                self.add(what, f"(({fetch}) is {k})", f"an array of shape {value.shape}", now)
            return
        if isinstance(value, (list, dict, set)):
            self.add(what, f"((_v := {fetch}) is {k} and len(_v) == {len(value)})",
                     f"{show(value)} ({len(value)} items)", now)
            return
        self.add(what, f"(({fetch}) is {k})", show(value), partial(_object_now, source, value))
        self._held_tensors(read)

    def _held_tensors(self, read: Read) -> None:
        """A distribution (or another library object) held as a constant: its tensors' values too."""
        import torch

        try:
            held = vars(read.value)
        except TypeError:
            return
        for name, value in held.items():
            if isinstance(value, torch.Tensor) and not name.startswith("__"):
                k, version = self.bind(value), compat.tensor_version(value)
                self.add(f"{read.describe()}.{name}", f"({k}.{compat.VERSION_ATTR} == {version})",
                         f"version {version}", partial(_in_place, value))

    def world(self, world: World, inputs: Iterable[int] = ()) -> None:
        """Guard every read of ``world`` (tensors whose id is in ``inputs`` are the graph's inputs),
        and the training flag of every module it runs."""
        taken = set(inputs)
        for read in world.reads:
            self.read(read, as_input=id(read.value) in taken)
        for module in world.modules:
            k = self.bind(module)
            flag = module.training
            name = type(module).__name__
            self.add(f"{name}.training", f"({k}.training is {flag})", str(flag),
                     partial(_attribute, module, "training"))

    # -- torch's and Pyro's modes -----------------------------------------------------------
    def modes(self) -> None:
        """torch's default dtype and Pyro's validation flags, as they are now."""
        import torch

        dtype = torch.get_default_dtype()
        self.add("torch's default dtype", f"({self.bind(torch.get_default_dtype)}() is {self.bind(dtype)})",
                 str(dtype), lambda: str(torch.get_default_dtype()))
        getters = compat.validation_getters()
        now = tuple(bool(get()) for get in getters)
        each = (f"{self.bind(get)}() == {flag}" for get, flag in zip(getters, now, strict=True))
        self.add("pyro.enable_validation", f"({' and '.join(each)})", _validation(now),
                 lambda: _validation(tuple(bool(get()) for get in getters)))

    def settings(self, what: str, obj: Any, skip: Iterable[str] = ()) -> None:
        """``obj``'s own attributes that hold plain values (an ELBO's ``num_particles``...): checked as
        one tuple on every call, each said by name when it changed."""
        settings = plain_settings(obj, skip)
        if not settings:
            return
        held = self.bind(vars(obj))
        for name, value in settings.items():
            copied = self.bind(_copy(value))
            self.add(f"{what}.{name}", f"({held}.get({name!r}, {self.bind(_MISSING)}) == {copied})",
                     show(value), partial(_attribute, obj, name), fast=False)
        values = ", ".join(f"{held}[{name!r}]" for name in settings)
        expression = f"(({values},) == {self.bind(tuple(_copy(v) for v in settings.values()))})"
        frozen = all(immutable(v) for v in settings.values())
        self.combined.append(Combined(expression, vars(obj) if frozen else None))

    def build(self) -> Guards:
        return Guards(list(self.guards), dict(self.constants), list(self.combined))


def plain_settings(obj: Any, skip: Iterable[str] = ()) -> dict[str, Any]:
    """``obj``'s own attributes that hold plain values, by name: what a copy of its settings keeps."""
    skipped = set(skip)
    return {name: value for name, value in sorted(vars(obj).items())
            if name not in skipped and not name.startswith("__") and _plain(value)}


class _Missing:
    def __repr__(self) -> str:
        return "gone"


_MISSING = _Missing()


def _validation(flags: tuple[bool, ...]) -> str:
    return "on" if all(flags) else "off" if not any(flags) else f"partly on {flags}"


def _numpy() -> Any:
    import sys

    return sys.modules.get("numpy")


def _tensor_now(source: Source, before: Any) -> str:
    try:
        value = source.fetch()
    except LookupError:
        return "gone"
    if value is before:
        return _in_place(value)
    return "another " + show(value).removeprefix("a ")


def _attribute(obj: Any, name: str) -> str:
    return show(vars(obj).get(name, _MISSING))


def _in_place(tensor: Any) -> str:
    return f"changed in place (version {compat.tensor_version(tensor)})"


def _array_now(source: Source, contents: Any) -> str:
    numpy = _numpy()
    try:
        value = source.fetch()
    except LookupError:
        return "gone"
    if numpy is not None and isinstance(value, numpy.ndarray) and value.shape == contents.shape:
        return "changed in place" if not numpy.array_equal(value, contents) else "another array"
    return show(value)


def _object_now(source: Source, before: Any) -> str:
    try:
        value = source.fetch()
    except LookupError:
        return "gone"
    return f"another {type(value).__name__}" if type(value) is type(before) else show(value)


class Guards:
    """One compiled artifact's assumptions: :meth:`holds` on the hot path, :meth:`changes` after."""

    def __init__(self, guards: list[Guard], constants: dict[str, Any],
                 combined: list[Combined] | None = None) -> None:
        self.guards = tuple(guards)
        self._constants = constants
        self._combined = tuple(combined or ())
        fast = [g.expression for g in guards if g.fast] + [c.expression for c in self._combined]
        self.holds: Callable[[], bool] = _generate(fast, constants)

    @property
    def constants(self) -> dict[str, Any]:
        return self._constants

    def inline(self, unchanged: Callable[[dict[str, Any]], str | None]) -> str:
        """What :attr:`holds` evaluates, as one expression over :attr:`constants`, for other generated
        code to check inline (its namespace takes them: their names are their own). Where every
        guard holds now, a combined check over an object's settings is skipped while their dict is
        unchanged (``unchanged(d)``: an expression over that code's constants that holds while
        ``d`` is unchanged from now, or None)."""
        now = self.holds()
        checks = [g.expression for g in self.guards if g.fast]
        for combined in self._combined:
            skip = unchanged(combined.settings) if now and combined.settings is not None else None
            checks.append(f"({skip} or {combined.expression})" if skip else combined.expression)
        return " and ".join(f"({e})" for e in checks) or "True"

    def changes(self) -> list[Change]:
        """What no longer holds, each in words (empty when everything holds)."""
        found = []
        for guard in self.guards:
            if not _generate([guard.expression], self._constants)():
                found.append(Change(guard.what, guard.before, guard.now()))
        return found

    def described(self) -> tuple[str, ...]:
        """Each guard as the cache inspector lists it: what is assumed, and its value."""
        return tuple(f"{g.what} == {g.before}" for g in self.guards)

    def __len__(self) -> int:
        return len(self.guards)

    def __repr__(self) -> str:
        return f"<Guards: {len(self.guards)}>"


def _generate(expressions: list[str], constants: dict[str, Any]) -> Callable[[], bool]:
    """One function that evaluates every expression, False on the first that fails (or raises: a
    global deleted, a cell emptied)."""
    if not expressions:
        return _always
    body = " and\n            ".join(expressions)
    source = (f"def holds():\n    try:\n        return bool({body})\n"
              "    except Exception:\n        return False\n")
    namespace: dict[str, Any] = dict(constants)
    exec(_compiled(source), namespace)  # our own expressions only
    return namespace["holds"]


@functools.lru_cache(maxsize=256)
def _compiled(source: str) -> types.CodeType:
    """The code of a guard function: the same expressions each cell, on their constants' names (a
    compile was part of every cell's set-up)."""
    return compile(source, "<pyro_jitmagic guards>", "exec")


def _always() -> bool:
    return True


def no_guards() -> Guards:
    """The guards of an artifact that assumed nothing."""
    return Guards([], {})


class CallSite:
    """The state of one call that no graph holds: grad mode, inference mode, anomaly detection, and
    Pyro handlers around the call. A step made under any of them runs eager, and nothing is
    compiled for it: ``with torch.no_grad(): svi.step(data)`` trains nothing in eager Pyro, and
    ``with poutine.scale(scale=0.01):`` scales every site of that step only."""

    def __init__(self) -> None:
        import torch

        self._grad = torch.is_grad_enabled
        self._inference = torch.is_inference_mode_enabled
        self._anomaly = torch.is_anomaly_enabled
        self._stack = compat.handler_stack()

    def problem(self) -> str | None:
        """None while the call may run compiled (the common case costs four cheap calls), else why not."""
        if self._grad() and not self._stack and not self._inference() and not self._anomaly():
            return None
        return self.why()

    def test(self, bind: Callable[[Any], str]) -> str:
        """An expression that holds where :meth:`problem` finds none, over constants named by ``bind``,
        for generated code that checks it on every step."""
        return (f"{bind(self._grad)}() and not {bind(self._stack)} and not {bind(self._inference)}() "
                f"and not {bind(self._anomaly)}()")

    def why(self) -> str:
        """Why a call may not run compiled, where :meth:`problem` finds a problem."""
        if self._stack:
            names = ", ".join(dict.fromkeys(type(m).__name__ for m in self._stack))
            return f"a Pyro handler was active around it ({names})"
        if self._inference():
            return "torch.inference_mode() was active"
        if not self._grad():
            return "torch.no_grad() was active"
        return "torch's anomaly detection was on"


#: A signature that compiled again this many times in one run for the same changing value stops
#: compiling for the rest of the run (the value changes on every step or so); so does one that
#: compiled again :data:`STORM_ANY` times for any reasons.
STORM_SAME = 3
STORM_ANY = 8


@dataclass
class Recompiles:
    """The compiles one signature made again in one run, and whether they have become a storm."""

    count: int = 0
    by_what: dict[str, list[str]] = field(default_factory=dict)

    def add(self, changes: list[Change]) -> str | None:
        """Count a compile for ``changes``; a storm's reason once it is one, else None."""
        self.count += 1
        for change in changes:
            self.by_what.setdefault(change.what, []).append(change.after)
        for what, values in self.by_what.items():
            if len(values) >= STORM_SAME:
                return f"{what} kept changing ({' -> '.join(values[-STORM_SAME:])})"
        if self.count >= STORM_ANY:
            return f"it compiled again {self.count} times ({', '.join(self.by_what)})"
        return None
