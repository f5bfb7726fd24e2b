"""The whole-step compiler: an SVI step (loss, gradients, optimizer update) or an HMC/NUTS potential
and its gradient, captured as one graph and run by TorchScript or inductor.

Pyro's ``Jit*`` ELBOs trace the forward loss only; autograd and the optimizers then run op by op.
Here the whole step is captured (:mod:`.capture`, :mod:`.potential`) and compiled
(:mod:`.backends`): ``step`` runs the graph on TorchScript, cheap to build; ``inductor`` compiles
it into C++ kernels, or runs ``step`` where there is no C++ compiler. :mod:`.reads` turns value
reads into guards; :mod:`.elbos` and :mod:`.optim` write Pyro's losses and torch's optimizers as
tensor math; :mod:`.memory` remembers what inductor's disk cache holds, and :mod:`.worker` runs a
cold codegen in another process. :mod:`.short_way` writes a settled step's work around its graph as
generated code (:mod:`.keys`: what a step is keyed on), and :mod:`.reuse` keeps a run's HMC/NUTS
graphs for the next run of the same model on the same data. The seam calls
:func:`compile_svi_step` and :func:`compile_potential`. Nothing here imports torch or Pyro until
called.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .backends import BACKENDS, Backend
from .errors import CannotCompile, NeedsEagerStep, Unguardable
from .reads import ValueRead, ValueReadPolicy

__all__ = [
    "BACKENDS",
    "Backend",
    "CannotCompile",
    "CompiledPotential",
    "CompiledStep",
    "Declined",
    "NeedsEagerStep",
    "Unguardable",
    "ValueRead",
    "compile_potential",
    "compile_svi_step",
    "cxx_compiler",
    "step_key",
]


def __getattr__(name: str) -> Any:
    # the classes live with torch-importing code; reach them lazily
    if name in ("CompiledStep", "Declined"):
        from . import step

        return getattr(step, name)
    if name == "step_key":
        from .keys import step_key

        return step_key
    if name == "CompiledPotential":
        from . import potential

        return potential.CompiledPotential
    raise AttributeError(name)


def cxx_compiler() -> str | None:
    """The C++ compiler inductor would use here, or None when there is none."""
    from ..compat import capture as compat

    return compat.cxx_compiler()[0]


def _codegen(graph: Any, example_inputs: list[Any], backend: Backend,
             background: bool) -> tuple[Any, str | None, Any]:
    """(codegen, fallback reason, background codegen or None) for ``backend``."""
    codegen, fallback, pending = _backend(graph, example_inputs, backend, background)
    if codegen.note is not None and pending is None:
        fallback = f"{fallback}; {codegen.note}" if fallback else codegen.note
    return codegen, fallback, pending


def _backend(graph: Any, example_inputs: list[Any], backend: Backend,
             background: bool) -> tuple[Any, str | None, Any]:
    from . import backends

    if backend == "inductor":
        missing = backends.no_cxx_reason()
        if missing is not None:
            return backends.torchscript(graph, example_inputs), f"{missing}; running the step backend", None
        if background:
            first = (backends.as_captured(graph) if _large_and_cached(graph, example_inputs)
                     else backends.torchscript(graph, example_inputs))
            # (started after the first compiled call, whose sentinel check would share the
            # interpreter with inductor's Python: tens of milliseconds instead of one)
            return first, None, backends.Background(graph, example_inputs, start=False)
        try:
            return backends.inductor(graph, example_inputs), None, None
        except Exception as exc:
            return (backends.torchscript(graph, example_inputs),
                    f"inductor failed ({type(exc).__name__}: {exc}); running the step backend", None)
    return backends.torchscript(graph, example_inputs), None, None


def _large_and_cached(graph: Any, example_inputs: list[Any]) -> bool:
    """Whether to run the graph as captured while inductor loads it: large enough that building
    TorchScript costs more than waiting, and known to be in inductor's disk cache."""
    from .backends import AS_CAPTURED_NODES
    from .memory import graph_digest, shared

    if len(graph.graph.nodes) < AS_CAPTURED_NODES:
        return False
    memory = shared()
    return memory is not None and memory.inductor_holds(graph_digest(graph, example_inputs))


