"""How close two runs of the same float computation must be: tolerances from rounding, not from a CPU.

Two correct evaluations of the same sums (another vector width, a fused kernel) differ by a few
units of the dtype's epsilon times the magnitudes summed, and each step adds its own. So a tensor's
elements are compared to within :data:`ROUNDING_EPS` epsilons of its largest magnitude, times the
square root of the steps taken (independent roundings add up as a random walk): an element that is
a small difference of large terms (Adam's exp_avg near a sign change) carries the absolute error of
its neighbours, and neither its own size nor the CPU the test was written on is the yardstick.
"""

from __future__ import annotations

import math

import torch

ROUNDING_EPS = 16.0


def rounding_atol(expected: torch.Tensor, steps: int) -> float:
    """The absolute tolerance of a tensor computed over ``steps`` steps, from its dtype and magnitude."""
    if not expected.is_floating_point() or expected.numel() == 0:
        return 0.0
    scale = expected.detach().abs().max().item()
    return ROUNDING_EPS * torch.finfo(expected.dtype).eps * math.sqrt(max(steps, 1)) * scale
