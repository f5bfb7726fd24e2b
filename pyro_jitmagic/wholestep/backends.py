"""Turn a captured graph into something fast to call: TorchScript ("step") or inductor.

``step`` traces the captured aten graph, which has no Python left, with ``torch.jit.trace`` and
runs it on TorchScript's interpreter: cheap to build, no C++ toolchain. ``inductor`` compiles it
into C++ kernels with ``fallback_random=True``, so random draws go through ATen's generator as
eager's do. :class:`Codegen` says whether inductor's disk cache served it. While a large graph's
kernels load from that cache, the steps run the graph as captured (:func:`as_captured`).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from .. import patch
from ..compat import capture as compat
from .errors import CannotCompile

if TYPE_CHECKING:
    from .worker import Ahead

Backend = Literal["step", "inductor"]
BACKENDS: tuple[Backend, ...] = ("step", "inductor")


@dataclass
class Codegen:
    """What building a backend produced."""

    run: Callable[..., Any]
    backend: Backend
    seconds: float
    kernels: int | None = None
    cache: Literal["cold", "warm"] | None = None
    #: the worker process's compile, when one ran first (see :mod:`.worker`)
    ahead: Ahead | None = None
    #: this process's compile was served from inductor's disk cache
    served_from_disk: bool = False
    #: why the graph runs otherwise than the backend named (TorchScript could not trace an op)
    note: str | None = None
    #: the captured graph run as it is, while inductor's kernels load (see :func:`as_captured`)
    as_captured: bool = False


#: Graphs of at least this many nodes run as captured while inductor loads their kernels from its
#: disk cache, instead of on TorchScript: for a large graph (the HMM's) the steps lose less waiting
#: as captured than building TorchScript costs; for a small one (the simple SVI's) TorchScript is
#: cheaper (docs/benchmarks.md, The default climb).
AS_CAPTURED_NODES = 1000
#: Steps a graph may run as captured before its TorchScript build is paid after all (kernels the
#: disk cache was expected to hold but did not: a cold codegen takes minutes).
AS_CAPTURED_STEPS = 64


def no_cxx_reason() -> str | None:
    """Why inductor cannot compile here (no C++ compiler), or None when it can."""
    compiler, searched = compat.cxx_compiler()
    if compiler is None:
        return (f"inductor needs a C++ compiler and none was found (searched: {searched}; set CXX or "
                "install g++)")
    return None


def torchscript(graph: Any, example_inputs: list[Any]) -> Codegen:
    """Trace the captured graph with TorchScript; neither the inputs nor the random stream change.

    TorchScript's tracer cannot record every aten op: the gradients of a convolution or a
    BatchNorm take a ``bool[3]`` it has no type for. Such a graph runs as captured (its aten ops
    called one by one from Python: the same ops, so the same numbers), and :attr:`Codegen.note`
    says so."""
    import torch

    start = time.perf_counter()
    rng = torch.get_rng_state()
    scratch = [t.detach().clone() for t in example_inputs]  # the graph writes its inputs
    try:
        with torch.no_grad():
            # torch's own trace, not a running cell's wrapper of it: this is no trace of Pyro's JIT
            traced = patch.unwrap(torch.jit.trace)(graph, tuple(scratch), check_trace=False)
    except RuntimeError as exc:
        _runs_as_captured(graph, example_inputs)
        untraceable = _untraceable_op(graph)
        what = (f"{untraceable} (its bool[3] mask)" if untraceable
                else f"the graph ({_first_line(exc)})")
        return Codegen(run=graph, backend="step", seconds=time.perf_counter() - start,
                       note=f"TorchScript's tracer cannot record {what}: the graph runs as captured, its "
                            "aten ops called one by one")
    finally:
        torch.set_rng_state(rng)
    return Codegen(run=traced.forward, backend="step", seconds=time.perf_counter() - start)


def _runs_as_captured(graph: Any, example_inputs: list[Any]) -> None:
    """CannotCompile unless the captured graph runs (on copies of its inputs): an op that torch
    cannot replay from its recorded arguments (an LSTM's gradient on oneDNN, whose workspace was
    recorded undefined) fails here, not in the user's step."""
    import torch

    scratch = [t.detach().clone() for t in example_inputs]
    try:
        with torch.no_grad():
            graph(*scratch)
    except Exception as exc:
        raise CannotCompile(f"the captured graph does not run as captured ({type(exc).__name__}: "
                            f"{_first_line(exc)})") from exc


