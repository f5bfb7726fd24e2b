"""One leaf of a NUTS trajectory as tensor math: what :mod:`.trajectory` captures into one graph.

Pyro's ``NUTS`` builds each iteration's tree recursively over dicts of tensors, about ten small
tensor operations per leapfrog step besides the potential. Here a leaf is one function of flat
tensors, written after NumPyro's iterative NUTS: the leapfrog step, the leaf's energy, weight
and divergence, the multinomial choice of the subtree's proposal (progressive, leaf by leaf,
which picks each leaf with the same probability as Pyro's merges of halves), the U-turn check of
every subtree that ends at this leaf (from checkpoints of momenta and their sums), and, at a
subtree's last leaf, Pyro's merge into the whole trajectory (its biased choice and its U-turn
check). Every branch is a ``where``, so the function has no Python control flow on values and
traces into one graph.

The site values lie in one flat vector, in the order of the mass matrix's blocks: the inverse
mass matrix is then one diagonal vector, or one block-diagonal matrix for dense blocks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

#: the rows of a packed leaf's state of vectors (see :func:`packed_leaf`)
ROWS = ("z", "r", "grad", "r_unscaled", "proposal_z", "proposal_grad", "r_sum", "tree_z", "tree_grad",
        "tree_r_sum")
#: the entries of its state of scalars (flags as 0 or 1)
SCALARS = ("pe", "proposal_pe", "weight", "sum_accept", "tree_pe", "tree_weight", "accepted", "diverging",
           "ok")
ROW = {name: i for i, name in enumerate(ROWS)}
SCALAR = {name: i for i, name in enumerate(SCALARS)}


@dataclass(frozen=True)
class Layout:
    """Where each latent site lies in the flat vector.

    ``names`` and ``slices`` (offset, size, shape) follow the potential's inputs; the offsets
    follow ``blocks``, the mass matrix's blocks of site names."""

    names: tuple[str, ...]
    slices: tuple[tuple[int, int, tuple[int, ...]], ...]
    blocks: tuple[tuple[str, ...], ...]
    size: int
    diagonal: bool

    @classmethod
    def of(cls, names: tuple[str, ...], shapes: dict[str, tuple[int, ...]],
           inverse_mass: dict[tuple[str, ...], Any]) -> Layout:
        import math

        blocks = tuple(inverse_mass)
        flat = [name for block in blocks for name in block]
        if sorted(flat) != sorted(names):
            raise ValueError(f"the mass matrix's blocks {blocks} are not the potential's sites {names}")
        offsets, at = {}, 0
        for name in flat:
            offsets[name] = at
            at += math.prod(shapes[name])
        slices = tuple((offsets[n], math.prod(shapes[n]), tuple(shapes[n])) for n in names)
        diagonal = all(m.dim() == 1 for m in inverse_mass.values())
        return cls(names, slices, blocks, at, diagonal)

    def flatten(self, values: dict[str, Any]) -> Any:
        import torch

        return torch.cat([values[name].reshape(-1) for block in self.blocks for name in block])

    def sites(self, flat: Any) -> list[Any]:
        """Views of ``flat``, one per site, in the potential's order."""
        return [flat[o:o + n].view(shape) for o, n, shape in self.slices]

    def unflatten(self, flat: Any) -> dict[str, Any]:
        return dict(zip(self.names, self.sites(flat), strict=True))

    def mass_terms(self, inverse_mass: dict[tuple[str, ...], Any]) -> tuple[Any, Any, Any]:
        """``(inverse mass, M^1/2, M^-1/2)`` over the flat vector, computed as Pyro's
        ``BlockMassMatrix`` computes each block's (pyro/infer/mcmc/adaptation.py)."""
        import torch

        if self.diagonal:
            inverse = torch.cat([inverse_mass[b] for b in self.blocks])
            sqrt_inverse = inverse.sqrt()
            return inverse, sqrt_inverse.reciprocal(), sqrt_inverse
        inverses, sqrts, sqrt_inverses = [], [], []
        for block in self.blocks:
            matrix = inverse_mass[block]
            matrix = matrix if matrix.dim() == 2 else torch.diag(matrix)
            upper = torch.linalg.cholesky(matrix).t()
            identity = torch.eye(matrix.size(-1), dtype=matrix.dtype, device=matrix.device)
            inverses.append(matrix)
            sqrt_inverses.append(upper)
            sqrts.append(torch.linalg.solve_triangular(upper, identity, upper=True))
        return torch.block_diag(*inverses), torch.block_diag(*sqrts), torch.block_diag(*sqrt_inverses)


Potential = Callable[[Any], tuple[Any, Any, Any]]  # flat z -> (energy, ok, flat gradient)


