"""The IPython face of pyro_jitmagic: parse the magic line, run the core, display.

Nothing here knows about Pyro; :mod:`pyro_jitmagic._run` does the work and
:mod:`pyro_jitmagic.report` holds the result.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display


@magics_class
class PyroJitMagics(Magics):
    """``%%pyrojit``: run a cell's Pyro inference compiled by the JIT."""

    @magic_arguments()
    @argument("-o", "--output", metavar="NAME",
              help="store the report (a pyro_jitmagic.JitReport) in the variable NAME")
    @argument("-q", "--quiet", action="store_true", help="do not display the report")
    @argument("--no-warmup", action="store_true",
              help="skip the eager warm-up (AutoGuide prototype, max_plate_nesting) before compiling")
    @argument("--warnings", choices=("capture", "show", "error"), default="capture",
              help="JIT warnings: capture them (default), also print them, or stop with an "
                   "error on a risky one before its compiled step is used")
    @no_var_expand
    @cell_magic
    def pyrojit(self, line: str, cell: str) -> None:
        """Run the cell with its Pyro inference compiled by the JIT.

        Every ``SVI.step`` whose loss is ``Trace_ELBO``, ``TraceGraph_ELBO``,
        ``TraceEnum_ELBO`` or ``TraceMeanField_ELBO`` runs as its ``Jit*``
        counterpart, and every ``MCMC.run`` with an ``HMC``/``NUTS`` kernel runs
        with ``jit_compile=True``, wherever those objects were built. Before the
        first compiled step, AutoGuides build their prototype and
        ``max_plate_nesting`` is found eagerly. JIT warnings are captured; risky
        ones (a tensor turned into a Python value while tracing) are named with
        the line that caused them. After the cell, objects behave as written
        again, and their compiled traces are kept for the next ``%%pyrojit`` cell.

        A report follows the cell: what was switched, warm-up, compilations,
        steps and their median time, warnings.

        Examples
        --------
        ::

            %%pyrojit
            for step in range(1000):
                svi.step(data)

            %%pyrojit -o report --warnings error
            mcmc.run(data)
        """
        args = parse_argstring(self.pyrojit, line)
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o needs a variable name, not {args.output!r}: e.g. %%pyrojit -o report")
        if not cell.strip():
            raise UsageError("%%pyrojit: the cell is empty; put the SVI or MCMC code below the "
                             "%%pyrojit line")
        shell = self.shell
        assert shell is not None
        if not _parses(shell, cell):
            # Let IPython report the SyntaxError with the user's line; nothing is patched.
            result = shell.run_cell(cell, store_history=False)
            _reraise_quietly(shell, result.error_before_exec or result.error_in_exec)

        from ._run import JitRun

        run = JitRun(warmup=not args.no_warmup, warnings=args.warnings,
                     names=shell.user_ns, name_location=self._name_location)
        with run:
            result = shell.run_cell(cell, store_history=False)
        error = result.error_before_exec or result.error_in_exec
        report = run.snapshot(error)
        if args.output:
            shell.user_ns[args.output] = report
        if not args.quiet:
            display(report)
        if error is not None:
            _reraise_quietly(shell, error)

    def _name_location(self, filename: str, lineno: int) -> str:
        from ._warnings import default_location_name

        compiler = getattr(self.shell, "compile", None)
        format_code_name = getattr(compiler, "format_code_name", None)
        named = format_code_name(filename) if format_code_name else None
        if named:
            return f"{named[0].lower()} {named[1]}, line {lineno}"
        return default_location_name(filename, lineno)


def _parses(shell: Any, cell: str) -> bool:
    try:
        ast.parse(shell.transform_cell(cell))
    except (SyntaxError, ValueError):
        return False
    return True


def _reraise_quietly(shell: Any, error: BaseException | None) -> None:
    """Fail the cell with ``error`` without printing its traceback a second time.

    The inner ``run_cell`` already showed the traceback (pointing at the user's
    line). Raising again makes Jupyter mark the cell failed and stop the cells
    queued after it, as any failing cell does; a one-shot custom handler keeps
    IPython from printing it twice (pyinstrument's magic does the same).
    """
    if error is None:
        return
    old_handler, old_exceptions = shell.CustomTB, shell.custom_exceptions

    def swallow(self: Any, etype: Any, value: Any, tb: Any, tb_offset: Any = None) -> list[str]:
        shell.CustomTB, shell.custom_exceptions = old_handler, old_exceptions
        if value is not error:
            shell.showtraceback((etype, value, tb), tb_offset=tb_offset)
        return []

    shell.set_custom_exc((type(error),), swallow)
    raise error


def unregister(shell: Any) -> None:
    """Remove our magics and heal anything a cut-off run left patched."""
    magics = shell.magics_manager.magics
    magics["cell"].pop("pyrojit", None)
    shell.magics_manager.registry.pop(PyroJitMagics.__name__, None)
    if "pyro" in sys.modules:
        from ._run import heal_leftovers

        heal_leftovers()
