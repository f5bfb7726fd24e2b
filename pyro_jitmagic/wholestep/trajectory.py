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
from .errors import CannotCompile
from .halves import TRACED, leaf_halves
from .leapfrog import ROW, SCALAR, Layout, checkpoint_masks, packed_leaf


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
    #: where the leaf's own halves came from (:func:`~.halves.leaf_halves`)
    halves: str = TRACED


def capture_trajectory(kernel: Any, potential: Any) -> CapturedTrajectory:
    """Capture one leaf of ``kernel``'s trajectories around the captured ``potential`` (a
    :class:`~.potential.CompiledPotential` of this kernel).

    The leaf's own halves depend on the layout alone: they are captured once per layout and kept
    (:mod:`.halves`), and the potential's graph is copied in between them, node by node
    (:func:`_splice`), instead of tracing the potential's ops again inside the leaf."""
    import torch

    start = time.perf_counter()
    why = refusal(kernel)
    if why is not None:
        raise CannotCompile(why)
    captured = potential.captured
    layout, depth, max_sliced = tree_shape(kernel, captured.names)
    inputs = _example_inputs(layout, kernel.initial_params, kernel.inverse_mass_matrix, depth)
    before, after, halves = leaf_halves(layout, inputs, max_sliced)
    graph, constants = _splice(before, captured.graph, after)
    # (no simplify or prune here: each part had both, and a splice leaves nothing for them to
    # drop or merge: every output of a part is an input of the next, and repeats are views)
    graph = torch.fx.GraphModule(constants, graph)
    return CapturedTrajectory(graph, inputs, layout, depth, max_sliced, time.perf_counter() - start, halves)


def _splice(before: Any, potential: Any, after: Any) -> tuple[Any, Any]:
    """One graph: ``before``'s, then ``potential``'s on its sites, then ``after``'s on the leaf's
    inputs, its point and the potential's outputs; as ``(fx.Graph, a module holding the three
    graphs' constants)``."""
    import torch

    graph, root = torch.fx.Graph(), torch.nn.Module()
    inputs = []
    for node in before.graph.nodes:
        if node.op == "placeholder":
            inputs.append(graph.placeholder(node.name))
            inputs[-1].meta = dict(node.meta)

    def copy(part: Any, feeds: list[Any], prefix: str) -> tuple[Any, ...]:
        nodes = list(part.graph.nodes)
        given = dict(zip([n for n in nodes if n.op == "placeholder"], feeds, strict=True))
        for node in nodes:
            if node.op == "get_attr":  # (each part's constants under its own names)
                name = prefix + node.target.replace(".", "_")
                setattr(root, name, getattr(part, node.target))
                given[node] = graph.get_attr(name)
                given[node].meta = dict(node.meta)
        outputs: Any = graph.graph_copy(part.graph, given)  # (the part's output node's args)
        return tuple(outputs)

    z, r, *sites = copy(before, inputs, "before_")
    out = copy(after, [*inputs, z, r, *copy(potential, sites, "potential_")], "after_")
    graph.output(out)
    return graph, root


def tree_shape(kernel: Any, names: tuple[str, ...]) -> tuple[Layout, int, float]:
    """What a trajectory's graph is built for, of ``kernel`` after its setup: the latent sites'
    layout in the flat vector (their shapes, the mass matrix's blocks), the tree's depth and the
    divergence threshold (``CannotCompile`` where no graph can be)."""
    params = kernel.initial_params
    dtypes = {params[name].dtype for name in names}
    if len(dtypes) != 1:
        raise CannotCompile(f"the latent sites mix dtypes ({sorted(map(str, dtypes))})")
    try:
        layout = Layout.of(names, {name: tuple(params[name].shape) for name in names},
                           kernel.inverse_mass_matrix)
    except ValueError as exc:
        raise CannotCompile(str(exc)) from None
    depth, max_sliced = kernel_state.tree_limits(kernel)
    return layout, depth, max_sliced


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
    """Inputs of a packed leaf (:func:`~.leapfrog.packed_leaf`) to trace it on."""
    import torch

    from .leapfrog import ROWS, SCALARS

    z = layout.flatten(params).detach().clone()
    inverse, _, sqrt_inverse = layout.mass_terms(inverse_mass)
    vectors = torch.zeros((len(ROWS), layout.size), dtype=z.dtype)
    vectors[ROW["z"]] = vectors[ROW["proposal_z"]] = vectors[ROW["tree_z"]] = z
    checkpoints = torch.zeros((2, depth, layout.size), dtype=z.dtype)
    return [vectors, torch.zeros(len(SCALARS), dtype=z.dtype), checkpoints, inverse, sqrt_inverse,
            torch.tensor([0.1, 0.0], dtype=z.dtype), torch.zeros_like(z),
            torch.zeros(2 * depth + 2, dtype=torch.bool), torch.full((2,), 0.5, dtype=z.dtype)]