def _first_line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _untraceable_op(graph: Any) -> str | None:
    """The first op of ``graph`` that takes a fixed-size list of bools (``output_mask``), which
    TorchScript's tracer has no type for; None when there is none."""
    for node in graph.graph.nodes:
        schema = compat.aten_op(node.target) if node.op == "call_function" else None
        if schema is not None and any(a.N and "bool" in str(a.type) for a in schema.arguments):
            return schema.name.replace("aten::", "")
    return None


def as_captured(graph: Any) -> Codegen:
    """Run the captured graph as it is (its generated Python calling each aten op): nothing to
    build, about three times TorchScript's step time; the same ops, so the same numbers."""
    return Codegen(run=graph, backend="step", seconds=0.0, as_captured=True)


def fusable(graph: Any) -> Any:
    """A copy of the captured graph with its stacks of 0-d values made pointwise.

    The capture stacks its guards (``stack(guards).all()``) and its loss terms into one vector:
    one op each for TorchScript. Inductor lowers a stack into one aliased view per element, which
    its Python wrapper rebuilds on every call; chained ``&`` and ``where`` fuse into the kernel.
    """
    import copy

    import torch

    from .capture import prune

    aten = torch.ops.aten
    graph = copy.deepcopy(graph)
    nodes = graph.graph
    for node in list(nodes.nodes):
        if node.op != "call_function" or node.target is not aten.stack.default:
            continue
        values = node.args[0]
        metas: list[Any] = [getattr(v, "meta", {}).get("val") for v in values]
        if not values or not all(isinstance(m, torch.Tensor) and m.dim() == 0 for m in metas):
            continue
        users = list(node.users)
        with nodes.inserting_before(node):
            if all(m.dtype == torch.bool for m in metas) and len(users) == 1 \
                    and users[0].target is aten.all.default:
                chain = values[0]
                for value in values[1:]:
                    chain = nodes.call_function(aten.logical_and.default, (chain, value))
                users[0].replace_all_uses_with(chain)
                continue
            dtype = metas[0].dtype
            if any(m.dtype != dtype for m in metas):
                continue
            index = nodes.call_function(aten.arange.default, (len(values),), {"dtype": torch.int64})
            vector = nodes.call_function(aten.zeros.default, ([len(values)],), {"dtype": dtype})
            for i, value in enumerate(values):
                hit = nodes.call_function(aten.eq.Scalar, (index, i))
                vector = nodes.call_function(aten.where.self, (hit, value, vector))
            node.replace_all_uses_with(vector)
    prune(graph)
    return graph


