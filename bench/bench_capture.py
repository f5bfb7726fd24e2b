"""What a capture costs: make_fx's own fake values against one fake mode per capture, side by side.

A capture traces the whole step (or the NUTS potential and its gradient) with torch's
``make_fx`` in "real" mode. make_fx records every node's layout as a fake tensor; with no fake
mode active it builds a new ``FakeTensorMode`` per node (each one snapshots the Python stack)
and dispatches an ``empty_strided`` through it. ``pyro_jitmagic.compat.capture`` makes each
value directly, in one fake mode per capture (``_one_fake_mode``). This script times captures
both ways, alternating, on the tutorial's workloads:

* simple SVI: the tutorial's Gaussian model, ``AutoDiagonalNormal``, ``Trace_ELBO``, Adam;
* HMM: its HMM (16 states, ``TraceEnum_ELBO(max_plate_nesting=1)``), one capture per sequence
  length (24, 48 and 72: a graph that grows with the length);
* NUTS: the potential and its gradient of the tutorial's model (``compile_potential``).

Each figure is the median over ``--rounds`` captures of one way; ratios are within a row.

Usage::

    python bench/bench_capture.py               # 3 rounds
    python bench/bench_capture.py --quick       # a smoke test of the script, not a measurement
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))


def svi_capture(length: int | None) -> Callable[[], float]:
    """A function that captures one SVI step and returns the capture's seconds (``length``: the
    HMM's sequence length; None: the simple model)."""
    import pyro
    import torch
    from bench_backends import hmm_model, simple_data, simple_model
    from pyro import poutine
    from pyro.infer import SVI, Trace_ELBO, TraceEnum_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from pyro.optim import Adam

    from pyro_jitmagic.wholestep.capture import capture_svi_step

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    args: tuple[Any, ...]
    if length is None:
        svi = SVI(simple_model, AutoDiagonalNormal(simple_model), Adam({"lr": 0.01}), Trace_ELBO())
        args, kwargs = (simple_data(),), {}
    else:
        guide = AutoDiagonalNormal(poutine.block(hmm_model, expose=["trans", "emit_scale", "emit_loc"]))
        svi = SVI(hmm_model, guide, Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=1))
        args, kwargs = (torch.randn(length),), {"num_sequences": 75, "length": length}
    for _ in range(3):  # the guide's prototype and the optimizer's state
        svi.step(*args, **kwargs)
    return lambda: capture_svi_step(svi, args, kwargs).capture_seconds


def potential_capture() -> Callable[[], float]:
    from bench_backends import simple_data, simple_model
    from pyro.infer.mcmc.util import initialize_model

    from pyro_jitmagic.wholestep import compile_potential

    init, potential_fn, _, _ = initialize_model(simple_model, (simple_data(),))
    return lambda: compile_potential(potential_fn, init, backend="step").capture_seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="one round, short sequences: a smoke test")
    options = parser.parse_args(argv)

    import torch
    from bench_svi import load_average, machine_lines

    from pyro_jitmagic.compat import capture as compat

    torch.set_num_threads(1)
    rounds = 1 if options.quick else options.rounds
    lengths = (6,) if options.quick else (24, 48, 72)
    # each case set up just before it runs: the SVI cases share Pyro's param store
    cases: dict[str, Callable[[], Callable[[], float]]] = {"simple SVI step": lambda: svi_capture(None)}
    cases.update({f"HMM step, length {n}": (lambda n=n: svi_capture(n)) for n in lengths})
    cases["NUTS potential"] = potential_capture
    ways = {"make_fx's": contextlib.nullcontext, "one fake mode": compat._one_fake_mode}

    print("\n".join(machine_lines(1)))
    print(f"method:   each capture {rounds} time(s) each way, alternating; medians")
    print(f"load average before: {load_average()}")
    print(f"\n{'capture':24s}{'make_fx':>12s}{'one mode':>12s}{'ratio':>8s}")
    original = compat._one_fake_mode
    try:
        for name, setup in cases.items():
            capture = setup()
            seconds: dict[str, list[float]] = {way: [] for way in ways}
            for r in range(rounds):
                for way in (list(ways) if r % 2 == 0 else list(reversed(ways))):
                    compat._one_fake_mode = ways[way]  # type: ignore[assignment]
                    seconds[way].append(capture())
            before, after = (statistics.median(seconds[way]) for way in ways)
            print(f"{name:24s}{before:10.3f} s{after:10.3f} s{after / before:8.2f}", flush=True)
    finally:
        compat._one_fake_mode = original
    print(f"load average after:  {load_average()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
