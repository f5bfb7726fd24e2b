"""NumPyro's ways through ``bench_backends.py``'s workloads: the same models, data and settings in JAX.

Optional: the ways run where NumPyro is installed (``pip install -e ".[bench]"``); the package
never needs it. JAX is held to one thread, as torch is in ``bench_backends.py``.

* ``numpyro update`` (simple SVI): ``svi.init``, then the jitted ``svi.update`` stepped from a
  Python loop that reads each loss as a float, as ``svi.step`` returns it; "step" is the median
  step after the first (which compiles), "total" includes it;
* ``numpyro run`` (simple SVI): ``svi.run``, the whole loop as one ``lax.scan``; "total" is its
  first call (compiling included); each call compiles its scan again, so "step" is the difference
  between a call of twice the steps and one of the steps, over the steps;
* ``numpyro`` (NUTS): ``MCMC(NUTS(model))`` with as many warm-up steps and samples as the other
  ways; "total" is the run (compiling included), "step" the run's time over its gradients
  (NumPyro counts each trajectory's leapfrog steps: one gradient each), all included.

The enumerated HMM has no NumPyro way here: NumPyro enumerates through ``funsor``, which this
benchmark does not install.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Any

WAYS = ("numpyro update", "numpyro run", "numpyro")


def available() -> str | None:
    """NumPyro's and JAX's versions, or None where NumPyro is not installed."""
    # one thread, as torch.set_num_threads(1) holds the other ways (set before JAX starts)
    os.environ.setdefault("XLA_FLAGS", "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1")
    try:
        import jax
        import numpyro
    except ImportError:
        return None
    jax.config.update("jax_platform_name", "cpu")
    jax.jit(lambda x: x + 1.0)(1.0).block_until_ready()  # JAX's start-up, paid before any timed run
    return f"NumPyro {numpyro.__version__} on JAX {jax.__version__}"


def applies(workload: str, way: str) -> bool:
    if workload.startswith("simple SVI"):
        return way in ("numpyro update", "numpyro run")
    return workload.startswith("NUTS") and way == "numpyro"


def simple_model(data: Any) -> None:
    import numpyro
    import numpyro.distributions as dist

    loc = numpyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = numpyro.sample("scale", dist.LogNormal(0.0, 3.0))
    with numpyro.plate("data", data.shape[0]):
        numpyro.sample("obs", dist.Normal(loc, scale), obs=data)


def eight_schools(sigma: Any, y: Any) -> None:
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 5.0))
    tau = numpyro.sample("tau", dist.HalfCauchy(5.0))
    with numpyro.plate("J", 8):
        theta = numpyro.sample("theta", dist.Normal(mu, tau))
        numpyro.sample("obs", dist.Normal(theta, sigma), obs=y)


def run(workload: str, way: str, sizes: dict[str, int], torch_args: tuple[Any, ...]) -> dict[str, Any]:
    """One run: the fields of ``bench_backends.Run``. ``torch_args`` are the torch ways' data."""
    import jax.numpy as jnp

    args = tuple(jnp.asarray(a.numpy()) for a in torch_args)
    if workload.startswith("NUTS"):
        model = eight_schools if workload.endswith("eight schools") else simple_model
        return _nuts(model, args, sizes["NUTS samples"])
    steps = sizes[workload]
    return (_svi_update if way == "numpyro update" else _svi_run)(args, steps)


def _svi(args: tuple[Any, ...]) -> Any:
    from numpyro.infer import SVI, Trace_ELBO
    from numpyro.infer.autoguide import AutoDiagonalNormal
    from numpyro.optim import Adam

    return SVI(simple_model, AutoDiagonalNormal(simple_model), Adam(0.01), Trace_ELBO())


def _svi_update(args: tuple[Any, ...], steps: int) -> dict[str, Any]:
    import jax

    start = time.perf_counter()
    svi = _svi(args)
    state = svi.init(jax.random.PRNGKey(1), *args)
    update = jax.jit(svi.update)
    times = []
    for _ in range(steps):
        t = time.perf_counter()
        state, loss = update(state, *args)
        float(loss)  # as svi.step returns it: the step has run
        times.append(time.perf_counter() - t)
    total, step = time.perf_counter() - start, statistics.median(times[1:])
    return {"total": total, "step": step, "compile": times[0] - step, "steps": steps,
            "note": "jitted svi.update from a Python loop"}


def _svi_run(args: tuple[Any, ...], steps: int) -> dict[str, Any]:
    import jax

    svi = _svi(args)

    def timed(n: int, seed: int) -> float:
        start = time.perf_counter()
        svi.run(jax.random.PRNGKey(seed), n, *args, progress_bar=False).losses.block_until_ready()
        return time.perf_counter() - start

    first = timed(steps, 1)
    # each call traces and compiles its scan again: a step is the difference of two calls (the
    # faster of three each); where the steps are too few to show, the longer call over its steps
    once = min(timed(steps, 2 + k) for k in range(3))
    twice = min(timed(2 * steps, 5 + k) for k in range(3))
    step = (twice - once) / steps if twice > once else twice / (2 * steps)
    return {"total": first, "step": step, "compile": first - steps * step, "steps": steps,
            "note": f"one lax.scan, compiled on every call; a call of {steps:,} steps again: {once:.2f} s"}


def _nuts(model: Any, args: tuple[Any, ...], samples: int) -> dict[str, Any]:
    import jax
    import numpy as np
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(NUTS(model), num_warmup=samples, num_samples=samples, progress_bar=False)
    start = time.perf_counter()
    mcmc.warmup(jax.random.PRNGKey(1), *args, collect_warmup=True, extra_fields=("num_steps",))
    gradients = int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    mcmc.run(mcmc.post_warmup_state.rng_key, *args, extra_fields=("num_steps",))
    jax.block_until_ready(mcmc.get_samples())
    total = time.perf_counter() - start
    gradients += int(np.sum(mcmc.get_extra_fields()["num_steps"]))
    return {"total": total, "step": total / gradients, "evals": gradients,
            "note": f"{gradients} gradients; per gradient: the whole run's time over them"}
