"""Pyro's HMC and NUTS kernel state, as a compiled trajectory reads and writes it.

``HMC.sample`` and ``NUTS.sample`` (pyro/infer/mcmc/hmc.py, nuts.py) keep the kernel's last state
in a cache, its tree limits and its run's tallies (iteration, acceptances, divergences) in private
attributes, and hand each warm-up iteration to its adapter. A compiled trajectory does exactly
what those methods do around the trajectory, through these functions, so that ``MCMC``'s progress
bar, diagnostics and a later ``MCMC.run`` find the kernel as Pyro's own ``sample`` leaves it.
"""

from __future__ import annotations

from typing import Any


def last_state(kernel: Any) -> tuple[Any, Any, Any]:
    """``(z, potential_energy, z_grads)`` of the kernel's last accepted state (None when cleared)."""
    return kernel._fetch_from_cache()


def remember(kernel: Any, z: dict[str, Any], potential_energy: Any, z_grads: dict[str, Any]) -> None:
    """Make ``z`` the kernel's last state, as NUTS does at each accepted proposal."""
    kernel._cache(z, potential_energy, z_grads)


def tree_limits(kernel: Any) -> tuple[int, float]:
    """``(max_tree_depth, max_sliced_energy)``: when NUTS stops doubling (1 for HMC, which does not
    double), when a leaf diverges."""
    return getattr(kernel, "_max_tree_depth", 1), float(kernel._max_sliced_energy)


def in_warmup(kernel: Any) -> bool:
    """Whether this iteration is a warm-up one (NUTS turns Pyro's validation off during those)."""
    return kernel._t < kernel._warmup_steps


def iteration_ends(kernel: Any, z: dict[str, Any], z_grads: dict[str, Any], accept_prob: Any,
                   accepted: bool, diverging: bool) -> None:
    """The end of ``HMC.sample`` and ``NUTS.sample``: the divergence, the iteration and acceptance
    tallies, and the adapter's step (step size, mass matrix) during warm-up."""
    if diverging and kernel._t >= kernel._warmup_steps:
        kernel._divergences.append(kernel._t - kernel._warmup_steps)
    kernel._t += 1
    if kernel._t > kernel._warmup_steps:
        n = kernel._t - kernel._warmup_steps
        if accepted:
            kernel._accept_cnt += 1
    else:
        n = kernel._t
        kernel._adapter.step(kernel._t, z, accept_prob, z_grads)
    kernel._mean_accept_prob += (accept_prob.item() - kernel._mean_accept_prob) / n
