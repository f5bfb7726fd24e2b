"""HMC and NUTS trajectories built by a compiled graph, one call per leapfrog step.

With the potential and its gradient compiled (:mod:`.potential`), most of a NUTS run is Pyro's
tree building in Python (docs/benchmarks.md, The whole step). Here each leaf of the tree
(:mod:`.leapfrog`) is one graph with the potential inlined; Python keeps the doubling loop, reads
one flag per leaf, and hands each iteration's end to Pyro's own adapter (step size, mass matrix)
and tallies (:mod:`pyro_jitmagic.compat.nuts`). :meth:`CompiledTrajectory.install` makes the
kernel's ``sample`` this one until the run's patches are restored.

The algorithm is Pyro's: multinomial sampling with its biased choice between trees, its U-turn
criterion and divergence threshold. Its random draws are taken in another order, so a run follows
the distribution of Pyro's kernel, not its draws. A leaf the graph cannot run (a failed guard, an
error such as a singular Cholesky factor) runs the same function eagerly on Pyro's potential and
gradient; a kernel the graph does not cover runs Pyro's own ``sample`` (:func:`refusal`). HMC's
trajectories are the same leaves without the tree: ``num_steps`` of them, then Pyro's Metropolis
correction.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Literal

from .. import patch
from ..compat import capture as compat
from ..compat import nuts as kernel_state
from ..guards import Finding, Sentinel, agree
from .backends import Background, Codegen, SwitchesToInductor
from .capture import prune, simplify, trace_restoring
from .errors import CannotCompile
from .leapfrog import OUTPUTS, Layout, checkpoint_masks, leaf_function

_OUT = {name: i for i, name in enumerate(OUTPUTS)}


def refusal(kernel: Any) -> str | None:
    """Why this kernel's trajectories stay in Pyro's ``sample``, or None when they compile."""
    from pyro.infer.mcmc import HMC, NUTS
    from pyro.infer.mcmc.adaptation import BlockMassMatrix

    if type(kernel) not in (HMC, NUTS):
        return (f"{type(kernel).__name__}'s trajectories run in Pyro's kernel (compiled trajectories "
                "are HMC's and NUTS's own)")
    if type(kernel) is NUTS and not kernel.use_multinomial_sampling:
        return "NUTS(use_multinomial_sampling=False) samples slices: its trajectories run in Pyro's kernel"
    if type(kernel.mass_matrix_adapter) is not BlockMassMatrix:
        return (f"the {type(kernel.mass_matrix_adapter).__name__} mass matrix runs in Pyro's kernel "
                "(compiled trajectories take block-diagonal mass matrices)")
    return None


@dataclass
class CapturedTrajectory:
    graph: Any
    example_inputs: list[Any]
    layout: Layout
    depth: int
    max_sliced_energy: float
    capture_seconds: float


def capture_trajectory(kernel: Any, potential: Any) -> CapturedTrajectory:
    """Capture one leaf of ``kernel``'s trajectories around the captured ``potential`` (a
    :class:`~.potential.CompiledPotential` of this kernel)."""

    start = time.perf_counter()
    why = refusal(kernel)
    if why is not None:
        raise CannotCompile(why)
    captured = potential.captured
    params = kernel.initial_params
    shapes = {name: tuple(params[name].shape) for name in captured.names}
    dtypes = {params[name].dtype for name in captured.names}
    if len(dtypes) != 1:
        raise CannotCompile(f"the latent sites mix dtypes ({sorted(map(str, dtypes))})")
    try:
        layout = Layout.of(captured.names, shapes, kernel.inverse_mass_matrix)
    except ValueError as exc:
        raise CannotCompile(str(exc)) from None
    depth, max_sliced = kernel_state.tree_limits(kernel)
    leaf = leaf_function(_graph_potential(captured.graph, layout), layout.diagonal, max_sliced)
    inputs = _example_inputs(layout, params, kernel.inverse_mass_matrix, depth)
    graph = trace_restoring(leaf, inputs, lambda patches: None, "the NUTS trajectory")
    for node in graph.graph.nodes:
        node.type = None  # (the leaf's annotations: a string global inductor's cache key cannot hold)
    simplify(graph)
    prune(graph)
    return CapturedTrajectory(graph, inputs, layout, depth, max_sliced, time.perf_counter() - start)


def _graph_potential(graph: Any, layout: Layout) -> Any:
    """The captured potential as a function of the flat vector: its graph inlined in the leaf's."""
    import torch

    order = sorted(range(len(layout.names)), key=lambda i: layout.slices[i][0])

    def potential(z: Any) -> tuple[Any, Any, Any]:
        energy, ok, *grads = graph(*layout.sites(z))
        return energy, ok, torch.cat([grads[i].reshape(-1) for i in order])

    return potential


