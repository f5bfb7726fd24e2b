"""The inductor backend: the same agreement with eager as the step backend, random draws from eager's
stream, its on-disk cache, and codegen off the calling thread. Cold compiles take seconds to minutes."""

from __future__ import annotations

import functools
import threading
import time

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from cases import assert_losses_agree, assert_state_agrees, gaussian_svi, hmm_svi, train
from pyro.infer import SVI, Trace_ELBO
from torch.distributions import constraints

from pyro_jitmagic.wholestep import compile_svi_step, cxx_compiler

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(cxx_compiler() is None, reason="inductor needs a C++ compiler")]


def agree(make, steps=200, rtol=1e-5):
    from torch._inductor import config

    before = config.fallback_random
    eager = train(make, steps)
    compiled = train(make, steps, compile_with="inductor")
    step = compiled.compiled
    assert (step.backend, step.fallback, step.steps) == ("inductor", None, steps - 1)
    assert step.kernels and step.kernels >= 1 and step.cache in ("cold", "warm")
    assert config.fallback_random == before  # scoped to the compile
    assert_losses_agree(eager, compiled)
    assert_state_agrees(eager, compiled, rtol=rtol, atol=1e-5)
    return compiled


def test_simple_model_and_its_cache():
    make = functools.partial(gaussian_svi, "AutoDiagonalNormal", "Adam")
    agree(make)
    again = train(make, steps=3, compile_with="inductor")
    assert again.compiled.cache == "warm"


def test_hand_guide_with_clipped_adam():
    agree(functools.partial(gaussian_svi, "hand guide", "ClippedAdam"))


def test_after_its_first_call_a_step_calls_inductors_code_directly():
    # torch's wrappers around the generated code are skipped; the tensors the graph writes still
    # count as written for autograd, once a call, as the wrappers count them
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi, args, kwargs = gaussian_svi("AutoDiagonalNormal", "Adam")
    svi.step(*args, **kwargs)
    step = compile_svi_step(svi, args, kwargs, backend="inductor")
    wrapped = step._run
    written = [step._inputs[i] for i in step._written]
    assert written  # params and optimizer state

    def bumps(call):
        before = [t._version for t in written]
        call()
        return [t._version - v for t, v in zip(written, before, strict=True)]

    step(*args, **kwargs)  # through torch's wrappers (and the sentinel's first check)
    assert step._run is not wrapped  # the direct call from now on
    with torch.no_grad():
        by_wrappers = bumps(lambda: wrapped(*step._inputs))
    assert bumps(lambda: step(*args, **kwargs)) == by_wrappers == [1] * len(written)
    # the direct call holds over the buffers only its kernels use: the same numbers as torch's call
    # (compat.pooled), call after call
    for _ in range(3):
        state, inputs = torch.get_rng_state(), [t.clone() for t in step._inputs]
        with torch.no_grad():
            expected = wrapped(*inputs)[0]
            torch.set_rng_state(state)
            inputs = [t.clone() for t in step._inputs]
            assert torch.equal(step._run(*inputs)[0], expected)


def dirichlet_model(data):
    probs = pyro.sample("probs", dist.Dirichlet(torch.ones(3)))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Categorical(probs), obs=data)


def dirichlet_guide(data):
    concentration = pyro.param("concentration", torch.ones(3), constraint=constraints.positive)
    pyro.sample("probs", dist.Dirichlet(concentration))  # _standard_gamma draws


def test_gamma_draws_follow_eagers_stream():
    def make():
        data = torch.tensor([0, 1, 1, 2, 1, 1, 0, 1])
        return SVI(dirichlet_model, dirichlet_guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO()), (data,), {}

    agree(make)


def test_enumerated_hmm():
    agree(hmm_svi, steps=100, rtol=1e-4)


def _start_in_the_background():
    """An SVI's first step eager, then its whole step on TorchScript while inductor compiles it."""
    make = functools.partial(gaussian_svi, "AutoNormal", "Adam")
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi, args, _ = make()
    losses = [svi.step(*args)]
    return make, args, losses, compile_svi_step(svi, args, backend="inductor", background=True)


def test_codegen_in_the_background_leaves_the_random_stream_to_the_steps(tmp_path, monkeypatch):
    # inductor resets the global generator at the end of a compile: from a background thread that
    # would rewind the draws of every step taken meanwhile, and the steps after repeat old noise
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # cold: the worker compiles
    make, args, losses, compiled = _start_in_the_background()
    while compiled.backend != "inductor" and compiled.fallback is None and len(losses) < 50_000:
        losses.append(compiled(*args))  # on TorchScript while inductor compiles
        time.sleep(0.005)  # fewer steps for eager to replay below
    switched_at = len(losses)
    losses += [compiled(*args) for _ in range(20)]

    assert compiled.backend == "inductor" and compiled.fallback is None
    # the cold codegen ran in a worker process, and this one loaded its kernels from the disk cache
    assert compiled.codegen_in_worker and compiled.worker_error is None and compiled.cache == "cold"
    assert compiled.served_from_disk  # the same cache key in both processes
    assert "in a worker process, cold disk cache" in compiled.codegen_summary()
    assert switched_at > 2  # steps did run during the compile
    assert compiled.steps == len(losses) - 1
    eager = train(make, steps=len(losses))
    assert losses == pytest.approx(eager.losses, rel=1e-4)
    from torch._dynamo import utils

    assert not hasattr(utils.preserve_rng_state, "__pyrojit_original__")  # torch's own again


