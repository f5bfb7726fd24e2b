"""The package's shape: layers that import one way, no import circle (``TYPE_CHECKING`` imports
included), small functions and classes, and Pyro's and torch's private names in ``compat/`` alone.

Read from the source with ``ast``: what is checked is what a reader sees.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pyro_jitmagic"
ROOT = "pyro_jitmagic"

#: What each layer may import of the package (besides itself). The arrows point one way, from the
#: magic down: the magic, then the --compare run and the cache inspector, then the run of one cell
#: (jitrun.py) with its compilers, then the run's machinery and the policy, then the whole-step
#: engine and the guards, then compat and patch; records and options import nothing of ours, and
#: display sits beside everything, over records.
BELOW = {
    "options": set(),
    "records": set(),
    "patch": set(),
    "compat": {"patch"},
    "guards": {"compat"},
    "wholestep": {"compat", "patch", "guards"},
    "policy": {"records"},
    "run": {"policy", "records", "options", "compat", "patch", "guards"},
    "compilers": {"run", "policy", "records", "options", "compat", "patch", "guards", "wholestep"},
    "jitrun": {"compilers", "run", "policy", "records", "options", "compat", "patch"},
    "comparison": {"jitrun", "run", "policy", "records", "options", "compat", "patch"},
    "inspector": {"compilers", "run", "records", "options"},
    "display": {"records", "options"},
    "magics": {"comparison", "inspector", "jitrun", "run", "display", "records", "options"},
}
MAY_IMPORT = {**BELOW, "": set(BELOW)}  # pyro_jitmagic/__init__.py serves the public names

#: No function (its docstring aside: the magic's is its %%pyrojit? help) over this many lines,
#: no class over this many.
MAX_FUNCTION_LINES = 70
MAX_CLASS_LINES = 300


def _modules() -> dict[str, Path]:
    """Every module of the package by dotted name (a package by its own name)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = [ROOT, *path.relative_to(PACKAGE).with_suffix("").parts]
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def _is_package(module: str) -> bool:
    return MODULES[module].name == "__init__.py"


def _type_checking(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)


def _imports(module: str, *, typing: bool) -> set[str]:
    """The package's modules ``module`` imports by name (at any depth, functions included;
    those under ``if TYPE_CHECKING:`` only when ``typing``)."""
    tree = ast.parse(MODULES[module].read_text())
    skipped = set()
    if not typing:
        for node in ast.walk(tree):
            if _type_checking(node):
                skipped |= {id(n) for n in ast.walk(node)}
    package = module if _is_package(module) else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == ROOT}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                source = ".".join(base + ([node.module] if node.module else []))
            else:
                source = node.module or ""
            if source.split(".")[0] != ROOT:
                continue
            for alias in node.names:
                name = f"{source}.{alias.name}"
                found.add(name if name in MODULES else source)
    return {_known(name) for name in found}


def _known(name: str) -> str:
    """The module ``name`` is, or is in."""
    while name not in MODULES:
        name = name.rsplit(".", 1)[0]
    return name


def test_the_package_has_the_layers_it_says():
    layers = {_layer(m) for m in MODULES}
    assert layers <= set(MAY_IMPORT), f"a new top-level module or folder: add it to MAY_IMPORT ({layers})"
    assert {"options", "records", "run", "compilers", "policy", "comparison", "display", "magics"} <= layers


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_upward(module):
    layer = _layer(module)
    upward = sorted(m for m in _imports(module, typing=True)
                    if _layer(m) != layer and _layer(m) not in MAY_IMPORT[layer])
    assert not upward, f"{module} ({layer or 'the package'}) imports {upward}"


def test_no_import_circle_inside_the_package():
    # (TYPE_CHECKING imports count: a circle drawn only for the type checker is a circle still)
    graph = {m: _imports(m, typing=True) - {m} for m in MODULES}
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in sorted(graph[module]):
            if state.get(target) == 1:
                return [*path[path.index(target):], target]
            if target not in state:
                circle = visit(target)
                if circle:
                    return circle
        path.pop()
        state[module] = 2
        return None

    for module in sorted(MODULES):
        if module not in state:
            circle = visit(module)
            assert circle is None, "import circle: " + " -> ".join(circle)


def _too_long() -> list[str]:
    found = []
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                continue
            lines = (node.end_lineno or node.lineno) - node.lineno + 1
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                first = node.body[0]
                if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
                        and isinstance(first.value.value, str):
                    lines -= (first.end_lineno or first.lineno) - first.lineno + 1
                if lines > MAX_FUNCTION_LINES:
                    found.append(f"{module}.{node.name}: a function of {lines} lines")
            elif isinstance(node, ast.ClassDef) and lines > MAX_CLASS_LINES:
                found.append(f"{module}.{node.name}: a class of {lines} lines")
    return found


def test_no_function_over_70_lines_and_no_class_over_300():
    assert _too_long() == []


def _private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _reaches_private(node: ast.AST, watched: set[str]) -> str | None:
    """A private name of Pyro or torch that ``node`` reaches, in words; None when it reaches none."""
    if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] in ("pyro", "torch"):
        names = [node.module or "", *(a.name for a in node.names)]
        if any(_private(part) for name in names for part in name.split(".")):
            return f"from {node.module} import {', '.join(a.name for a in node.names)}"
    if isinstance(node, ast.Import):
        for alias in node.names:
            if alias.name.split(".")[0] in ("pyro", "torch") and any(map(_private, alias.name.split("."))):
                return f"import {alias.name}"
    if isinstance(node, ast.Attribute):
        chain, inner = [node.attr], node.value
        while isinstance(inner, ast.Attribute):
            chain.append(inner.attr)
            inner = inner.value
        if isinstance(inner, ast.Name) and inner.id in ("pyro", "torch") and any(map(_private, chain)):
            return ".".join([inner.id, *reversed(chain)])
        if node.attr in watched:
            return f"the attribute {node.attr}"
    if isinstance(node, ast.Constant) and node.value in watched:
        return f"the name {node.value!r}"
    return None


def test_private_pyro_and_torch_names_are_in_compat_alone():
    from pyro_jitmagic.compat import PRIVATE_NAMES  # (imports neither torch nor Pyro)

    watched = {part for _where, name, _use in PRIVATE_NAMES for part in name.split(".") if _private(part)}
    found = []
    for module, path in MODULES.items():
        if _layer(module) == "compat":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            reached = _reaches_private(node, watched)
            if reached:
                found.append(f"{module}, line {node.lineno}: {reached}")  # type: ignore[attr-defined]
    assert found == []


def test_every_public_name_is_served_from_the_top_and_documented():
    import pyro_jitmagic

    served = {name: getattr(pyro_jitmagic, name) for name in pyro_jitmagic.__all__}
    assert set(served) == set(pyro_jitmagic._PUBLIC) | {"load_ipython_extension", "unload_ipython_extension"}
    undocumented = [name for name, value in served.items() if not (value.__doc__ or "").strip()]
    assert undocumented == []
