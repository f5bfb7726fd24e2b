"""Turn a captured graph into something fast to call: TorchScript ("step") or inductor.

``step`` traces the captured aten graph with ``torch.jit.trace`` (tracing the
graph, not the Python step: the graph has no Python left and no tensor that
requires grad as a constant) and runs it with the TorchScript interpreter:
cheap to build, no C++ toolchain. ``inductor`` compiles it into C++ kernels
with ``torch._inductor.compile``, with ``fallback_random=True`` so that random
draws go through ATen's generator as eager ones do (without it ``rand``,
``randn`` and ``_standard_gamma`` draw other numbers). Inductor keeps what it
compiled in its on-disk cache; :class:`Codegen` says whether this compile was
served from it ("warm") or not ("cold").
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from . import _compat

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


def no_cxx_reason() -> str | None:
    """Why inductor cannot compile here (no C++ compiler), or None when it can."""
    compiler, searched = _compat.cxx_compiler()
    if compiler is None:
        return (f"inductor needs a C++ compiler and none was found (searched: {searched}; set CXX or "
                "install g++)")
    return None


def torchscript(graph: Any, example_inputs: list[Any]) -> Codegen:
    """Trace the captured graph with TorchScript; neither the inputs nor the random stream change."""
    import torch

    start = time.perf_counter()
    rng = torch.get_rng_state()
    scratch = [t.detach().clone() for t in example_inputs]  # the graph writes its inputs
    try:
        with torch.no_grad():
            traced = torch.jit.trace(graph, tuple(scratch), check_trace=False)
    finally:
        torch.set_rng_state(rng)
    return Codegen(run=traced.forward, backend="step", seconds=time.perf_counter() - start)


def inductor(graph: Any, example_inputs: list[Any]) -> Codegen:
    """Compile the captured graph with inductor (random draws through ATen, as eager)."""
    import torch

    start = time.perf_counter()
    hits, misses = _compat.fx_cache_counts()
    with torch.no_grad():
        compiled = _compat.inductor_compile(graph, list(example_inputs))
    new_hits, new_misses = _compat.fx_cache_counts()
    cache: Literal["cold", "warm"] | None = None
    if new_misses > misses:
        cache = "cold"
    elif new_hits > hits:
        cache = "warm"
    return Codegen(run=compiled, backend="inductor", seconds=time.perf_counter() - start,
                   kernels=_compat.generated_kernels(compiled), cache=cache)


class Background:
    """Inductor's codegen on a thread of its own, while the caller goes on.

    Capture needs the model and the random stream, so it happens on the calling
    thread; codegen only reads the captured graph. The thread is a daemon, so an
    interrupted cell never waits for it.
    """

    def __init__(self, graph: Any, example_inputs: list[Any]) -> None:
        self.result: Codegen | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._thread = threading.Thread(target=self._work, args=(graph, list(example_inputs)),
                                        name="pyrojit-inductor", daemon=True)
        self._thread.start()

    def _work(self, graph: Any, example_inputs: list[Any]) -> None:
        try:
            self.result = inductor(graph, example_inputs)
        except BaseException as exc:  # reported by the step that looks
            self.error = exc
        finally:
            self.done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self.done.wait(timeout)
