"""What a model and guide read from outside their arguments: the world a compiled graph freezes.

Eager Pyro reads a global, a closure variable or an attribute afresh at every step; a graph holds
what its trace read as a constant. So the reads are found before a trace, in the bytecode of the
model, the guide and the user's code they reach, as ``torch.compile`` finds its guards. Each read
has a :class:`Source` that fetches its value again. Random draws outside torch, which no graph can
repeat, are found too. Reads through ``getattr`` or ``globals()`` are not seen: the sentinel
(:mod:`.sentinel`) is there for what the guards miss.
"""

from __future__ import annotations

import contextlib
import dis
import linecache
import os
import sys
import sysconfig
import types
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from functools import lru_cache, partial
from typing import Any, Literal

#: Code objects read per world at most: a model that reaches more is read that far (the
#: sentinel watches the rest).
MAX_CODES = 400

_LOAD_ROOT = {"LOAD_GLOBAL": "global", "LOAD_NAME": "global", "LOAD_DEREF": "closure",
              "LOAD_CLASSDEREF": "closure"}
_LOAD_ATTR = {"LOAD_ATTR", "LOAD_METHOD"}


@dataclass(frozen=True)
class Source:
    """Where a value the code reads lives, and how to fetch it again.

    ``root`` is a module's globals dict (``kind="global"``), a closure cell
    (``"closure"``) or an object the code holds (``"object"``: a method's ``self``, a
    wrapper's argument); ``path`` walks on from there, by attribute (``("attr", name)``,
    read from the object's ``__dict__``, never through a property) or by item
    (``("item", key)``).
    """

    kind: Literal["global", "closure", "object"]
    root: Any
    name: str  # the global's or the closure variable's name; the object's in words
    path: tuple[tuple[str, Any], ...] = ()

    def fetch(self) -> Any:
        """The value now; LookupError when it is gone."""
        try:
            if self.kind == "global":
                value = self.root[self.name]
            elif self.kind == "closure":
                value = self.root.cell_contents
            else:
                value = self.root
            for how, key in self.path:
                value = vars(value)[key] if how == "attr" else value[key]
        except (KeyError, ValueError, IndexError, TypeError) as exc:
            raise LookupError(self.describe()) from exc
        return value

    def expression(self, bind: Callable[[Any], str]) -> str:
        """A Python expression that fetches the value, over constants named by ``bind``."""
        if self.kind == "global":
            text = f"{bind(self.root)}[{self.name!r}]"
        elif self.kind == "closure":
            text = f"{bind(self.root)}.cell_contents"
        else:
            text = bind(self.root)
        for how, key in self.path:
            text += f".__dict__[{key!r}]" if how == "attr" else f"[{key!r}]"
        return text

    def text(self) -> str:
        """The name and the path from it, as the code spells it: ``cfg.scale``, ``data['x']``."""
        text = self.name
        for how, key in self.path:
            text += f".{key}" if how == "attr" else f"[{key!r}]"
        return text

    def describe(self) -> str:
        """In the user's words: ``global cfg.scale``, ``closure variable n``, ``Model.alpha``."""
        text = self.text()
        if self.kind == "global":
            return f"global {text}"
        if self.kind == "closure":
            return f"closure variable {text}"
        return text

    def child(self, how: str, key: Any) -> Source:
        return Source(self.kind, self.root, self.name, (*self.path, (how, key)))


@dataclass(frozen=True)
class Read:
    """One value read from outside the arguments: where it lives, what it held, who read it."""

    source: Source
    value: Any
    where: str  # "file:line" of the first read
    line: str = ""  # that line's text

    def describe(self) -> str:
        return self.source.describe()


@dataclass(frozen=True)
class OutsideDraw:
    """A random draw the code makes outside torch's default generator, which no graph repeats."""

    what: str  # "np.random.choice"
    where: str
    line: str = ""

    def __str__(self) -> str:
        return f"{self.what} at {self.where}" + (f": {self.line}" if self.line else "")


@dataclass
class World:
    """What the code reads: values by source, the modules whose mode it runs in, its outside draws."""

    reads: list[Read] = field(default_factory=list)
    modules: list[Any] = field(default_factory=list)  # torch.nn.Modules: their training flags matter
    draws: list[OutsideDraw] = field(default_factory=list)
    generators: list[Any] = field(default_factory=list)  # numpy/Python generators it holds
    codes: int = 0

    def tensors(self) -> list[Read]:
        """The reads that hold tensors."""
        import torch

        return [r for r in self.reads if isinstance(r.value, torch.Tensor)]