def split_leaf(diagonal: bool, max_sliced_energy: float) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """One leapfrog step of a trajectory as two functions around its one potential evaluation:
    ``start(z, r, grad, step, inverse_mass) -> (z, r)`` moves to the point the potential is taken
    at, and ``finish`` takes the potential's ``(pe, ok, grad)`` there and builds the leaf.

    Split so that the two halves, the same for every model of a layout, are captured once and the
    model's captured potential is put between them (:mod:`.halves`); :func:`packed_leaf` joins
    them around a potential function. ``finish``'s other inputs: ``step`` is signed by the
    direction; ``write`` and ``check`` say which checkpoint this leaf writes and which ones end a
    subtree here (NumPyro's ``_leaf_idx_to_ckpt_idxs``); ``first`` and ``last`` whether it starts or
    ends its subtree; ``far_r`` is the unscaled momentum at the trajectory's other end;
    ``uniforms`` two draws on [0, 1): the subtree's choice, the trajectory's.
    """
    import torch

    def times(matrix: Any, vector: Any) -> Any:
        return matrix * vector if diagonal else matrix @ vector

    def start(z: Any, r: Any, grad: Any, step: Any, inverse_mass: Any) -> tuple[Any, Any]:
        # the leapfrog step's first half (pyro.ops.integrator.velocity_verlet)
        r = r - 0.5 * step * grad
        return z + step * times(inverse_mass, r), r

    def finish(z: Any, r: Any, pe: Any, ok: Any, grad: Any, step: Any, sqrt_inverse: Any, energy0: Any,
               proposal_z: Any, proposal_pe: Any, proposal_grad: Any, weight: Any, r_sum: Any,
               checkpoint_r: Any, checkpoint_r_sum: Any, sum_accept: Any, tree_z: Any, tree_pe: Any,
               tree_grad: Any, tree_weight: Any, tree_r_sum: Any, accepted: Any, far_r: Any, write: Any,
               check: Any, first: Any, last: Any, uniforms: Any) -> tuple[Any, ...]:
        r = r - 0.5 * step * grad  # the leapfrog step's second half
        r_unscaled = times(sqrt_inverse, r)
        energy = pe + 0.5 * r_unscaled.dot(r_unscaled)
        energy = torch.where(torch.isnan(energy), torch.full_like(energy, float("inf")), energy)
        delta = energy - energy0
        diverging = delta > max_sliced_energy
        leaf_weight = -delta  # multinomial sampling: the log weight of a leaf
        sum_accept = sum_accept + torch.exp(-delta).clamp(max=1.0)
        # the subtree: its proposal, its weight and its momentum sum
        weight = torch.where(first, leaf_weight, torch.logaddexp(weight, leaf_weight))
        take = first | (uniforms[0] < torch.exp(leaf_weight - weight))
        proposal_z = torch.where(take, z, proposal_z)
        proposal_pe = torch.where(take, pe, proposal_pe)
        proposal_grad = torch.where(take, grad, proposal_grad)
        r_sum = torch.where(first, r_unscaled, r_sum + r_unscaled)
        # the U-turns of the subtrees ending here, each from the checkpoint at its first leaf
        writes = write.unsqueeze(-1)
        checkpoint_r = torch.where(writes, r_unscaled, checkpoint_r)
        checkpoint_r_sum = torch.where(writes, r_sum, checkpoint_r_sum)
        rho = r_sum - checkpoint_r_sum + checkpoint_r - (checkpoint_r + r_unscaled) / 2
        turns = ((checkpoint_r * rho).sum(-1) <= 0) | ((rho * r_unscaled).sum(-1) <= 0)
        turning = (check & turns).any()
        # the whole trajectory, at the subtree's last leaf: Pyro's biased choice and U-turn check
        merge = last & ~turning & ~diverging
        chosen = merge & (uniforms[1] < torch.exp(weight - tree_weight))
        tree_z = torch.where(chosen, proposal_z, tree_z)
        tree_pe = torch.where(chosen, proposal_pe, tree_pe)
        tree_grad = torch.where(chosen, proposal_grad, tree_grad)
        accepted = accepted | chosen
        tree_r_sum = torch.where(merge, tree_r_sum + r_sum, tree_r_sum)
        rho = tree_r_sum - (far_r + r_unscaled) / 2
        whole_turning = merge & ((far_r.dot(rho) <= 0) | (r_unscaled.dot(rho) <= 0))
        tree_weight = torch.where(merge, torch.logaddexp(tree_weight, weight), tree_weight)
        stop = turning | diverging | whole_turning | ~ok
        return (z, r, grad, r_unscaled, pe, proposal_z, proposal_pe, proposal_grad, weight, r_sum,
                checkpoint_r, checkpoint_r_sum, sum_accept, tree_z, tree_pe, tree_grad, tree_weight,
                tree_r_sum, accepted, stop, diverging, ok)

    return start, finish


