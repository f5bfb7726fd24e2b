"""The IPython face of pyro_jitmagic: parse the magic line, run the core, display.

Nothing here knows about Pyro: :mod:`pyro_jitmagic.jitrun` does the work, the result is one of
:mod:`pyro_jitmagic.records`, and :mod:`pyro_jitmagic.display` shows it. The magics' arguments
are built from :class:`~pyro_jitmagic.options.RunOptions`, and ``%pyrojit_cache`` calls the same
twins a script does.
"""

from __future__ import annotations

import ast
import sys
from typing import Any

from IPython.core.error import UsageError
from IPython.core.magic import Magics, cell_magic, line_magic, magics_class, no_var_expand
from IPython.core.magic_arguments import argument, magic_arguments, parse_argstring
from IPython.display import display

from . import options as run_options
from .options import RunOptions

# Cache inspectors displayed in this session that refresh after each %%pyrojit
# cell: the most recent few (older outputs have usually scrolled away).
_LIVE_CACHE_VIEWS = 4


def _option(name: str) -> Any:
    """The magic's argument for the run option ``name``, as :mod:`.options` defines it."""
    flags, settings = run_options.argument(name)
    return argument(*flags, **settings)


@magics_class
class PyroJitMagics(Magics):
    """``%%pyrojit``: run a cell's Pyro inference compiled; ``%pyrojit_cache``: what is compiled."""

    def __init__(self, shell: Any) -> None:
        from .run.process import PROCESS

        super().__init__(shell)
        # where this shell's compiled companions and cache figures live: the process's
        # default session, which the plain-Python twins share
        self.session = PROCESS.session
        self._cache_views: list[Any] = []

    # named "%pyrojit" so that the usage line reads "%%pyrojit", as the cell magic is typed
    @magic_arguments(name="%pyrojit")
    @argument("--compare", action="store_true",
              help="run the cell eager, then compiled from the same start, and show a panel "
                   "comparing their timing and results")
    @_option("seed")
    @argument("-o", "--output", metavar="NAME",
              help="store the report (a pyro_jitmagic.JitReport, or with --compare a "
                   "pyro_jitmagic.Comparison) in the variable NAME")
    @argument("-q", "--quiet", action="store_true", help="do not display the report")
    @_option("warmup")
    @_option("max_entries")
    @_option("auto")
    @_option("executor")
    @_option("backend")
    @_option("warnings")
    @no_var_expand
    @cell_magic
    def pyrojit(self, line: str, cell: str) -> None:
        """Run the cell with its Pyro inference compiled, each part only as far as pays.

        Each call signature of the cell's SVI steps (Pyro's cache key) starts
        eager and timed, and climbs a tier when the steps expected to follow
        (read from the cell's loops, from earlier runs, or else as many again
        as so far) would repay it: Pyro's JIT, then the whole step (loss,
        gradients and optimizer update as one graph), then that graph's C++
        kernels, built by inductor in a worker process while the steps go on
        and swapped in between two steps with params and optimizer state
        carried over. HMC/NUTS do the same for the potential, knowing how many
        samples remain. The report shows each signature's path and what it
        saved against each fixed backend. ``--backend pyro``, ``step`` or
        ``inductor`` compiles with that backend from the first step instead;
        with ``--auto`` it is the highest tier of the climb.

        On Pyro's JIT every ``SVI.step`` whose loss is ``Trace_ELBO``,
        ``TraceGraph_ELBO``, ``TraceEnum_ELBO`` or ``TraceMeanField_ELBO`` runs
        as its ``Jit*`` counterpart, wherever the SVI was built. So does every
        ``differentiable_loss``, ``loss`` and ``loss_and_grads`` of those ELBOs
        that the cell calls itself (a custom objective trained with a torch
        optimizer), also through a method bound in an earlier cell. Every
        ``MCMC.run`` with an ``HMC``/``NUTS`` kernel runs with
        ``jit_compile=True``. Before the first compiled step, AutoGuides build
        their prototype and ``max_plate_nesting`` is found eagerly. JIT
        warnings are captured; risky ones (a tensor turned into a Python value
        while tracing, by the cell's code or by a torch or Pyro function not
        reviewed as safe, or used as a Python integer: ``range(n.max())``) are
        named with the line that caused them; torch's and Pyro's own shape
        checks and validation count as benign. After the cell, objects behave
        as written again, and their compiled traces are kept for the next
        ``%%pyrojit`` cell.

        A report follows the cell: what was switched, warm-up, compilations,
        steps (and direct loss calls) and their median time, warnings. While the cell runs, a progress
        line shows steps done and "compiling..." (cells over half a second).

        Traces start in TorchScript's no-opt executor (the cheapest to compile);
        a call signature called often enough is tried under the optimizing
        executor, and goes back (compiled again) if its steps got slower
        (``--executor adaptive``, the default). The report's executor row
        appears when a signature moved, or when ``--executor`` names another.

        With ``--backend step`` each SVI step is compiled whole (loss, gradients
        and the optimizer's update in one graph, run by TorchScript), and each
        HMC/NUTS run takes its potential and gradient from one graph; with
        ``--backend inductor`` that graph is compiled into C++ kernels (a first
        compile takes seconds to minutes; inductor's disk cache makes repeats
        cheap). Params and optimizer state stay in the tensors you hold, and
        ``svi.step`` returns eager's float loss. What the whole step cannot
        capture runs on Pyro's JIT, and the report says why.

        With ``--compare`` the cell runs twice: eager exactly as written, then
        compiled, each from the same param store, optimizer and random state.
        Afterwards the namespace and param store hold the compiled run's
        results. A panel shows the verdict, timing, agreement of the results,
        warnings and what was switched.

        Examples
        --------
        ::

            %%pyrojit
            for step in range(1000):
                svi.step(data)

            %%pyrojit -o report --warnings error
            mcmc.run(data)

            %%pyrojit --compare --seed 0
            for step in range(1000):
                svi.step(data)

            %%pyrojit --backend pyro
            for step in range(1000):
                svi.step(data)

            %%pyrojit --auto --backend step
            for epoch in range(3):
                for sequence in sequences:
                    svi.step(sequence, length=len(sequence))
        """
        args = parse_argstring(self.pyrojit, line)
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o needs a variable name, not {args.output!r}: e.g. %%pyrojit -o report")
        if not cell.strip():
            raise UsageError("%%pyrojit: the cell is empty; put the SVI or MCMC code below the "
                             "%%pyrojit line")
        try:
            options = run_options.from_arguments(args)
        except ValueError as exc:  # a value argparse let through: one line, before anything runs
            raise UsageError(str(exc)) from None
        shell = self.shell
        assert shell is not None
        python = self._python(cell)  # (transformed once: the parse and the loop reader read it)
        if not _parses(python):
            # Let IPython report the SyntaxError with the user's line; nothing is patched.
            result = shell.run_cell(cell, store_history=False)
            _reraise_quietly(shell, result.error_before_exec or result.error_in_exec)

        if args.compare:
            result, error = self._compare(cell, options, args.quiet)
        else:
            result, error = self._compile(cell, options, args.quiet, python)
        if args.output:
            shell.user_ns[args.output] = result
        self._refresh_cache_views()
        if error is not None:
            _reraise_quietly(shell, error)

    @magic_arguments()
    @argument("--clear", nargs="?", const="", metavar="OWNER",
              help="drop compiled traces: all of them, or those of the compiled functions whose "
                   "owner starts with OWNER (e.g. --clear svi); the next steps compile again")
    @argument("-o", "--output", metavar="NAME",
              help="store the inspector's data (a pyro_jitmagic.CacheSnapshot) in NAME")
    @argument("-q", "--quiet", action="store_true", help="do not display the inspector")
    @line_magic
    def pyrojit_cache(self, line: str) -> None:
        """Show every compiled function in the session and the traces it holds.

        A compiled function is a ``Jit*`` ELBO (switched by ``%%pyrojit`` or
        built by hand), an HMC/NUTS kernel's compiled potential, or the whole
        steps of an SVI or kernel. Each shows its owner, the model and guide it
        serves, and one row per cache entry: the call signature it was compiled
        for, compile time, hits, last hit, input shapes, and the size of its
        graph (its code in an expandable section). Hits and compile times are
        counted in ``%%pyrojit`` cells; for entries compiled elsewhere they are
        unknown. The table refreshes after each ``%%pyrojit`` cell, and its
        buttons clear one function's traces or all of them.

        Examples
        --------
        ::

            %pyrojit_cache
            %pyrojit_cache --clear svi
            %pyrojit_cache -q -o cache
        """
        args = parse_argstring(self.pyrojit_cache, line)
        if args.output is not None and not args.output.isidentifier():
            raise UsageError(f"-o needs a variable name, not {args.output!r}: e.g. %pyrojit_cache -o cache")
        from .inspector import cache_snapshot, clear_cache

        assert self.shell is not None
        namespace = self.shell.user_ns
        if args.clear is not None:
            try:
                clear_cache(args.clear or None, namespace=namespace, session=self.session)
            except ValueError as exc:  # no such owner
                raise UsageError(str(exc)) from None
        snapshot = cache_snapshot(namespace, session=self.session)
        if args.output:
            namespace[args.output] = snapshot
        if args.quiet:
            return
        view = self._cache_view(live=True)
        display(view if view is not None else snapshot)

    def _cache_view(self, live: bool, objects: list[Any] | None = None) -> Any:
        """A cache panel, or None without ipywidgets (the snapshot shows as HTML/text).

        A live one shows every compiled function and refreshes after each
        ``%%pyrojit`` cell; the Cache tab of a ``--compare`` panel shows the
        caches of the ``objects`` that cell compiled with, as they were after it.
        """
        from .display.panel import _ipywidgets

        if _ipywidgets() is None:
            return None
        from .display.cache_panel import CachePanel
        from .inspector import Inspector

        assert self.shell is not None
        session = self.session
        view = CachePanel(lambda: Inspector(session), self.shell.user_ns, objects)
        if live:
            self._cache_views = [*self._cache_views[-(_LIVE_CACHE_VIEWS - 1):], view]
        return view

    def _refresh_cache_views(self) -> None:
        if not self._cache_views:
            return
        from .inspector import Inspector

        assert self.shell is not None
        inspector = Inspector(self.session)
        snapshot = inspector.snapshot(self.shell.user_ns)  # one walk of the objects for all views
        for view in self._cache_views:
            view.refresh(inspector, snapshot)

    def _execute(self, cell: str) -> BaseException | None:
        """Run the cell body in the shell; IPython shows its traceback."""
        assert self.shell is not None
        result = self.shell.run_cell(cell, store_history=False)
        return result.error_before_exec or result.error_in_exec

    def _progress(self, quiet: bool) -> Any:
        from .display.progress import LiveProgress

        return None if quiet else LiveProgress(self.shell)

    def _compile(self, cell: str, options: RunOptions, quiet: bool,
                 python: str) -> tuple[Any, BaseException | None]:
        from .jitrun import JitRun

        assert self.shell is not None
        progress = self._progress(quiet)
        run = JitRun(options, names=self.shell.user_ns, name_location=self._name_location,
                     session=self.session, on_progress=progress, source=python)
        with run:
            error = self._execute(cell)
            run.failed(error)
        report = run.report
        assert report is not None
        if progress is not None:
            progress.finish(report._repr_mimebundle_())
        return report, error

    def _compare(self, cell: str, options: RunOptions, quiet: bool) -> tuple[Any, BaseException | None]:
        from .comparison.twice import run_twice
        from .display.panel import comparison_bundle

        assert self.shell is not None
        progress = self._progress(quiet)
        outcome = run_twice(lambda: self._execute(cell), self.shell.user_ns, options, session=self.session,
                            name_location=self._name_location, on_progress=progress)
        result = outcome.comparison or outcome.failed
        if progress is not None:
            bundle: dict[str, Any] | None = None
            if outcome.comparison is not None:
                cache = self._cache_view(live=False, objects=list(outcome.compiled_objects))
                bundle = comparison_bundle(outcome.comparison, cache=cache)
            elif outcome.failed is not None:
                bundle = outcome.failed._repr_mimebundle_()
            progress.finish(bundle)
        return result, outcome.error

    def _python(self, cell: str) -> str:
        """The cell as the Python IPython runs (its ``!`` and ``%`` lines transformed)."""
        assert self.shell is not None
        try:
            return str(self.shell.transform_cell(cell))
        except Exception:  # a cell IPython cannot transform fails when it runs, with its own message
            return cell

    def _name_location(self, filename: str, lineno: int) -> str:
        from .run.jit_warnings import default_location_name

        compiler = getattr(self.shell, "compile", None)
        format_code_name = getattr(compiler, "format_code_name", None)
        named = format_code_name(filename) if format_code_name else None
        if named:
            return f"{named[0].lower()} {named[1]}, line {lineno}"
        return default_location_name(filename, lineno)


def _parses(python: str) -> bool:
    try:
        ast.parse(python)
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
    magics["line"].pop("pyrojit_cache", None)
    shell.magics_manager.registry.pop(PyroJitMagics.__name__, None)
    if "pyro" in sys.modules:
        from .jitrun import heal_leftovers

        heal_leftovers()
