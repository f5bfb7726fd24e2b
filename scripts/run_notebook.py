"""Run a notebook headless in a real kernel and print what its ``%%pyrojit`` cells reported.

Usage::

    python scripts/run_notebook.py [NOTEBOOK]      # default: notebooks/pyro_jit_tutorial.ipynb

The executed copy is written beside it as ``NAME.executed.ipynb``. The kernel
runs on this interpreter, with this process's environment: set ``CI`` for the
notebook's small step counts. Exits 1 when a cell failed.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import nbformat
from jupyter_client import AsyncKernelManager
from jupyter_client.kernelspec import KernelSpecManager
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError
from traitlets import default

ROOT = Path(__file__).resolve().parent.parent
TUTORIAL = ROOT / "notebooks" / "pyro_jit_tutorial.ipynb"


class _ThisEnvironmentKernelManager(AsyncKernelManager):
    """Start kernels only from this environment's kernelspecs.

    Jupyter looks in the user's and the system's kernel folders before
    ``sys.prefix``, so a ``python3`` spec installed elsewhere would run the
    notebook on an interpreter without this project's packages. Without a spec
    in ``sys.prefix``, ipykernel's built-in one runs ``sys.executable``.
    """

    @default("transport_encryption")
    def _transport_encryption_default(self) -> str:
        # ipykernel warns on every start when the kernel's sockets are not
        # encrypted; its spec declares CurveZMQ support, so encrypt.
        return "auto"

    @default("kernel_spec_manager")
    def _kernel_spec_manager_default(self) -> KernelSpecManager:
        return KernelSpecManager(kernel_dirs=[os.path.join(sys.prefix, "share", "jupyter", "kernels")])


def execute_notebook(path: Path, env: Mapping[str, str] | None = None,
                     timeout: int | None = None) -> nbformat.NotebookNode:
    """Run the notebook at ``path`` in a fresh kernel; return it with its outputs.

    Like "Run All" in Jupyter, execution stops at the first cell that raises;
    that cell holds the error output (see :func:`errors`). ``env`` is the
    kernel's whole environment (default: this process's). ``timeout`` limits
    each cell, in seconds (default: none).
    """
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        kernel_manager_class=_ThisEnvironmentKernelManager,
        resources={"metadata": {"path": str(Path(path).parent)}},
        # keep the --compare panels' widget models, so the executed notebook shows them
        store_widget_state=True,
    )
    # The failing cell keeps its traceback in its outputs, where errors() finds it.
    with contextlib.suppress(CellExecutionError):
        client.execute(env=dict(os.environ if env is None else env))
    return nb


def pyrojit_cells(nb: nbformat.NotebookNode) -> Iterator[nbformat.NotebookNode]:
    """The code cells that run under ``%%pyrojit``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and cell.source.lstrip().startswith("%%pyrojit"):
            yield cell


def report_texts(cell: nbformat.NotebookNode) -> list[str]:
    """The plain-text form of each report the cell displayed."""
    return [out.data["text/plain"] for out in cell.get("outputs", [])
            if out.output_type in ("display_data", "execute_result") and "text/plain" in out.data]


def errors(nb: nbformat.NotebookNode) -> list[str]:
    """Each failed cell's traceback, as the notebook shows it."""
    found = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            if out.output_type == "error":
                traceback = "\n".join(out.get("traceback", [])) or f"{out.ename}: {out.evalue}"
                found.append(f"In [{cell.get('execution_count')}]:\n{cell.source}\n{traceback}")
    return found


def _heading(cell: nbformat.NotebookNode) -> str:
    magic_line = cell.source.lstrip().splitlines()[0]
    return f"=== In [{cell.get('execution_count') or ' '}]: {magic_line} ({cell.get('id', '')})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebook", nargs="?", type=Path, default=TUTORIAL)
    parser.add_argument("--timeout", type=int, default=None, help="seconds each cell may run")
    args = parser.parse_args(argv)

    mode = "small step counts (CI is set)" if "CI" in os.environ else "full step counts"
    print(f"Running {args.notebook} with {mode} on {sys.executable}", flush=True)
    nb = execute_notebook(args.notebook, timeout=args.timeout)
    executed = args.notebook.with_suffix(".executed.ipynb")
    nbformat.write(nb, executed)

    for cell in pyrojit_cells(nb):
        print()
        print(_heading(cell))
        for text in report_texts(cell):
            print(text)
    failures = errors(nb)
    for failure in failures:
        print(f"\nFAILED {failure}", file=sys.stderr)
    print(f"\nExecuted notebook: {executed}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
