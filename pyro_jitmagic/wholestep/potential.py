"""An HMC/NUTS potential and its gradient as one compiled graph.

HMC and NUTS spend their time in ``pyro.ops.integrator.potential_grad``. With ``jit_compile=True``
Pyro traces the potential only, and its gradient still runs op by op. Here both are captured
together (``z -> (potential, gradients)``) and compiled by the same backends as a whole SVI step.
:meth:`CompiledPotential.install` replaces ``potential_grad`` where Pyro binds it by name, for the
kernel's potential only. A call whose shapes or guards changed, or that raises (a singular
Cholesky factor), runs Pyro's own ``potential_grad``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from .. import patch
from ..compat import capture as compat
from ..guards import Finding, Sentinel, agree
from .backends import Background, Codegen, SwitchesToInductor
from .capture import patch_reads, prune, simplify, trace_restoring
from .errors import CannotCompile
from .reads import ReadWatch, ValueRead, ValueReadPolicy


@dataclass
class CapturedPotential:
    graph: Any
    example_inputs: list[Any]
    names: tuple[str, ...]
    signature: tuple[Any, ...]
    potential_fn: Any          # what was captured (the model's eager potential, or the user's function)
    guards: int
    reads: tuple[ValueRead, ...]
    capture_seconds: float


def _potential_of(target: Any) -> Any:
    potential_fn = getattr(target, "potential_fn", None)
    if potential_fn is None and hasattr(target, "setup") and hasattr(target, "sample"):
        raise CannotCompile(f"the {type(target).__name__} kernel has no potential yet: compile it after "
                            "its setup (MCMC.run calls it)")
    if potential_fn is None:
        if not callable(target):
            raise CannotCompile(f"{type(target).__name__} is neither an HMC/NUTS kernel nor a "
                                "potential function")
        potential_fn = target
    return compat.eager_potential(potential_fn)


def capture_potential(target: Any, example_params: dict[str, Any],
                      value_reads: ValueReadPolicy = "error") -> CapturedPotential:
    """Capture ``z -> (potential_energy, ok, *grads)`` for the potential behind ``target``."""
    import torch

    start = time.perf_counter()
    potential_fn = _potential_of(target)
    if not example_params:
        raise CannotCompile("the model has no latent values to sample")
    names = tuple(example_params)
    inputs = [example_params[name].detach().clone() for name in names]
    captured: dict[str, Any] = {}

    def potential_and_grad(*zs: Any) -> Any:
        with ReadWatch(value_reads, potential_and_grad.__code__) as watch:
            for z in zs:
                z.requires_grad_(True)
            energy = potential_fn(dict(zip(names, zs, strict=True)))
            grads = torch.autograd.grad(energy, zs)
            for z in zs:
                z.requires_grad_(False)
        captured["watch"] = watch
        ok = torch.stack(watch.guards).all() if watch.guards else torch.ones((), dtype=torch.bool)
        return (energy.detach(), ok, *grads)

    graph = trace_restoring(potential_and_grad, inputs, patch_reads, "the potential")
    simplify(graph)
    prune(graph)
    watch = captured["watch"]
    return CapturedPotential(
        graph=graph, example_inputs=inputs, names=names,
        signature=tuple((tuple(t.shape), t.dtype) for t in inputs), potential_fn=potential_fn,
        guards=len(watch.guards), reads=tuple(watch.reads), capture_seconds=time.perf_counter() - start)


class CompiledPotential(SwitchesToInductor):
    """``potential(z) -> (grads, potential_energy)``, as ``potential_grad`` computes them, in one graph.

    Attributes
    ----------
    backend, graph_nodes, kernels, capture_seconds, codegen_seconds, cache, fallback, value_reads, guards
        As for :class:`~pyro_jitmagic.wholestep.step.CompiledStep`.
    calls, eager_calls : int
        Evaluations run by the graph; evaluations run by Pyro's ``potential_grad`` instead.
    """

    #: what the report calls it
    what = "potential"

    def __init__(self, captured: CapturedPotential, codegen: Codegen, fallback: str | None) -> None:
        self._built(captured, codegen, fallback)
        self.value_reads = captured.reads
        self.guards = captured.guards
        self.calls = 0
        self.eager_calls = 0
        self.sentinel = Sentinel()
        #: the sentinel's check that found the graph's energy is not eager's (then every call runs eager)
        self.finding: Finding | None = None
        self._pending: Background | None = None
        self._names = captured.names
        self._signature = captured.signature
        self._eager_potential = captured.potential_fn
        self._eager_grad = patch.unwrap(compat.potential_grad_owners()[0].potential_grad)

    def __call__(self, z: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        import torch

        if self.finding is not None:
            return self._eager(z)
        if self._pending is not None and self._pending.done.is_set():
            self._switch()
        names = self._names
        if tuple(z) != names or any((tuple(z[n].shape), z[n].dtype) != s
                                    for n, s in zip(names, self._signature, strict=True)):
            return self._eager(z)
        values = [z[n] for n in names]
        try:
            with torch.no_grad():
                out = self._run(*values)
        except RuntimeError:
            return self._eager(z)  # e.g. a singular Cholesky factor: Pyro's handlers decide
        if not bool(out[1]):
            return self._eager(z)
        for value in values:
            if value.requires_grad:  # potential_grad leaves z not requiring grad
                value.requires_grad_(False)
        if self.sentinel.due() and not self._agrees(z, out[0]):
            return self._eager(z)
        self.calls += 1
        return dict(zip(names, out[2:], strict=True)), out[0]

    def _agrees(self, z: dict[str, Any], energy: Any) -> bool:
        """The sentinel: the graph's energy against eager's at the same values (potentials draw no
        random numbers). Energies are in nats, so a disagreement far below a nat's float rounding is
        none; one beyond it sends every later call to Pyro's eager potential and gradient."""
        import time

        import torch

        start = time.perf_counter()
        with torch.no_grad():
            eager = float(self._eager_potential(z))
        compiled = float(energy)
        eps = float(torch.finfo(energy.dtype).eps)
        self.sentinel.seconds += time.perf_counter() - start
        if agree(compiled, eager, max(abs(compiled), abs(eager), 1.0), eps):
            return True
        self.finding = Finding(self.sentinel.calls, compiled, eager)
        return False

    def _eager(self, z: dict[str, Any]) -> tuple[dict[str, Any], Any]:
        self.eager_calls += 1
        return self._eager_grad(self._eager_potential, z)

    def install(self, patches: patch.PatchSet, kernel: Any) -> None:
        """Make HMC/NUTS take ``kernel``'s potential and gradient from this graph until
        ``patches.restore()``; any other potential still goes through Pyro's ``potential_grad``."""
        eager_grad = self._eager_grad

        def potential_grad(potential_fn: Any, z: dict[str, Any]) -> Any:
            if potential_fn is getattr(kernel, "potential_fn", None):
                return self(z)
            return eager_grad(potential_fn, z)

        setattr(potential_grad, patch.ORIGINAL_ATTR, eager_grad)
        for module in compat.potential_grad_owners():
            patches.set(module, "potential_grad", potential_grad)

    def __repr__(self) -> str:
        return f"<CompiledPotential {self.backend}: {self.graph_nodes} nodes, {self.calls} calls>"


def make_compiled_potential(captured: CapturedPotential, codegen: Codegen,
                            fallback: str | None) -> CompiledPotential:
    return CompiledPotential(captured, codegen, fallback)