def compile_svi_step(svi: Any, args: tuple[Any, ...], kwargs: dict[str, Any] | None = None, *,
                     backend: Backend = "step", value_reads: ValueReadPolicy = "error",
                     background: bool = False, elbo: Any = None,
                     locate: Callable[[str, int], str] | None = None) -> Any:
    """Capture ``svi.step(*args, **kwargs)`` whole and compile it.

    Parameters
    ----------
    svi : pyro.infer.SVI
        With a Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO or TraceGraph_ELBO (or
        their ``Jit*`` twins) and a ``pyro.optim`` wrapper of Adam, AdamW, SGD, RMSprop,
        Adagrad or ClippedAdam (an LR scheduler around one too).
    args, kwargs
        A call's arguments: the step is compiled for their key (see :func:`step_key`).
    backend : {"step", "inductor"}
    value_reads : {"error", "bake"}
        What a floating-point read of a traced tensor in the user's code does: stop the
        capture (CannotCompile naming the line), or be baked in and reported as risky.
        Boolean and integer reads are always guarded.
    background : bool
        With ``inductor``, compile in the background while the step runs on ``step`` (a large
        graph whose kernels inductor's disk cache holds runs as captured meanwhile: no TorchScript
        to build while they load).
    elbo : pyro.infer.ELBO, optional
        The ELBO whose loss the step computes, and whose eager ``loss`` the sentinel checks it
        against (by default the SVI's own; pass the user's ELBO when the SVI runs on a companion).
    locate : callable, optional
        ``(filename, line) -> str``: how the reasons name the user's lines (IPython names cells).

    Returns
    -------
    CompiledStep

    Raises
    ------
    NeedsEagerStep
        The SVI has not made its first step yet (or it creates params, or a gradient waits in
        ``.grad``): run it eagerly, then compile.
    Unguardable
        The step reads what no graph can hold (a draw outside torch, a float read): it runs eager.
    CannotCompile
        This SVI cannot be captured; ``.reason`` says why.
    """
    from .backends import BACKENDS
    from .capture import capture_svi_step
    from .keys import step_key
    from .step import CompiledStep

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    kwargs = dict(kwargs or {})
    args = tuple(args)
    if elbo is None:
        elbo = getattr(svi.loss_and_grads, "__self__", None)
    captured = capture_svi_step(svi, args, kwargs, value_reads, elbo=elbo, locate=locate)
    codegen, fallback, pending = _codegen(captured.graph, captured.example_inputs, backend, background)

    def eager_loss(args: tuple[Any, ...], kwargs: dict[str, Any]) -> float:
        return elbo.loss(svi.model, svi.guide, *args, **kwargs)

    return CompiledStep(svi, step_key(args, kwargs), captured, codegen, fallback, pending, eager_loss)


def compile_potential(target: Any, example_params: dict[str, Any], *, backend: Backend = "step",
                      value_reads: ValueReadPolicy = "error") -> Any:
    """Capture an HMC/NUTS potential and its gradient as one graph, and compile it.

    Parameters
    ----------
    target : HMC or NUTS kernel (after its ``setup``), or a potential function
        For a kernel, its model's eager potential is captured (also when the kernel
        has ``jit_compile=True``); a potential function of a dict of tensors is
        captured as it is.
    example_params : dict of str to Tensor
        Unconstrained values, as HMC passes them (``kernel.initial_params``).
    backend : {"step", "inductor"}

    Returns
    -------
    CompiledPotential
        ``potential(z) -> (grads, potential_energy)``, as ``pyro.ops.integrator.potential_grad``
        returns them; ``potential.install(patches, kernel)`` makes HMC/NUTS use it.
    """
    from .potential import capture_potential, make_compiled_potential

    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    captured = capture_potential(target, example_params, value_reads)
    codegen, fallback, _ = _codegen(captured.graph, captured.example_inputs, backend, background=False)
    return make_compiled_potential(captured, codegen, fallback)
