"""Where the params went during a run: what ``--compare`` judges final params against.

Two right runs whose random draws part (a NUTS path, a discrete draw that flips) end with
different params. How far apart is too far depends on how much the params still move at the end
of a run. So each run keeps evenly spaced snapshots of the param store, thinned as it grows and
within a memory budget, and the last quarter of them measures the spread.
"""

from __future__ import annotations

import math
from typing import Any

#: Snapshots kept (between ``KEEP`` and ``2 * KEEP``), and the memory they may use.
KEEP = 40
BUDGET_BYTES = 32_000_000


class ParamTrail:
    """Call it after every step; it snapshots the param store at a stride that doubles as the run grows."""

    def __init__(self, keep: int = KEEP, budget_bytes: int = BUDGET_BYTES) -> None:
        self.keep = keep
        self.budget_bytes = budget_bytes
        self.stride = 1
        self.steps = 0
        self.snapshots: list[tuple[int, tuple[str, ...], Any]] = []

    def __call__(self) -> None:
        self.steps += 1
        if self.steps % self.stride:
            return
        import pyro
        import torch

        named = sorted(pyro.get_param_store().named_parameters())
        if not named:
            return
        flat = torch.cat([value.detach().reshape(-1).float() for _, value in named])
        self.snapshots.append((self.steps, tuple(name for name, _ in named), flat))
        keep = max(4, min(self.keep, self.budget_bytes // max(1, 8 * flat.numel())))
        if len(self.snapshots) >= 2 * keep:
            self.snapshots = self.snapshots[1::2]
            self.stride *= 2

    def tail_spread(self) -> tuple[tuple[str, ...], Any] | None:
        """(names, per-element standard deviation) over the last quarter of the run, when measurable."""
        if not self.snapshots:
            return None
        names = self.snapshots[-1][1]
        tail = [flat for step, n, flat in self.snapshots if n == names and step > 0.75 * self.steps]
        if len(tail) < 3:
            return None
        import torch

        return names, torch.stack(tail).std(0)


def spread_ratio(eager: ParamTrail, compiled: ParamTrail) -> float:
    """Largest difference of the runs' final params over their spread at the end of the runs
    (nan when not measurable: too few steps, or params that differ in name or size)."""

    a, b = eager.tail_spread(), compiled.tail_spread()
    if a is None or b is None or a[0] != b[0] or a[1].shape != b[1].shape:
        return math.nan
    last_a, last_b = eager.snapshots[-1][2], compiled.snapshots[-1][2]
    spread = a[1] + b[1]
    difference = (last_a - last_b).abs()
    moving = spread > 0
    if bool((difference[~moving] > 0).any()):
        return math.inf
    if not bool(moving.any()):
        return 0.0
    return float((difference[moving] / spread[moving]).max())
