"""How many steps a cell will run, read from its loops before it runs.

The climb decides whether a tier pays from the steps expected to follow. A cell usually says::

    for step in range(num_steps):
        svi.step(data)

    losses = [svi.step(data) for _ in range(num_steps)]

:func:`step_counts` reads the ``for`` loops and comprehensions around each ``X.step(...)`` call
without running anything. A count it cannot read safely (a ``while``, a ``break``, a filter, a
branch, a name the cell rebinds, a generator not consumed at once) leaves that name out: the climb
then falls back on its rent-or-buy rule, never on a wrong count. The figure is a hint, never a
promise: a cell that stops early only makes its decisions late.
"""

from __future__ import annotations

import argparse
import ast
import functools
import numbers
import types
from collections.abc import Mapping
from typing import Any

#: iterables over something of the same length (the first argument)
_SAME_LENGTH = {"enumerate", "tqdm", "reversed"}
#: ``range``'s spellings
_RANGES = {"range", "trange"}
#: calls that consume a generator argument to its end (``any``, ``next`` or ``zip`` may stop early)
_CONSUMING = {"list", "tuple", "set", "frozenset", "dict", "sum", "sorted", "min", "max"}
_COMPREHENSIONS = (ast.ListComp, ast.SetComp, ast.DictComp, ast.GeneratorExp)


def step_counts(source: str, namespace: Mapping[str, Any] | None = None) -> dict[str, int]:
    """``{name: calls}``: how many times each ``name.step(...)`` in ``source`` will run, for the
    names whose loops can be counted from the text (and the ints in ``namespace``)."""
    tree = _parsed(source)
    if tree is None:  # IPython syntax the magic did not transform: no hint
        return {}
    once = _run_once_assignments(tree.body)
    reader = _LoopReader(dict(namespace or {}), once, _rebound(tree, once))
    reader.body(tree.body, 1)
    return {name: n for name, n in reader.counts.items() if name not in reader.unknown and n > 0}


@functools.lru_cache(maxsize=64)
def _parsed(source: str) -> ast.Module | None:
    """The cell's syntax tree, which the reader only reads: parsed once per text (a cell is run again
    and again, and its parse was half the reader's time)."""
    try:
        return ast.parse(source)
    except SyntaxError:
        return None