def eager_potential(potential_fn: Any, layout: Layout) -> Any:
    """Pyro's potential and gradient as a function of the flat vector, with Pyro's handling of a
    singular matrix (an energy of NaN, which the leaf makes a divergence)."""
    import torch

    potential_grad = patch.unwrap(compat.potential_grad_owners()[0].potential_grad)

    def potential(z: Any) -> tuple[Any, Any, Any]:
        values = {name: value.clone() for name, value in layout.unflatten(z).items()}
        grads, energy = potential_grad(potential_fn, values)
        return energy, torch.ones((), dtype=torch.bool), layout.flatten(grads)

    return potential


def _example_inputs(layout: Layout, params: dict[str, Any], inverse_mass: Any, depth: int) -> list[Any]:
    import torch

    z = layout.flatten(params).detach().clone()
    scalar = torch.zeros((), dtype=z.dtype)
    inverse, _, sqrt_inverse = layout.mass_terms(inverse_mass)
    vector = torch.zeros_like(z)
    table = torch.zeros((depth, layout.size), dtype=z.dtype)
    no = torch.zeros((), dtype=torch.bool)
    mask = torch.zeros(depth, dtype=torch.bool)
    return [z, vector.clone(), vector.clone(), scalar + 0.1, inverse, sqrt_inverse, scalar.clone(),
            z.clone(), scalar.clone(), vector.clone(), scalar.clone(), vector.clone(), table, table.clone(),
            scalar.clone(), z.clone(), scalar.clone(), vector.clone(), scalar.clone(), vector.clone(), no,
            vector.clone(), mask, mask.clone(), no.clone(), no.clone(), torch.full((2,), 0.5, dtype=z.dtype)]


