"""The compile caches, as ``%pyrojit_cache`` shows them: immutable records.

Pyro keeps one trace per distinct call signature (the number of positional
arguments and the keyword values) in each compiled function, silently. A
:class:`CacheSnapshot` lists every live compiled function of the session and
each of its entries. What could not be measured (an entry compiled outside any
``%%pyrojit`` cell) is ``None``, shown as unknown, never as zero.
"""

from __future__ import annotations

from dataclasses import dataclass

from .shown import Shown, summary


@dataclass(frozen=True)
class CacheEntry:
    """One trace in a compiled function's cache.

    Attributes
    ----------
    key : str
        The call signature it was traced for (``"1 positional arg, length=24"``).
    compile_seconds : float or None
        Cost of the call that built it (None: built outside ``%%pyrojit``).
    hits : int or None
        Calls it served inside ``%%pyrojit`` cells, the one that built it included.
    last_hit : float or None
        When it last served a call (``time.time()``).
    input_shapes : tuple of str
        Shapes of the tensors it was traced with, params first.
    graph_nodes : int
        Size of the traced graph (TorchScript nodes).
    code : str
        The traced function as TorchScript code (for a whole step: the captured aten graph).
    backend : str
        What runs it: ``"pyro"`` (a trace of Pyro's JIT), ``"step"`` (a whole step or potential
        captured as one graph, run by TorchScript) or ``"inductor"`` (that graph compiled into
        C++ kernels).
    kernels : int or None
        C++ kernels inductor generated (None for the other backends).
    capture_seconds, codegen_seconds : float or None
        For a whole step: capturing its graph, and building the backend that runs it.
    disk_cache : {"cold", "warm"} or None
        With inductor: compiled afresh, or loaded from inductor's on-disk cache.
    guards : tuple of str
        What it assumed of the world outside its inputs, each as ``what == value`` (a global the
        model reads, Pyro's validation flag, an ELBO setting, an argument's layout): a call where
        one no longer holds compiles again, or runs eager.
    """

    key: str
    compile_seconds: float | None
    hits: int | None
    last_hit: float | None
    input_shapes: tuple[str, ...]
    graph_nodes: int
    code: str
    backend: str = "pyro"
    kernels: int | None = None
    capture_seconds: float | None = None
    codegen_seconds: float | None = None
    disk_cache: str | None = None
    guards: tuple[str, ...] = ()

    def __repr__(self) -> str:
        return summary(self, code=f"<{len(self.code.splitlines())} lines of code>")


@dataclass(frozen=True)
class CachedFunction:
    """A compiled function and its entries.

    Attributes
    ----------
    owner : str
        What holds it, named as in the user's namespace when it can be
        (``"svi (its Trace_ELBO, compiled by %%pyrojit)"``, ``"elbo"``,
        ``"nuts_kernel"``).
    kind : str
        ``"ELBO"`` or ``"potential"`` (HMC/NUTS) for Pyro's JIT; ``"whole step"`` or
        ``"potential and gradient"`` for the whole-step backends.
    serves : str
        The model and guide it computes (``"model=model, guide=AutoNormal"``).
    entries : tuple of CacheEntry
    """

    ident: int
    owner: str
    kind: str
    serves: str
    entries: tuple[CacheEntry, ...]

    @property
    def compile_seconds(self) -> float | None:
        known = [e.compile_seconds for e in self.entries if e.compile_seconds is not None]
        return sum(known) if known else None


@dataclass(frozen=True)
class CacheSnapshot(Shown):
    """Every live compiled function in the session: what ``%pyrojit_cache -o`` returns."""

    functions: tuple[CachedFunction, ...]

    @property
    def entry_count(self) -> int:
        return sum(len(f.entries) for f in self.functions)

    @property
    def compile_seconds(self) -> float:
        """Compile time of the entries whose cost is known."""
        return sum(e.compile_seconds for f in self.functions for e in f.entries
                   if e.compile_seconds is not None)

    @property
    def hits(self) -> int:
        """Calls served by the entries whose hits are known."""
        return sum(e.hits for f in self.functions for e in f.entries if e.hits is not None)