def test_a_cached_graph_runs_as_captured_until_its_kernels_load(tmp_path, monkeypatch):
    from pyro_jitmagic.wholestep import backends

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(backends, "AS_CAPTURED_NODES", 0)  # the simple model's graph counts as large
    train(functools.partial(gaussian_svi, "AutoNormal", "Adam"), steps=3, compile_with="inductor")
    make, args, losses, compiled = _start_in_the_background()  # the same graph: in the cache now
    assert compiled.as_captured and compiled.compiling
    while compiled.backend != "inductor" and compiled.fallback is None and len(losses) < 50_000:
        losses.append(compiled(*args))  # as captured while inductor loads the kernels
        time.sleep(0.005)
    losses += [compiled(*args) for _ in range(10)]

    assert (compiled.backend, compiled.cache, compiled.as_captured) == ("inductor", "warm", False)
    assert compiled.steps == len(losses) - 1
    assert losses == pytest.approx(train(make, steps=len(losses)).losses, rel=1e-4)


def test_a_compile_on_its_own_thread_never_switches_anomaly_detection_on(tmp_path, monkeypatch):
    # AOTAutograd traces a graph under detect_anomaly, a switch of the whole process: from a compile
    # in the background, the cell's steps meanwhile ran eager under it (slowly, blamed on the user)
    from pyro_jitmagic.compat import capture as compat

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path))  # cold: AOTAutograd traces the graph
    switched = []
    set_anomaly = torch.set_anomaly_enabled
    monkeypatch.setattr(torch, "set_anomaly_enabled", lambda on, *args: (
        switched.append((threading.current_thread().name, on)), set_anomaly(on, *args))[1])
    graph = torch.fx.symbolic_trace(lambda x: (x * 2.0).sin() + 1.0)
    compiled = []
    thread = threading.Thread(target=lambda: compiled.append(compat.inductor_compile(graph, [torch.ones(3)])),
                              name="compiling")
    thread.start()
    thread.join()
    assert compiled and switched == []
    assert torch.autograd.detect_anomaly.__module__ == "torch.autograd.anomaly_mode"  # torch's own again


def test_nuts_potential():
    import models
    from pyro.infer.mcmc.util import initialize_model
    from pyro.ops.integrator import potential_grad
    from test_potential import nuts_samples, random_points

    from pyro_jitmagic.wholestep import compile_potential

    args = (models.data(100),)
    init, potential_fn, _, _ = initialize_model(models.gaussian, args)
    compiled = compile_potential(potential_fn, init, backend="inductor")
    assert compiled.backend == "inductor"
    for z in random_points(init):
        grads, energy = compiled(z)
        expected_grads, expected = potential_grad(potential_fn, {k: v.clone() for k, v in z.items()})
        torch.testing.assert_close(energy, expected, rtol=1e-5, atol=1e-5)
        for k in z:
            torch.testing.assert_close(grads[k], expected_grads[k], rtol=1e-4, atol=1e-4)
    # a NUTS path parts from eager's at the first float difference: compare the posteriors
    eager, _ = nuts_samples(models.gaussian, args, num=100)
    samples, potential = nuts_samples(models.gaussian, args, backend="inductor", num=100)
    assert potential.backend == "inductor" and potential.calls > 100
    for name in eager:
        assert abs(samples[name].mean() - eager[name].mean()) < eager[name].std()


def test_a_worker_that_cannot_start_costs_only_its_time(monkeypatch):
    import sys

    monkeypatch.setattr(sys, "executable", "/nonexistent/python")  # the worker cannot start
    make, args, losses, compiled = _start_in_the_background()
    losses.append(compiled(*args))
    assert compiled.wait(timeout=900)
    losses += [compiled(*args) for _ in range(10)]

    assert compiled.backend == "inductor" and not compiled.codegen_in_worker
    assert "the worker did not finish" in compiled.worker_error
    assert "compiled in this process" in compiled.codegen_summary()
    assert losses == pytest.approx(train(make, steps=len(losses)).losses, rel=1e-4)


GLOBAL_BATCH = torch.zeros(5)


def _global_batch_model():
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    with pyro.plate("data", len(GLOBAL_BATCH)):
        pyro.sample("obs", dist.Normal(loc, 1.0), obs=GLOBAL_BATCH)


def _fresh_draw_guide():
    # the initial value is drawn on every call and used once: eager's stream moves every step
    loc_loc = pyro.param("loc_loc", torch.randn(()))
    pyro.sample("loc", dist.Normal(loc_loc, 1.0))


def test_a_global_tensor_changed_in_place_and_unused_draws_are_eagers_on_the_kernels(monkeypatch):
    # inductor deep-copies a graph's constants: a tensor the model reads from a global is an input of
    # its kernels instead, read afresh every step; and the draw the guide never uses is kept
    def make():
        monkeypatch.setitem(globals(), "GLOBAL_BATCH", torch.linspace(-1.0, 1.0, 5))
        svi = SVI(_global_batch_model, _fresh_draw_guide, pyro.optim.Adam({"lr": 0.05}), Trace_ELBO())
        return svi, (), {}

    def changes(svi, step):
        if step % 20 == 0:
            GLOBAL_BATCH.mul_(1.5)  # in place: the kernels' input changes

    eager = train(make, steps=100, between=changes)
    eager_rng = torch.get_rng_state()
    compiled = train(make, steps=100, compile_with="inductor", between=changes)
    assert compiled.compiled.backend == "inductor" and compiled.compiled.eager_steps == 0
    assert_losses_agree(eager, compiled)
    assert torch.equal(torch.get_rng_state(), eager_rng)  # the unused draws were drawn
