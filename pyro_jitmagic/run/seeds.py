"""The process's random state: saved and restored as one, seeded as one, and torch's one-off start-up
paid without touching it, so that a cell's first timed step is not billed for it.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

from .process import PROCESS


@dataclass
class RandomState:
    torch: Any
    cuda: Any
    numpy: Any
    python: Any

    @classmethod
    def save(cls) -> RandomState:
        import torch

        cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
        return cls(torch.get_rng_state(), cuda, _numpy_state(), random.getstate())

    def restore(self) -> None:
        import torch

        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        if self.numpy is not None:
            import numpy

            numpy.random.set_state(self.numpy)
        random.setstate(self.python)


def _numpy_state() -> Any:
    try:
        import numpy
    except ImportError:
        return None
    return numpy.random.get_state()


def prime_once() -> float:
    """Pay torch's and Pyro's one-off start-up before the first timed step; the seconds it took.

    The first SVI step in a process takes over a second here (autograd and
    optimizer machinery starting up) whatever the model. Left in, it would be
    billed to the eager half of ``--compare`` and flatter the compiled one.
    A throwaway step on a one-variable model pays it; the param store and the
    random state are left as they were. Later calls cost nothing (and return 0).
    """
    if PROCESS.primed:
        return 0.0
    start = time.perf_counter()
    import pyro
    import pyro.distributions as dist
    import torch
    from pyro.infer import SVI, Trace_ELBO
    from pyro.optim import Adam  # type: ignore[attr-defined]  # made at import time by pyro

    site, param = "_pyrojit_prime", "_pyrojit_prime_loc"

    def model() -> None:
        pyro.sample(site, dist.Normal(0.0, 1.0))

    def guide() -> None:
        pyro.sample(site, dist.Normal(pyro.param(param, torch.tensor(0.0)), 1.0))

    rng = RandomState.save()
    store = pyro.get_param_store()
    try:
        SVI(model, guide, Adam({"lr": 0.1}), Trace_ELBO()).step()
    except Exception:  # a courtesy to the timing: never a reason to fail the cell
        pass
    finally:
        if param in store:
            del store[param]
        rng.restore()
    PROCESS.primed = True
    return time.perf_counter() - start


def seed_everything(seed: int) -> None:
    import pyro

    pyro.set_rng_seed(seed)  # torch, numpy and random together