def checkpoint_masks(leaf: int, depth: int) -> tuple[list[bool], list[bool]]:
    """Which checkpoint leaf ``leaf`` of a subtree writes (at an even leaf), and which checkpoints
    start the subtrees that end at it (at an odd one), as NumPyro's ``_leaf_idx_to_ckpt_idxs``:
    ``depth`` checkpoints serve a subtree of ``2**depth`` leaves."""
    top = bin(leaf >> 1).count("1")
    ending = 0
    while leaf >> ending & 1:
        ending += 1
    write = [i == top and leaf % 2 == 0 for i in range(depth)]
    check = [top - ending < i <= top and leaf % 2 == 1 for i in range(depth)]
    return write, check


def packed_halves(diagonal: bool, max_sliced_energy: float) -> tuple[Callable[..., Any], Callable[..., Any]]:
    """:func:`split_leaf` with the leaf's state packed into a few tensors.

    ``before(*inputs) -> (z, r)``, and ``after(*inputs, z, r, pe, ok, grad) -> (vectors, scalars,
    checkpoints, stop)``, where ``inputs`` are ``(vectors, scalars, checkpoints, inverse_mass,
    sqrt_inverse, fixed, far_r, place, uniforms)``: ``vectors`` holds :data:`ROWS`, ``scalars``
    :data:`SCALARS` (rows and entries a leaf does not read are outputs only), ``checkpoints`` the
    momenta and sums, ``fixed`` the signed step size and the starting energy, ``place`` the leaf's
    write and check masks, then whether it is its subtree's first and last. Four outputs instead of
    twenty-two: inductor's Python allocates each output on every call, which cost more than the
    leaf's arithmetic (docs/benchmarks.md)."""
    start, finish = split_leaf(diagonal, max_sliced_energy)

    def before(vectors: Any, scalars: Any, checkpoints: Any, inverse_mass: Any, sqrt_inverse: Any,
               fixed: Any, far_r: Any, place: Any, uniforms: Any) -> tuple[Any, Any]:
        z, r, grad, *_ = vectors.unbind()
        return start(z, r, grad, fixed[0], inverse_mass)

    def after(vectors: Any, scalars: Any, checkpoints: Any, inverse_mass: Any, sqrt_inverse: Any,
              fixed: Any, far_r: Any, place: Any, uniforms: Any, z: Any, r: Any, pe: Any, ok: Any,
              grad: Any) -> tuple[Any, Any, Any, Any]:
        _, _, _, _, proposal_z, proposal_grad, r_sum, tree_z, tree_grad, tree_r_sum = vectors.unbind()
        _, proposal_pe, weight, sum_accept, tree_pe, tree_weight, accepted, _, _ = scalars.unbind()
        depth = checkpoints.shape[1]
        (z, r, grad, r_unscaled, pe, proposal_z, proposal_pe, proposal_grad, weight, r_sum, checkpoint_r,
         checkpoint_r_sum, sum_accept, tree_z, tree_pe, tree_grad, tree_weight, tree_r_sum, accepted, stop,
         diverging, ok) = finish(
            z, r, pe, ok, grad, fixed[0], sqrt_inverse, fixed[1], proposal_z, proposal_pe,
            proposal_grad, weight, r_sum, checkpoints[0], checkpoints[1], sum_accept, tree_z, tree_pe,
            tree_grad, tree_weight, tree_r_sum, accepted > 0.5, far_r, place[:depth], place[depth:2 * depth],
            place[2 * depth], place[2 * depth + 1], uniforms)
        vectors = _rows(z, r, grad, r_unscaled, proposal_z, proposal_grad, r_sum, tree_z, tree_grad,
                        tree_r_sum)
        flags = [flag.to(pe.dtype) for flag in (accepted, diverging, ok)]
        scalars = _rows(pe, proposal_pe, weight, sum_accept, tree_pe, tree_weight, *flags)
        return vectors, scalars, _rows(checkpoint_r, checkpoint_r_sum), stop

    return before, after


def packed_leaf(potential: Potential, diagonal: bool, max_sliced_energy: float) -> Callable[..., Any]:
    """One leaf, packed as :func:`packed_halves`, around ``potential``: ``(*inputs) -> (vectors,
    scalars, checkpoints, stop)``."""
    before, after = packed_halves(diagonal, max_sliced_energy)

    def packed(*inputs: Any) -> tuple[Any, Any, Any, Any]:
        z, r = before(*inputs)
        return after(*inputs, z, r, *potential(z))

    return packed


def _rows(*values: Any) -> Any:
    """``torch.stack(values)`` written pointwise (a chain of ``where`` on the row index): inductor
    fuses it into the kernel that computes the values, where a stack is lowered into one view of
    the output per value, each rebuilt by its Python on every call."""
    import torch

    index = torch.arange(len(values)).view(-1, *([1] * values[0].dim()))
    out = values[-1].expand(len(values), *values[-1].shape)
    for i in range(len(values) - 2, -1, -1):
        out = torch.where(index == i, values[i], out)
    return out