class CompiledTrajectory(SwitchesToInductor):
    """An HMC or NUTS kernel's ``sample``, each iteration's trajectory built by the compiled leaf.

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

        self.kernel, self.potential = kernel, potential
        #: what the report calls it
        self.what = f"{type(kernel).__name__} trajectory"
        self._fixed = self.what == "HMC trajectory"  # a fixed number of leapfrog steps, no tree
        self._built(captured, codegen, fallback)
        self.iterations = self.leaves = self.eager_leaves = self.pyro_iterations = 0
        self.declined: str | None = None
        self.sentinel = Sentinel()
        self.finding: Finding | None = None
        self._pending: Background | None = None
        self._waits = waits  # for inductor's kernels, running Pyro's kernel meanwhile
        self._direct_due = True  # inductor's kernels are called directly after their first call
        layout = self._layout = captured.layout
        self._eager_leaf = packed_leaf(eager_potential(potential.captured.potential_fn, layout),
                                       layout.diagonal, captured.max_sliced_energy)
        self._pyro_sample = type(kernel).sample.__get__(kernel)  # (Pyro's own: refusal() saw the type)
        self._places: dict[int, list[Any]] = {}
        self._mass: tuple[tuple[Any, ...], tuple[Any, Any, Any]] | None = None
        self._checkpoints = torch.zeros_like(captured.example_inputs[2])

    @property
    def calls(self) -> int:
        """Iterations built (what the cache inspector counts as hits)."""
        return self.iterations

    def install(self, patches: patch.PatchSet) -> None:
        """The kernel's ``sample`` is this one until ``patches.restore()``."""
        patches.set(self.kernel, "sample", self.sample)

    def sample(self, params: dict[str, Any]) -> dict[str, Any]:
        """One iteration, as the kernel's own ``sample`` (pyro/infer/mcmc/hmc.py, nuts.py) makes it."""
        import pyro
        import torch
        from pyro.util import optional

        why = self._declines()
        if why is not None:
            self.pyro_iterations += 1
            self.declined = why
            return self._pyro_sample(params)
        if self._direct_due and self.backend == "inductor" and self.leaves:
            self._direct_due = False  # (the leaf writes none of its inputs)
            self._run = compat.direct_call(self._run, []) or self._run
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

    def _start(self, z: dict[str, Any], energy: Any, grads: dict[str, Any]) -> tuple[Any, Any, Any, Any]:
        """An iteration's start, packed: (vectors, scalars, M^-1, M^-1/2) with a fresh momentum."""
        import torch

        layout = self._layout
        inverse, sqrt, sqrt_inverse = self._mass_terms()
        flat_z, flat_grad = layout.flatten(z), layout.flatten(grads)
        r_unscaled = torch.randn(layout.size, dtype=flat_z.dtype)
        r = sqrt * r_unscaled if layout.diagonal else sqrt @ r_unscaled
        vectors = torch.stack((flat_z, r, flat_grad, r_unscaled, flat_z, flat_grad, r_unscaled, flat_z,
                               flat_grad, r_unscaled))
        zero, one = torch.zeros_like(energy), torch.ones_like(energy)
        # the whole trajectory so far is its first point: log weight 0, nothing accepted
        scalars = torch.stack((energy, energy, zero, zero, energy, zero, zero, zero, one))
        return vectors, scalars, inverse, sqrt_inverse

    def _trajectory(self, z: dict[str, Any], energy: Any,
                    grads: dict[str, Any]) -> tuple[bool, bool, Any, Any]:
        """Double the tree until it turns, diverges or is as deep as allowed: (accepted, diverging,
        (proposal, its energy, its gradient), mean acceptance probability of its leaves)."""
        import torch

        vectors, scalars, inverse, sqrt_inverse = self._start(z, energy, grads)
        r_unscaled = vectors[ROW["r_unscaled"]]
        energy0 = energy + 0.5 * r_unscaled.dot(r_unscaled)
        step = torch.tensor(self.kernel.step_size, dtype=energy0.dtype)
        fixed = {1: torch.stack((step, energy0)), -1: torch.stack((-step, energy0))}
        ends = {1: vectors, -1: vectors}  # rows z, r, grad and r_unscaled: the trajectory's two ends
        leaves, diverging, depth = 0, False, self.captured.depth
        directions = (torch.rand(depth) < 0.5).tolist()
        for level in range(depth):
            direction = 1 if directions[level] else -1
            start = torch.cat((ends[direction][:4], vectors[4:]))
            far_r = ends[-direction][ROW["r_unscaled"]]
            vectors, scalars, built, stop = self._subtree(level, start, scalars, (inverse, sqrt_inverse),
                                                          fixed[direction], far_r)
            leaves += built
            ends[direction] = vectors
            if stop:
                diverging = bool(scalars[SCALAR["diverging"]] > 0.5)
                break
        tree = (vectors[ROW["tree_z"]], scalars[SCALAR["tree_pe"]], vectors[ROW["tree_grad"]])
        accept_prob = scalars[SCALAR["sum_accept"]] / leaves  # (the mean over its leaves, as Pyro's)
        return bool(scalars[SCALAR["accepted"]] > 0.5), diverging, tree, accept_prob

    def _fixed_length(self, z: dict[str, Any], energy: Any,
                      grads: dict[str, Any]) -> tuple[bool, bool, Any, Any]:
        """HMC's trajectory: ``num_steps`` leapfrog steps, then Pyro's Metropolis correction (the
        leaf's tree outputs go unused)."""
        import torch

        vectors, scalars, inverse, sqrt_inverse = self._start(z, energy, grads)
        r_unscaled = vectors[ROW["r_unscaled"]]
        energy0 = energy + 0.5 * r_unscaled.dot(r_unscaled)
        fixed = torch.stack((torch.tensor(self.kernel.step_size, dtype=energy0.dtype), energy0))
        place, half = self._places_for(0)[0], torch.full((2,), 0.5, dtype=energy0.dtype)
        run = self._run_now()
        for _ in range(self.kernel.num_steps):
            vectors, scalars, _, _ = self._leaf(run, (vectors, scalars, self._checkpoints, inverse,
                                                      sqrt_inverse, fixed, r_unscaled, place, half))
        r_unscaled, energy = vectors[ROW["r_unscaled"]], scalars[SCALAR["pe"]]
        delta = energy + 0.5 * r_unscaled.dot(r_unscaled) - energy0
        if torch.isnan(delta):
            delta = torch.full_like(delta, float("inf"))
        accept_prob = (-delta).exp().clamp(max=1.0)
        accepted = bool(torch.rand(()) < accept_prob)
        diverging = bool(delta > self.captured.max_sliced_energy)
        return accepted, diverging, (vectors[ROW["z"]], energy, vectors[ROW["grad"]]), accept_prob

    def _subtree(self, level: int, vectors: Any, scalars: Any, mass: tuple[Any, Any], fixed: Any,
                 far_r: Any) -> tuple[Any, Any, int, bool]:
        """Build the ``2**level`` leaves of one doubling from the trajectory's end in ``vectors``;
        stop at a U-turn, a divergence or a failed leaf. (vectors, scalars, leaves built, stopped)"""
        import torch

        count = 1 << level
        places = self._places_for(level)
        uniforms = torch.rand((count, 2), dtype=scalars.dtype).unbind()
        inverse, sqrt_inverse = mass
        checkpoints = self._checkpoints
        run = self._run_now()
        for i in range(count):
            vectors, scalars, checkpoints, stop = self._leaf(run, (
                vectors, scalars, checkpoints, inverse, sqrt_inverse, fixed, far_r, places[i], uniforms[i]))
            if stop:
                return vectors, scalars, i + 1, True
        return vectors, scalars, count, False

    def _leaf(self, run: Any, args: tuple[Any, ...]) -> tuple[Any, ...]:
        """One leaf on the graph; eagerly where the graph cannot run it or the sentinel disagrees
        (then also every leaf after it, to the end of the iteration)."""
        if self.finding is not None:
            return self._eager(args)
        try:
            out = run(*args)
        except RuntimeError:
            return self._eager(args)
        if out[3] and out[1][SCALAR["ok"]] < 0.5:
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
        compiled, expected = float(out[1][SCALAR["pe"]]), float(eager[1][SCALAR["pe"]])
        eps = float(torch.finfo(out[1].dtype).eps)
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

    def _places_for(self, level: int) -> list[Any]:
        """Each leaf's ``place`` in a subtree of ``2**level`` leaves (see :func:`~.leapfrog.packed_leaf`)."""
        import torch

        places = self._places.get(level)
        if places is None:
            count, depth = 1 << level, self.captured.depth
            places = self._places[level] = [
                torch.tensor([*write, *check, i == 0, i == count - 1])
                for i, (write, check) in enumerate(checkpoint_masks(i, depth) for i in range(count))]
        return places

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
