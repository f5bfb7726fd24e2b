"""How many steps a cell will run, read from its loops before it runs.

The climb decides whether a tier pays from the steps expected to follow. A cell usually says::

    for step in range(num_steps):
        svi.step(data)

:func:`step_counts` reads the ``for`` loops around each ``X.step(...)`` call without running
anything; a count it cannot read safely (a generator, a ``while``, a ``break``) is left out. The
figure is a hint, never a promise: a cell that stops early only makes its decisions late.
"""

from __future__ import annotations

import ast
import numbers
from collections.abc import Mapping
from typing import Any

#: iterables over something of the same length (the first argument)
_SAME_LENGTH = {"enumerate", "tqdm", "reversed"}
#: ``range``'s spellings
_RANGES = {"range", "trange"}


def step_counts(source: str, namespace: Mapping[str, Any] | None = None) -> dict[str, int]:
    """``{name: calls}``: how many times each ``name.step(...)`` in ``source`` will run, for the
    names whose loops can be counted from the text (and the ints in ``namespace``)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:  # IPython syntax the magic did not transform: no hint
        return {}
    reader = _LoopReader(dict(namespace or {}))
    reader.body(tree.body, 1)
    return {name: n for name, n in reader.counts.items() if name not in reader.unknown and n > 0}


class _LoopReader:
    def __init__(self, namespace: dict[str, Any]) -> None:
        self.namespace = namespace
        self.local: dict[str, int] = {}  # ints assigned earlier in the cell
        self.counts: dict[str, int] = {}
        self.unknown: set[str] = set()

    def body(self, statements: list[ast.stmt], times: int | None) -> None:
        for statement in statements:
            self.statement(statement, times)

    def statement(self, node: ast.stmt, times: int | None) -> None:
        if isinstance(node, ast.For):
            n = self.length(node.iter)
            inner = None if n is None or times is None or _breaks(node) else times * n
            self.body(node.body, inner)
            self.body(node.orelse, times)
        elif isinstance(node, ast.Assign) and times == 1 and len(node.targets) == 1 \
                and isinstance(node.targets[0], ast.Name):
            value = self.integer(node.value)
            if value is None:
                self.local.pop(node.targets[0].id, None)
            else:
                self.local[node.targets[0].id] = value
            self.calls(node, times)
        elif isinstance(node, (ast.While, ast.If, ast.Try, ast.With)):
            # a while runs an unknown count and a branch may not run at all; the body of a with
            # or a try runs once (a try around a training loop catches Ctrl-C: a hint still)
            once = times if isinstance(node, (ast.With, ast.Try)) else None
            for field in ("body", "orelse", "finalbody"):
                self.body(getattr(node, field, []), once)
            for handler in getattr(node, "handlers", []):
                self.body(handler.body, None)
            if isinstance(node, (ast.While, ast.If)):
                self.calls(node.test, times)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            self.body(node.body, None)  # runs when called, which the text does not say
        else:
            self.calls(node, times)

    def calls(self, node: ast.AST, times: int | None) -> None:
        """Count every ``name.step(...)`` in ``node`` (an expression statement, an assignment)."""
        for sub in ast.walk(node):
            if isinstance(sub, ast.Call) and isinstance(sub.func, ast.Attribute) \
                    and sub.func.attr == "step" and isinstance(sub.func.value, ast.Name):
                name = sub.func.value.id
                if times is None:
                    self.unknown.add(name)
                else:
                    self.counts[name] = self.counts.get(name, 0) + times

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
            return _integer_of(self.namespace.get(node.id))
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