# -- what is the user's code -------------------------------------------------------------

@lru_cache(maxsize=1)
def _library_dirs() -> tuple[str, ...]:
    paths = sysconfig.get_paths()
    dirs = {paths.get(k, "") for k in ("stdlib", "platstdlib", "purelib", "platlib")}
    dirs |= {os.path.dirname(os.path.dirname(os.path.abspath(__file__)))}  # this package
    for name in ("torch", "pyro", "numpy"):
        path = getattr(sys.modules.get(name), "__file__", None)
        if path:
            dirs.add(os.path.dirname(os.path.dirname(path)))
    return tuple(sorted(os.path.join(os.path.abspath(d), "") for d in dirs if d))


def is_users(code: types.CodeType) -> bool:
    """Whether ``code`` is the user's (a notebook cell, a script, their own module), not a library's."""
    name = code.co_filename
    if name.startswith("<frozen") or name in ("<string>", "<built-in>"):
        return name == "<string>"
    if name.startswith("<"):
        return True  # <ipython-input-...>, <cell>
    return not os.path.abspath(name).startswith(_library_dirs())


def _is_library_module(value: types.ModuleType) -> bool:
    path = getattr(value, "__file__", None)
    return path is None or os.path.abspath(path).startswith(_library_dirs())


# -- random draws outside torch -----------------------------------------------------------------

def _generator_types() -> tuple[type, ...]:
    import random

    found: list[type] = [random.Random]
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        found += [numpy.random.RandomState, numpy.random.Generator]
    torch = sys.modules.get("torch")
    if torch is not None:
        found.append(torch.Generator)
    return tuple(found)


def _draws_outside_torch(value: Any) -> bool:
    """A generator of numpy's or Python's, a function drawing from one, or a torch.Generator of its own."""
    generators = _generator_types()
    if isinstance(value, generators):
        torch = sys.modules.get("torch")
        return torch is None or value is not torch.default_generator
    if not isinstance(value, (types.BuiltinMethodType, types.MethodType, types.FunctionType)):
        return False  # (an object's own lookup may run code: a PyroModule's samples)
    owner = getattr(value, "__self__", None)
    if owner is not None and isinstance(owner, generators):
        return True
    module = getattr(value, "__module__", None) or ""
    return module == "random" or module.startswith("numpy.random")


def outside_states(world: World | None = None) -> list[Any]:
    """The states of every random stream outside torch's default generator that the code may draw
    from: numpy's and Python's global streams and the generators it holds."""
    import random

    states: list[Any] = [random.getstate()]
    numpy = sys.modules.get("numpy")
    if numpy is not None:
        states.append(numpy.random.get_state(legacy=False))
    for generator in (world.generators if world is not None else ()):
        states.append(_generator_state(generator))
    return states


def _generator_state(generator: Any) -> Any:
    if hasattr(generator, "bit_generator"):
        return generator.bit_generator.state
    if hasattr(generator, "get_state"):  # numpy's RandomState, torch.Generator
        return generator.get_state()
    return generator.getstate()


def states_equal(a: list[Any], b: list[Any]) -> bool:
    """Whether two :func:`outside_states` are the same (numpy states hold arrays)."""
    return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))


def _equal(a: Any, b: Any) -> bool:
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_equal(a[k], b[k]) for k in a)
    if isinstance(a, (tuple, list)):
        return len(a) == len(b) and all(_equal(x, y) for x, y in zip(a, b, strict=True))
    if hasattr(a, "shape") and hasattr(a, "dtype"):  # an array or a tensor
        import numpy as np

        return bool(np.array_equal(np.asarray(a), np.asarray(b)))
    return bool(a == b)


# -- reading the code ----------------------------------------------------------------------

def _chains(code: types.CodeType, self_name: str | None) -> Iterator[tuple[str, str, tuple, int]]:
    """(root kind, root name, path, line) of every chain of loads that starts at a global, a free
    variable or ``self`` and walks on by attributes or constant items."""
    instructions = list(dis.get_instructions(code))
    line = code.co_firstlineno
    i, n = 0, len(instructions)
    while i < n:
        ins = instructions[i]
        if ins.starts_line:
            line = ins.starts_line
        kind = _LOAD_ROOT.get(ins.opname)
        if kind == "closure" and ins.argval not in code.co_freevars:
            kind = None  # a cell of this function's own: a local
        if kind is None and ins.opname == "LOAD_FAST" and self_name is not None and ins.argval == self_name:
            kind = "self"
        if kind is None:
            i += 1
            continue
        path: list[tuple[str, Any]] = []
        j = i + 1
        while j < n:
            op = instructions[j].opname
            if op in _LOAD_ATTR:
                path.append(("attr", instructions[j].argval))
                j += 1
            elif (op == "LOAD_CONST" and j + 1 < n and instructions[j + 1].opname == "BINARY_SUBSCR"
                  and isinstance(instructions[j].argval, (str, int))):
                path.append(("item", instructions[j].argval))
                j += 2
            else:
                break
        yield kind, ins.argval, tuple(path), line
        i = j