class CompiledTrajectory(SwitchesToInductor):
    """A NUTS kernel's ``sample``, each iteration's trajectory built by the compiled leaf.

    Attributes
    ----------
    backend, graph_nodes, kernels, capture_seconds, codegen_seconds, cache, fallback
        As for :class:`~pyro_jitmagic.wholestep.step.CompiledStep`.
    iterations, leaves, eager_leaves : int
        Iterations this built; leaves run by the graph; leaves run eagerly (a failed guard, an error).
    pyro_iterations : int
        Iterations run by Pyro's own ``sample`` instead, the last one because of ``declined``.
    """


    def __init__(self, kernel: Any, potential: Any, captured: CapturedTrajectory, codegen: Codegen,
                 fallback: str | None, waits: bool = False) -> None:
        import torch

        self.kernel, self.potential, self.captured = kernel, potential, captured
        #: what the report calls it
        self.what = f"{type(kernel).__name__} trajectory"
        self._fixed = self.what == "HMC trajectory"  # a fixed number of leapfrog steps, no tree
        self.backend = codegen.backend
        self.graph_nodes = len(captured.graph.graph.nodes)
        self.kernels = codegen.kernels
        self.capture_seconds = captured.capture_seconds
        self.codegen_seconds = codegen.seconds
        self.cache: Literal["cold", "warm"] | None = codegen.cache
        self.fallback = fallback
        self.iterations = self.leaves = self.eager_leaves = self.pyro_iterations = 0
        self.declined: str | None = None
        self.sentinel = Sentinel()
        self.finding: Finding | None = None
        self._run = codegen.run
        self._pending: Background | None = None
        self._waits = waits  # for inductor's kernels, running Pyro's kernel meanwhile
        layout = self._layout = captured.layout
        self._eager_leaf = leaf_function(eager_potential(potential.captured.potential_fn, layout),
                                         layout.diagonal, captured.max_sliced_energy)
        self._pyro_sample = type(kernel).sample.__get__(kernel)  # (NUTS's own: refusal() saw the type)
        self._masks: dict[int, list[tuple[Any, Any]]] = {}
        self._mass: tuple[tuple[Any, ...], tuple[Any, Any, Any]] | None = None
        self._yes, self._no = torch.ones((), dtype=torch.bool), torch.zeros((), dtype=torch.bool)
        dtype = captured.example_inputs[0].dtype
        self._tables = torch.zeros((captured.depth, layout.size), dtype=dtype)

    def install(self, patches: patch.PatchSet) -> None:
        """The kernel's ``sample`` is this one until ``patches.restore()``."""
        patches.set(self.kernel, "sample", self.sample)

    def sample(self, params: dict[str, Any]) -> dict[str, Any]:
        """One NUTS iteration, as ``NUTS.sample`` (pyro/infer/mcmc/nuts.py) makes it."""
        import pyro
        import torch
        from pyro.util import optional

        why = self._declines()
        if why is not None:
            self.pyro_iterations += 1
            self.declined = why
            return self._pyro_sample(params)
        kernel, layout = self.kernel, self._layout
        z, energy, grads = kernel_state.last_state(kernel)
        if z is None:  # the cache was cleared: the potential at the given values
            z = params
            grads, energy = compat.potential_grad_owners()[0].potential_grad(kernel.potential_fn, z)
            kernel_state.remember(kernel, z, energy, grads)
        build = self._fixed_length if self._fixed else self._trajectory
        with torch.no_grad(), optional(pyro.validation_enabled(False), kernel_state.in_warmup(kernel)):
            accepted, diverging, tree, accept_prob = build(z, energy, grads)
        if accepted:
            z, grads = layout.unflatten(tree[0]), layout.unflatten(tree[2])
            kernel_state.remember(kernel, z, tree[1], grads)
        self.iterations += 1
        kernel_state.iteration_ends(kernel, z, grads, accept_prob, accepted, diverging)
        return z.copy()

    def _trajectory(self, z: dict[str, Any], energy: Any,
                    grads: dict[str, Any]) -> tuple[bool, bool, Any, Any]:
        """Double the tree until it turns, diverges or is as deep as allowed: (accepted, diverging,
        (proposal, its energy, its gradient), mean acceptance probability of its leaves)."""
        import torch

        layout, kernel = self._layout, self.kernel
        inverse, sqrt, sqrt_inverse = self._mass_terms()
        flat_z, flat_grad = layout.flatten(z), layout.flatten(grads)
        r_unscaled = torch.randn(layout.size, dtype=flat_z.dtype)
        r = sqrt * r_unscaled if layout.diagonal else sqrt @ r_unscaled
        energy0 = energy + 0.5 * r_unscaled.dot(r_unscaled)
        steps = torch.tensor([kernel.step_size, -kernel.step_size], dtype=flat_z.dtype).unbind()
        ends = {1: (flat_z, r, flat_grad, r_unscaled), -1: (flat_z, r, flat_grad, r_unscaled)}
        # (tree's proposal z, energy, gradient, log weight, momentum sum, accepted), the leaves' sum
        # of acceptance probabilities
        tree = (flat_z, energy, flat_grad, torch.zeros_like(energy), r_unscaled, self._no)
        sum_accept, leaves, diverging = torch.zeros_like(energy), 0, False
        depth = self.captured.depth
        directions = (torch.rand(depth) < 0.5).tolist()
        for level in range(depth):
            direction = 1 if directions[level] else -1
            out, built = self._subtree(level, ends[direction], ends[-direction][3], steps[direction < 0],
                                       (inverse, sqrt_inverse, energy0), tree, sum_accept)
            leaves += built
            ends[direction] = (out[0], out[1], out[2], out[3])
            tree, sum_accept = out[13:19], out[12]
            if out[19]:
                diverging = bool(out[20])
                break
        return bool(tree[5]), diverging, tree, sum_accept / leaves  # (an iteration's mean, as Pyro's)

    def _fixed_length(self, z: dict[str, Any], energy: Any,
                      grads: dict[str, Any]) -> tuple[bool, bool, Any, Any]:
        """HMC's trajectory: ``num_steps`` leapfrog steps, then Pyro's Metropolis correction (the
        leaf's tree outputs go unused)."""
        import torch

        layout, kernel = self._layout, self.kernel
        inverse, sqrt, sqrt_inverse = self._mass_terms()
        flat_z, flat_grad = layout.flatten(z), layout.flatten(grads)
        r_unscaled = torch.randn(layout.size, dtype=flat_z.dtype)
        r = sqrt * r_unscaled if layout.diagonal else sqrt @ r_unscaled
        energy0 = energy + 0.5 * r_unscaled.dot(r_unscaled)
        step = torch.tensor(kernel.step_size, dtype=flat_z.dtype)
        no = torch.zeros(self.captured.depth, dtype=torch.bool)
        zero, half = torch.zeros_like(energy), torch.full((2,), 0.5, dtype=flat_z.dtype)
        tree = (flat_z, energy, flat_grad, zero, r_unscaled, self._no)
        out: tuple[Any, ...] = ()
        run = self._run_now()
        for _ in range(kernel.num_steps):
            out = self._leaf(run, (flat_z, r, flat_grad, step, inverse, sqrt_inverse, energy0, *tree[:3],
                                   zero, r_unscaled, self._tables, self._tables, zero, *tree, r_unscaled,
                                   no, no, self._yes, self._no, half))
            flat_z, r, flat_grad = out[0], out[1], out[2]
        r_unscaled = out[_OUT["r_unscaled"]]
        delta = out[_OUT["pe"]] + 0.5 * r_unscaled.dot(r_unscaled) - energy0
        if torch.isnan(delta):
            delta = torch.full_like(delta, float("inf"))
        accept_prob = (-delta).exp().clamp(max=1.0)
        accepted = bool(torch.rand(()) < accept_prob)
        diverging = bool(delta > self.captured.max_sliced_energy)
        return accepted, diverging, (flat_z, out[_OUT["pe"]], flat_grad), accept_prob

    def _subtree(self, level: int, start: tuple[Any, ...], far_r: Any, step: Any, fixed: tuple[Any, Any, Any],
                 tree: tuple[Any, ...], sum_accept: Any) -> tuple[tuple[Any, ...], int]:
        """Build the ``2**level`` leaves of one doubling from ``start``, the trajectory's end; stop at
        a U-turn, a divergence or a failed leaf. (the last leaf's outputs, leaves built)"""
        import torch

        count = 1 << level
        masks = self._masks_for(level)
        uniforms = torch.rand((count, 2), dtype=start[0].dtype).unbind()
        z, r, grad, r_unscaled = start
        inverse, sqrt_inverse, energy0 = fixed
        proposal, weight, r_sum = (z, tree[1], grad), tree[3], r_unscaled
        tables = (self._tables, self._tables)
        tree_z, tree_pe, tree_grad, tree_weight, tree_r_sum, accepted = tree
        run = self._run_now()
        for i in range(count):
            write, check = masks[i]
            args = (z, r, grad, step, inverse, sqrt_inverse, energy0, *proposal, weight, r_sum, *tables,
                    sum_accept, tree_z, tree_pe, tree_grad, tree_weight, tree_r_sum, accepted, far_r, write,
                    check, self._yes if i == 0 else self._no, self._yes if i == count - 1 else self._no,
                    uniforms[i])
            out = self._leaf(run, args)
            (z, r, grad, r_unscaled, _, *proposal_, weight, r_sum, table_r, table_sum, sum_accept, tree_z,
             tree_pe, tree_grad, tree_weight, tree_r_sum, accepted, stop, _, _) = out
            proposal, tables = tuple(proposal_), (table_r, table_sum)
            if stop:
                return out, i + 1
        return out, count

    def _leaf(self, run: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """One leaf on the graph; eagerly where the graph cannot run it or the sentinel disagrees."""
        try:
            out = run(*args)
        except RuntimeError:
            return self._eager(args)
        if out[_OUT["stop"]] and not out[_OUT["ok"]]:
            return self._eager(args)
        if self.sentinel.due() and not self._agrees(args, out):
            return self._eager(args)
        self.leaves += 1
        return out

    def _eager(self, args: tuple[Any, ...]) -> tuple[Any, ...]:
        import torch

        self.eager_leaves += 1
        with torch.enable_grad():
            return self._eager_leaf(*args)

    def _agrees(self, args: tuple[Any, ...], out: tuple[Any, ...]) -> bool:
        """The sentinel: the leaf's potential energy against eager's at the same state and draws. A
        disagreement beyond a nat's float rounding sends every later leaf and potential to Pyro's
        eager ones."""
        import torch

        start = time.perf_counter()
        eager = self._eager(args)
        self.eager_leaves -= 1
        compiled, expected = float(out[_OUT["pe"]]), float(eager[_OUT["pe"]])
        eps = float(torch.finfo(out[_OUT["pe"]].dtype).eps)
        self.sentinel.seconds += time.perf_counter() - start
        if agree(compiled, expected, max(abs(compiled), abs(expected), 1.0), eps):
            return True
        self.finding = Finding(self.sentinel.calls, compiled, expected)
        self.potential.finding = self.finding
        return False

    def _declines(self) -> str | None:
        """Why this iteration runs Pyro's own ``sample``, or None."""
        if self.finding is not None:
            return f"the sentinel found the compiled trajectory wrong: {self.finding}"
        if self._waits:
            if self._pending is not None and self._pending.done.is_set():
                self._switch()
            if self.backend != "inductor":
                return self.fallback or "inductor's kernels of the trajectory were not ready yet"
        kernel = self.kernel
        if kernel_state.tree_limits(kernel) != (self.captured.depth, self.captured.max_sliced_energy):
            return "the kernel's max_tree_depth changed since the trajectory was compiled"
        why = refusal(kernel)
        if why is None and tuple(kernel.inverse_mass_matrix) != self._layout.blocks:
            why = "the mass matrix's blocks changed since the trajectory was compiled"
        return why

    def _mass_terms(self) -> tuple[Any, Any, Any]:
        """The flat mass terms, computed again when the adapter sets a new inverse mass matrix."""
        blocks = tuple(self.kernel.inverse_mass_matrix.values())
        if self._mass is None or len(blocks) != len(self._mass[0]) or any(
                a is not b for a, b in zip(blocks, self._mass[0], strict=True)):
            self._mass = blocks, self._layout.mass_terms(self.kernel.inverse_mass_matrix)
        return self._mass[1]

    def _masks_for(self, level: int) -> list[tuple[Any, Any]]:
        import torch

        masks = self._masks.get(level)
        if masks is None:
            pairs = (checkpoint_masks(i, self.captured.depth) for i in range(1 << level))
            masks = self._masks[level] = [(torch.tensor(write), torch.tensor(check))
                                          for write, check in pairs]
        return masks

    def __repr__(self) -> str:
        return (f"<CompiledTrajectory {self.backend}: {self.graph_nodes} nodes, "
                f"{self.iterations} iterations, {self.leaves} leaves>")


def compile_trajectory(kernel: Any, potential: Any, backend: Literal["step", "inductor"] = "inductor", *,
                       background: bool = False) -> CompiledTrajectory:
    """Capture and compile ``kernel``'s NUTS trajectories around its compiled ``potential``
    (``CannotCompile`` says why not).

    ``background``: nothing is built here; the caller starts inductor's codegen
    (:meth:`~.backends.SwitchesToInductor.build_inductor`), and until its kernels are ready each
    iteration runs Pyro's own ``sample`` (on the compiled potential)."""
    from . import _codegen
    from .backends import as_captured

    captured = capture_trajectory(kernel, potential)
    if background:
        return CompiledTrajectory(kernel, potential, captured, as_captured(captured.graph), None, waits=True)
    codegen, fallback, _ = _codegen(captured.graph, captured.example_inputs, backend, background=False)
    return CompiledTrajectory(kernel, potential, captured, codegen, fallback)
