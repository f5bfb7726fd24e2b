"""A NUTS kernel's compiled trajectory (on TorchScript), and the check that its leaf graph computes
what the eager leaf computes: shared by the trajectory's and the kept halves' tests."""

from __future__ import annotations

import models
import torch
from pyro.infer.mcmc import NUTS

from pyro_jitmagic.wholestep import compile_potential
from pyro_jitmagic.wholestep.trajectory import compile_trajectory


def compiled_trajectory(model=models.gaussian, n=50):
    kernel = NUTS(model)
    kernel.setup(10, models.data(n))
    potential = compile_potential(kernel, kernel.initial_params, backend="step")
    return compile_trajectory(kernel, potential, backend="step")


def leaf_inputs(trajectory, seed=3, count=5):
    """Inputs of a leaf near the captured example's, the mass terms kept (positive definite)."""
    examples = trajectory.captured.example_inputs
    generator = torch.Generator().manual_seed(seed)
    for _ in range(count):
        yield [example if i in (3, 4) else
               torch.rand(example.shape, generator=generator) < 0.5 if example.dtype == torch.bool else
               example + 0.3 * torch.rand(example.shape, generator=generator)
               for i, example in enumerate(examples)]


def assert_the_leaf_is_eagers(trajectory):
    for inputs in leaf_inputs(trajectory):
        compiled, expected = trajectory._run(*inputs), trajectory._eager_leaf(*inputs)
        names = ("vectors", "scalars", "checkpoints", "stop")
        for name, got, want in zip(names, compiled, expected, strict=True):
            torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, msg=f"leaf output {name}")