def _nested(code: types.CodeType) -> Iterator[types.CodeType]:
    for const in code.co_consts:
        if isinstance(const, types.CodeType):
            yield const


class _CodeReader:
    """Reads the code reachable from some roots, once each."""

    def __init__(self, locate: Callable[[str, int], str]) -> None:
        self.locate = locate
        self.world = World()
        self._seen_codes: set[int] = set()
        self._seen_values: set[int] = set()
        self._reads: dict[tuple[Any, ...], Read] = {}
        self._keep: list[Any] = []  # what the seen ids belong to, alive while reading

    # -- values: what a read holds, and whether to read on from it ---------------------------
    def value(self, value: Any, source: Source | None, where: str = "", line: str = "") -> None:
        if source is not None:
            key = (id(source.root), source.kind, source.name, source.path)
            if key not in self._reads:
                self._reads[key] = Read(source, value, where, line)
                self.world.reads.append(self._reads[key])
        if _draws_outside_torch(value):
            self._draw(value, source, where, line)
            return
        if id(value) in self._seen_values:
            return
        self._seen_values.add(id(value))
        self._keep.append(value)
        self.read_on(value)

    def _draw(self, value: Any, source: Source | None, where: str, line: str) -> None:
        """A random stream outside torch's default generator, or a function that draws from one."""
        what = source.text() if source is not None else type(value).__name__
        self.world.draws.append(OutsideDraw(what, where, line))
        # the generator whose state moves: the value itself, or the object a bound method draws from
        generator = value if not callable(value) else getattr(value, "__self__", None)
        if generator is not None and not isinstance(generator, (type, types.ModuleType)) \
                and generator not in self.world.generators and not _is_global_stream(generator):
            self.world.generators.append(generator)

    def read_on(self, value: Any) -> None:
        """Read on into what ``value`` runs when called, or holds that runs."""
        import torch

        if isinstance(value, types.FunctionType):
            self.function(value, None)
        elif isinstance(value, types.MethodType) and isinstance(value.__func__, types.FunctionType):
            self.function(value.__func__, value.__self__)
        elif isinstance(value, partial):
            self.value(value.func, None)
            # a wrapper's arguments are fixed: what can change is a tensor's values in place
            for arg in (*value.args, *(value.keywords or {}).values()):
                self.value(arg, Source("object", arg, f"an argument of {_label(value.func)}"))
        elif isinstance(value, torch.nn.Module):
            for module in value.modules():
                if module not in self.world.modules:
                    self.world.modules.append(module)
                forward = type(module).__dict__.get("forward")
                if isinstance(forward, types.FunctionType) and is_users(forward.__code__):
                    self.function(forward, module)
            self._library_object(value)
        elif isinstance(value, type):
            if not _is_library_class(value):
                for member in vars(value).values():
                    target = member.__func__ if isinstance(member, (staticmethod, classmethod)) else member
                    if isinstance(target, types.FunctionType):
                        self.function(target, None)
        elif callable(value) and not isinstance(value, types.BuiltinFunctionType):
            call = vars(type(value)).get("__call__")
            if isinstance(call, types.FunctionType) and is_users(call.__code__):
                self.function(call, value)
            else:
                self._library_object(value)
        # (looked up in the object's own attributes: a PyroModule's attribute lookup may sample)
        wrapped = _own(value, "__wrapped__")
        if wrapped is not None and wrapped is not value:
            self.value(wrapped, None)

    def _library_object(self, value: Any) -> None:
        """A wrapper of Pyro's (a handler's messenger, an AutoGuide): the user's callables it holds."""
        try:
            held = vars(value)
        except TypeError:
            return
        for item in list(held.values()):
            if callable(item) and not isinstance(item, type):
                self.value(item, None)

    # -- code ------------------------------------------------------------------------
    def function(self, fn: types.FunctionType, self_obj: Any) -> None:
        code = fn.__code__
        if not is_users(code):
            # a library's wrapper (a handler around the user's model): the callables it closes over
            for cell in fn.__closure__ or ():
                with contextlib.suppress(ValueError):  # an empty cell
                    self.value(cell.cell_contents, None)
            return
        self_name = code.co_varnames[0] if self_obj is not None and code.co_argcount else None
        cells = dict(zip(code.co_freevars, fn.__closure__ or (), strict=False))
        self.code(code, fn.__globals__, cells, self_name, self_obj, _label(fn))

    def code(self, code: types.CodeType, globals_: dict[str, Any], cells: dict[str, Any],
             self_name: str | None, self_obj: Any, owner: str) -> None:
        if id(code) in self._seen_codes or len(self._seen_codes) >= MAX_CODES:
            return
        self._seen_codes.add(id(code))
        self._keep.append(code)
        self.world.codes += 1
        for kind, name, path, line in _chains(code, self_name):
            if kind == "global":
                if name not in globals_:
                    continue  # a builtin, or a name not bound yet
                source = Source("global", globals_, name)
            elif kind == "closure":
                if name not in cells:
                    continue
                source = Source("closure", cells[name], name)
            else:
                source = Source("object", self_obj, _label(self_obj, owner))
            self._chain(source, path, code.co_filename, line)
        for nested in _nested(code):
            inner = {name: cells[name] for name in nested.co_freevars if name in cells}
            self.code(nested, globals_, inner, None, None, owner)

    def _chain(self, source: Source, path: tuple[tuple[str, Any], ...], filename: str, line: int) -> None:
        """Follow ``path`` from ``source`` as far as it reads plain data; the value there is read."""
        try:
            value = source.fetch()
        except LookupError:
            return
        if source.kind == "object" and not path:
            return  # ``self`` itself: the object the method runs on
        for how, key in path:
            if isinstance(value, types.ModuleType) and _is_library_module(value):
                self._library_path(value, path, filename, line)
                return
            try:
                held = vars(value) if how == "attr" else value
                if how == "attr" and isinstance(value, type) and _is_library_class(value):
                    break
                nxt = held[key]
            except (TypeError, KeyError, IndexError):
                break
            value, source = nxt, source.child(how, key)
        if isinstance(value, types.ModuleType) and _is_library_module(value):
            return
        self.value(value, source, self.locate(filename, line), linecache.getline(filename, line).strip())

    def _library_path(self, module: Any, path: tuple[tuple[str, Any], ...], filename: str, line: int) -> None:
        """``np.random.choice``: a library's function is not guarded, but a draw outside torch is noted."""
        value = module
        for how, key in path:
            value = getattr(value, key, None) if how == "attr" else None
            if value is None:
                return
            if _draws_outside_torch(value):
                text = linecache.getline(filename, line).strip()
                name = ".".join(str(k) for _, k in path[: path.index((how, key)) + 1])
                self.world.draws.append(OutsideDraw(f"{_module_name(module)}.{name}",
                                                    self.locate(filename, line), text))
                return