class _LoopReader:
    def __init__(self, namespace: dict[str, Any], once: set[ast.Assign], rebound: set[str]) -> None:
        self.namespace = namespace
        self.once = once  # ``name = value`` statements the cell runs once, in order
        self.rebound = rebound  # names bound elsewhere (a loop's target, inside a loop): no value
        self.local: dict[str, int | None] = {}  # what the cell has assigned so far (None: not an int)
        self.counts: dict[str, int] = {}
        self.unknown: set[str] = set()

    def body(self, statements: list[ast.stmt], times: int | None) -> None:
        for statement in statements:
            self.statement(statement, times)

    def statement(self, node: ast.stmt, times: int | None) -> None:
        if isinstance(node, ast.For):
            self.calls(node.iter, times)
            n = self.length(node.iter)
            inner = None if n is None or times is None or _breaks(node) else times * n
            self.body(node.body, inner)
            self.body(node.orelse, times)
        elif isinstance(node, ast.Assign) and node in self.once:
            name = node.targets[0].id  # type: ignore[attr-defined]
            self.local[name] = self.integer(node.value)
            self.calls(node.value, times)
        elif isinstance(node, (ast.If, ast.With, ast.Try)):
            # a branch may not run at all; the body of a with or a try runs once (a try around a
            # training loop catches Ctrl-C: a hint still)
            if isinstance(node, ast.If):
                self.calls(node.test, times)
            else:
                for item in getattr(node, "items", []):
                    self.calls(item, times)
            runs = None if isinstance(node, ast.If) else times
            for field in ("body", "orelse", "finalbody"):
                self.body(getattr(node, field, []), runs)
            for handler in getattr(node, "handlers", []):
                self.body(handler.body, None)
        elif isinstance(node, ast.Match):  # one case runs, or none
            self.calls(node.subject, times)
            for case in node.cases:
                self.calls(case, None)
        elif any(isinstance(body, list) and body and isinstance(body[0], ast.stmt)
                 for _, body in ast.iter_fields(node)):
            # a while, a def, a class, an async loop: how often its body runs, the text does not say
            self.calls(node, None)
        else:
            self.calls(node, times)

    def calls(self, node: ast.AST, times: int | None) -> None:
        """Count every ``name.step(...)`` in ``node``, which runs ``times`` times (None: unknown)."""
        if isinstance(node, ast.Call):
            func = node.func
            if isinstance(func, ast.Attribute) and func.attr == "step" and isinstance(func.value, ast.Name):
                name = func.value.id
                if times is None:
                    self.unknown.add(name)
                else:
                    self.counts[name] = self.counts.get(name, 0) + times
            consumes = isinstance(func, ast.Name) and func.id in _CONSUMING
            self.calls(func, times)
            for arg in node.args:
                if consumes and isinstance(arg, ast.GeneratorExp):
                    self.comprehension(arg, times)
                else:
                    self.calls(arg, times)
            for keyword in node.keywords:
                self.calls(keyword.value, times)
        elif isinstance(node, (ast.ListComp, ast.SetComp, ast.DictComp)):
            self.comprehension(node, times)
        elif isinstance(node, (ast.GeneratorExp, ast.Lambda)):
            # runs later, as far as it is consumed: no count (a consumed one is read above)
            for child in ast.iter_child_nodes(node):
                self.calls(child, None)
        elif isinstance(node, ast.IfExp):
            self.calls(node.test, times)
            self.calls(node.body, None)
            self.calls(node.orelse, None)
        elif isinstance(node, ast.BoolOp):  # ``a and b``: b may not run
            self.calls(node.values[0], times)
            for value in node.values[1:]:
                self.calls(value, None)
        else:
            for child in ast.iter_child_nodes(node):
                self.calls(child, times)

    def comprehension(self, node: ast.expr, times: int | None) -> None:
        """A comprehension runs its element once per item of its iterables (their product)."""
        generators: list[ast.comprehension] = node.generators  # type: ignore[attr-defined]
        inner = times
        for generator in generators:
            self.calls(generator.iter, inner)  # the first runs once, the next once per item
            n = None if generator.ifs or generator.is_async else self.length(generator.iter)
            inner = None if n is None or inner is None else inner * n
            for condition in generator.ifs:
                self.calls(condition, inner)
        elements = [node.key, node.value] if isinstance(node, ast.DictComp) else [node.elt]  # type: ignore[attr-defined]
        for element in elements:
            self.calls(element, inner)

    # -- values ---------------------------------------------------------------------------
    def length(self, node: ast.expr) -> int | None:
        """How many items ``for ... in node`` yields, or None."""
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
            name, args = node.func.id, node.args
            if name in _RANGES and 1 <= len(args) <= 3:
                bounds = [self.integer(a) for a in args]
                if any(b is None for b in bounds):
                    return None
                try:
                    return len(range(*bounds))  # type: ignore[arg-type]
                except ValueError:  # a step of 0
                    return None
            if name in _SAME_LENGTH and len(args) == 1:
                return self.length(args[0])
            return None
        sized = self.sized(node)
        return None if sized is None else sized

    def sized(self, node: ast.expr) -> int | None:
        """The length of a list, tuple, range or tensor named by ``node`` (or a constant slice)."""
        if isinstance(node, ast.Name):
            if node.id in self.rebound or node.id in self.local:
                return None
            return _length_of(self.namespace.get(node.id))
        if isinstance(node, ast.Subscript) and isinstance(node.slice, ast.Slice):
            whole = self.sized(node.value)
            parts = [None if p is None else self.integer(p)
                     for p in (node.slice.lower, node.slice.upper, node.slice.step)]
            given = [p for p in (node.slice.lower, node.slice.upper, node.slice.step) if p is not None]
            if whole is None or len([p for p in parts if p is not None]) != len(given):
                return None
            try:
                return len(range(whole)[slice(*parts)])
            except ValueError:
                return None
        if isinstance(node, (ast.List, ast.Tuple)):
            return len(node.elts)
        return None

    def integer(self, node: ast.expr) -> int | None:
        """An int the text gives without running anything, or None."""
        if isinstance(node, ast.Constant):
            return node.value if type(node.value) is int else None
        if isinstance(node, ast.Name):
            if node.id in self.local:
                return self.local[node.id]
            if node.id in self.rebound:
                return None
            return _integer_of(self.namespace.get(node.id))
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            # ``args.num_epochs``: Pyro's examples keep their settings in an argparse Namespace,
            # whose attributes are plain values (no property of the user's runs when read)
            if node.value.id in self.rebound or node.value.id in self.local:
                return None
            holder = self.namespace.get(node.value.id)
            if type(holder) not in (argparse.Namespace, types.SimpleNamespace):
                return None
            return _integer_of(vars(holder).get(node.attr))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            value = self.integer(node.operand)
            return None if value is None else -value
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub, ast.Mult, ast.FloorDiv)):
            left, right = self.integer(node.left), self.integer(node.right)
            if left is None or right is None or (isinstance(node.op, ast.FloorDiv) and right == 0):
                return None
            ops = {ast.Add: int.__add__, ast.Sub: int.__sub__, ast.Mult: int.__mul__,
                   ast.FloorDiv: int.__floordiv__}
            return ops[type(node.op)](left, right)
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "len" \
                and len(node.args) == 1 and not node.keywords:
            return self.sized(node.args[0])
        return None