def inductor(graph: Any, example_inputs: list[Any], in_worker: bool = False,
             busy: threading.Event | None = None) -> Codegen:
    """Compile the captured graph with inductor (random draws through ATen, as eager).

    ``in_worker``: a cold compile runs in a worker process first (see :mod:`.worker`), and this
    process then compiles from the disk cache it filled: for a background compile, whose Python
    would otherwise hold the GIL that the cell's steps need. A graph inductor compiled before is
    compiled here directly. ``busy`` is set while this process's Python works (not while it waits
    for the worker).
    """
    import torch

    from .memory import graph_digest, shared

    start = time.perf_counter()
    fused = fusable(graph)
    ahead = None
    memory = shared()
    if in_worker and not (memory is not None and memory.inductor_holds(graph_digest(graph, example_inputs))):
        from .worker import compile_ahead

        if busy is not None:
            busy.clear()
        with _ONE_WORKER:  # each takes a core: the steps keep the others
            ahead = compile_ahead(fused, list(example_inputs))
        if busy is not None:
            busy.set()
    hits, misses, bypasses = compat.fx_cache_counts()
    with torch.no_grad():
        compiled = compat.inductor_compile(fused, list(example_inputs))
    new_hits, new_misses, new_bypasses = compat.fx_cache_counts()
    # (a graph the disk cache refused compiles in full every time: never taken as cached)
    remember(graph, example_inputs, held=new_bypasses == bypasses)
    cache: Literal["cold", "warm"] | None = None
    if new_misses > misses:
        cache = "cold"
    elif new_hits > hits:
        cache = "warm"
    if ahead is not None and ahead.error is None:
        cache = ahead.cache  # the worker's compile is the one that found the disk cache cold or warm
    return Codegen(run=compiled, backend="inductor", seconds=time.perf_counter() - start,
                   kernels=compat.generated_kernels(compiled), cache=cache, ahead=ahead,
                   served_from_disk=new_hits > hits)


_ONE_WORKER = threading.Lock()


def remember(graph: Any, example_inputs: list[Any], held: bool = True) -> None:
    """Write down that inductor's disk cache holds this graph now (``--auto`` counts it as cheap),
    or, where the cache refused it, that it does not."""
    from .memory import graph_digest, shared

    memory = shared()
    if memory is not None:
        digest = graph_digest(graph, example_inputs)
        if held:
            memory.compiled(digest)
        else:
            memory.forget_graph(digest)


class Background:
    """Inductor's codegen on a thread of its own, while the caller goes on.

    Capture needs the model and the random stream, so it happens on the calling
    thread; codegen only reads the captured graph. A cold compile runs in a worker
    process, which this thread waits for without holding the GIL. The thread is a
    daemon, so an interrupted cell never waits for it.
    """

    def __init__(self, graph: Any, example_inputs: list[Any],
                 on_done: Callable[[Codegen], None] | None = None, delay: float = 0.0,
                 start: bool = True) -> None:
        self.result: Codegen | None = None
        self._delay = delay
        self._on_done = on_done
        self.error: BaseException | None = None
        self.done = threading.Event()
        #: set while its Python runs in this process (its import, loading kernels from the disk cache),
        #: sharing the interpreter with the steps: a sentinel check waits until it is not
        self.busy = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(graph, list(example_inputs)),
                                        name="pyrojit-inductor", daemon=True)
        if start:
            self._thread.start()

    def start(self) -> None:
        """Start the codegen (a step made with ``start=False`` starts it after its first call)."""
        if not self._thread.is_alive() and not self.done.is_set():
            self._thread.start()

    def _work(self, graph: Any, example_inputs: list[Any]) -> None:
        # (after a cell: the report is shown first, without this thread's Python beside it)
        time.sleep(self._delay)
        self.busy.set()
        try:
            self.result = inductor(graph, example_inputs, in_worker=True, busy=self.busy)
            if self._on_done is not None:
                self._on_done(self.result)
        except BaseException as exc:  # reported by the step that looks
            self.error = exc
        finally:
            self.busy.clear()
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)