def _own(obj: Any, name: str) -> Any:
    try:
        return vars(obj).get(name)
    except TypeError:
        return None


def _is_global_stream(generator: Any) -> bool:
    """numpy's or Python's process-wide stream (its state is read by :func:`outside_states`)."""
    import random

    numpy = sys.modules.get("numpy")
    if numpy is not None and generator is getattr(numpy.random.mtrand, "_rand", None):
        return True
    return generator is getattr(random, "_inst", None)


def _is_library_class(cls: type) -> bool:
    module = sys.modules.get(cls.__module__)
    return module is None or _is_library_module(module) or cls.__module__ == "builtins"


def _module_name(module: Any) -> str:
    name = module.__name__
    return {"numpy": "np"}.get(name, name)


def _label(obj: Any, fallback: str = "self") -> str:
    """A function or class by its name, anything else by its type's (an object's own lookup may run
    code: a PyroModule's samples)."""
    if obj is None:
        return fallback
    if isinstance(obj, (type, types.FunctionType, types.MethodType, partial)):
        name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", None)
        if isinstance(name, str):
            return name
    return type(obj).__name__


def short_location(filename: str, line: int) -> str:
    """``file.py:12``: a line named outside IPython."""
    return f"{filename if filename.startswith('<') else os.path.basename(filename)}:{line}"


def read_world(roots: Iterable[Any], locate: Callable[[str, int], str] | None = None) -> World:
    """The world the callables ``roots`` (a model, a guide) read, as it is now; ``locate(filename,
    line)`` names a line as the user knows it (IPython names cells: "cell In[3], line 5")."""
    reader = _CodeReader(locate or short_location)
    for root in roots:
        if root is not None:
            reader.value(root, None)
    return reader.world