def _integer_of(value: Any) -> int | None:
    """A Python or NumPy int as an int (a bool is no count; nothing of the user's runs)."""
    if type(value) is int:
        return value
    if type(value).__module__ == "numpy" and isinstance(value, numbers.Integral):
        return int(value)
    return None


def _length_of(value: Any) -> int | None:
    """``len(value)`` for the sequences whose length costs nothing to ask (no user code runs)."""
    if isinstance(value, (list, tuple, range, dict, str)):
        return len(value)
    shape = getattr(value, "shape", None)
    if type(value).__module__.startswith("torch") and shape is not None and len(shape) > 0:
        return int(shape[0])
    return None


def _breaks(loop: ast.For) -> bool:
    """True when the loop may end early (a ``break`` or ``return`` of its own)."""
    stack: list[ast.AST] = list(loop.body)
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Break, ast.Return)):
            return True
        if isinstance(node, (ast.For, ast.While, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                             ast.Lambda)):
            if isinstance(node, (ast.For, ast.While)):
                stack.extend(n for n in ast.walk(node) if isinstance(n, ast.Return))
            continue  # a break there ends that inner loop only
        stack.extend(ast.iter_child_nodes(node))
    return False


def _run_once_assignments(statements: list[ast.stmt]) -> set[ast.Assign]:
    """The ``name = value`` statements of the cell's own body (and of the with and try blocks
    there), which run once and in order: the ones whose ints the reader follows."""
    found: set[ast.Assign] = set()
    for node in statements:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            found.add(node)
        elif isinstance(node, (ast.With, ast.Try)):
            for field in ("body", "orelse", "finalbody"):
                found |= _run_once_assignments(getattr(node, field, []))
    return found


def _rebound(tree: ast.Module, once: set[ast.Assign]) -> set[str]:
    """Names the cell binds anywhere but in a run-once ``name = value``: a loop's or a
    comprehension's target, an assignment inside a loop or a branch, ``+=``, ``:=``, an import,
    a def. Their value at any point is not one the text gives."""
    trusted = {id(node.targets[0]) for node in once}
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and not isinstance(node.ctx, ast.Load) and id(node) not in trusted:
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.alias):
            names.add((node.asname or node.name).split(".")[0])
        elif isinstance(node, ast.ExceptHandler) and node.name:
            names.add(node.name)
    return names