class SwitchesToInductor:
    """A compiled graph (a step or a potential) that can have inductor build its kernels in the
    background while it runs on TorchScript, and switches to them at the first call after."""

    backend: Backend
    graph_nodes: int
    kernels: int | None
    cache: Literal["cold", "warm"] | None
    capture_seconds: float
    codegen_seconds: float
    fallback: str | None
    captured: Any
    _run: Callable[..., Any]
    _pending: Background | None
    #: the cold codegen ran in a worker process (see :mod:`.worker`); else why it did not
    codegen_in_worker: bool = False
    worker_error: str | None = None
    #: this process then loaded the kernels from inductor's disk cache (what the worker filled)
    served_from_disk: bool = False
    #: the calls run the captured graph as it is until inductor's kernels load (see :func:`as_captured`)
    as_captured: bool = False
    _as_captured_calls: int = 0
    #: its graph is one an earlier run captured (:mod:`.reuse`): nothing was captured for it
    reused: bool = False

    def _built(self, captured: Any, codegen: Codegen, fallback: str | None) -> None:
        """What every compiled graph says of itself: its backend, size, kernels, what capturing
        and building it cost, inductor's disk cache, and why it fell back (if it did)."""
        self.captured = captured
        self.backend = codegen.backend
        self.graph_nodes = len(captured.graph.graph.nodes)
        self.kernels = codegen.kernels
        self.capture_seconds = captured.capture_seconds
        self.codegen_seconds = codegen.seconds
        self.cache = codegen.cache
        self.fallback = fallback
        self._run = codegen.run

    def build_inductor(self, on_done: Callable[[Codegen], None] | None = None,
                       delay: float = 0.0) -> str | None:
        """Start compiling this graph with inductor in the background (after ``delay`` seconds);
        the calls go on as they run now, and inductor's kernels take over at the first call after
        it is done. None, or why it cannot start (no C++ compiler)."""
        if self.backend == "inductor" or self._pending is not None:
            return None
        missing = no_cxx_reason()
        if missing is not None:
            return missing
        self._pending = Background(self.captured.graph, list(self.captured.example_inputs), on_done, delay)
        return None

    def _switch(self) -> None:
        """Background codegen finished: use inductor from now on, or say why not."""
        pending, self._pending = self._pending, None
        assert pending is not None
        if pending.result is not None:
            self._run = pending.result.run
            self.backend = "inductor"
            self.kernels = pending.result.kernels
            self.cache = pending.result.cache
            self.codegen_seconds = pending.result.seconds
            ahead = pending.result.ahead
            self.codegen_in_worker = ahead is not None and ahead.error is None
            self.worker_error = ahead.error if ahead is not None else None
            self.served_from_disk = pending.result.served_from_disk
        else:
            self.fallback = f"inductor failed: {type(pending.error).__name__}: {pending.error}"
        if self.as_captured and self.backend != "inductor":
            self._to_torchscript()
        self.as_captured = False

    def _run_now(self) -> Callable[..., Any]:
        """What runs this call: inductor's kernels once they are ready, else what runs now (the
        captured graph as it is only for a while: see :data:`AS_CAPTURED_STEPS`)."""
        if self._pending is not None and self._pending.done.is_set():
            self._switch()
        elif self.as_captured:
            self._as_captured_calls += 1
            if self._as_captured_calls > AS_CAPTURED_STEPS:
                self.as_captured = False
                self._to_torchscript()
        return self._run

    def _to_torchscript(self) -> None:
        """Build TorchScript after all (inductor failed, or is taking long: a cold codegen)."""
        codegen = torchscript(self.captured.graph, list(self.captured.example_inputs))
        self._run = codegen.run
        self.codegen_seconds += codegen.seconds

    def codegen_summary(self) -> str:
        """How inductor's kernels were built: "codegen 21.3 s in a worker process, cold disk cache"."""
        where = "in a worker process" if self.codegen_in_worker else "in the background"
        if self.worker_error:
            where += f" ({self.worker_error}; compiled in this process)"
        return f"codegen {self.codegen_seconds:.1f} s {where}, {self.cache or 'cold'} disk cache"

    @property
    def compiling(self) -> bool:
        """True while inductor's codegen runs in the background (the calls run on ``step``)."""
        return self._pending is not None

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for background codegen (if any); True once the final backend runs the next call."""
        if self._pending is None:
            return True
        done = self._pending.wait(timeout)
        if done:
            self._switch()
        return done
