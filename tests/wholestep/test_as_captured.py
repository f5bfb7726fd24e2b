"""A large graph whose kernels inductor's disk cache holds runs as captured while they load: no
TorchScript build first, the same losses as eager step by step, inductor's kernels from the first
step after they are ready, and TorchScript after all when they do not come.

Inductor itself is stood in for (its loading is what the slow tier times): the "kernels" that arrive
are the graph on TorchScript, which computes what inductor's would.
"""

from __future__ import annotations

import functools

import pyro
import pytest
from cases import gaussian_svi, train
from standins import Holds, Loading

import pyro_jitmagic
from pyro_jitmagic import AutoPolicy
from pyro_jitmagic.wholestep import backends, compile_svi_step

MAKE = functools.partial(gaussian_svi, "AutoNormal", "Adam")
TORCHSCRIPT = backends.torchscript  # (the tests count the builds the step makes)


@pytest.fixture
def cached(monkeypatch):
    """Every graph counts as large, inductor's cache holds it, and its load is the test's to end;
    TorchScript builds are counted."""
    from pyro_jitmagic.wholestep import memory

    Loading.started = []
    builds = []

    def counted(graph, example_inputs):
        builds.append(graph)
        return TORCHSCRIPT(graph, example_inputs)

    monkeypatch.setattr(backends, "AS_CAPTURED_NODES", 0)
    monkeypatch.setattr(backends, "Background", Loading)
    monkeypatch.setattr(backends, "torchscript", counted)
    monkeypatch.setattr(backends, "no_cxx_reason", lambda: None)
    monkeypatch.setattr(memory, "shared", lambda: Holds())
    return builds


def _start():
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi, args, _ = MAKE()
    losses = [svi.step(*args)]
    return args, losses, compile_svi_step(svi, args, backend="inductor", background=True)


def test_the_steps_run_as_captured_until_the_kernels_load_then_on_them(cached):
    args, losses, compiled = _start()
    assert compiled.as_captured and compiled.compiling and cached == []  # nothing built
    losses += [compiled(*args) for _ in range(10)]
    assert compiled.backend == "step" and cached == []
    (loading,) = Loading.started
    loading.arrive()
    losses += [compiled(*args) for _ in range(10)]

    assert (compiled.backend, compiled.as_captured, compiled.cache) == ("inductor", False, "warm")
    assert compiled.steps == 20 and compiled.eager_steps == 0
    assert losses == pytest.approx(train(MAKE, steps=21).losses, rel=1e-5)


def test_kernels_that_fail_to_load_leave_the_steps_on_torchscript(cached):
    args, losses, compiled = _start()
    losses += [compiled(*args) for _ in range(3)]
    Loading.started[0].fail()
    losses += [compiled(*args) for _ in range(3)]

    assert (compiled.backend, compiled.as_captured) == ("step", False)
    assert len(cached) == 1  # built once, when the kernels failed
    assert compiled.fallback == "inductor failed: RuntimeError: no kernels"
    assert losses == pytest.approx(train(MAKE, steps=7).losses, rel=1e-5)


def test_kernels_that_take_long_leave_the_graph_as_captured_for_torchscript(cached):
    # the cache was expected to hold them and did not: a cold codegen takes minutes
    args, losses, compiled = _start()
    losses += [compiled(*args) for _ in range(backends.AS_CAPTURED_STEPS + 5)]
    assert compiled.compiling and not compiled.as_captured and len(cached) == 1
    Loading.started[0].arrive()
    losses.append(compiled(*args))
    assert compiled.backend == "inductor"
    assert losses == pytest.approx(train(MAKE, steps=len(losses)).losses, rel=1e-5)


def test_a_small_graph_or_one_not_in_the_cache_builds_torchscript_first(cached, monkeypatch):
    from pyro_jitmagic.wholestep import memory

    monkeypatch.setattr(backends, "AS_CAPTURED_NODES", 10**9)
    _, _, compiled = _start()
    assert not compiled.as_captured and len(cached) == 1 and compiled.compiling

    monkeypatch.setattr(backends, "AS_CAPTURED_NODES", 0)
    monkeypatch.setattr(memory, "shared", lambda: Holds(False))
    _, _, compiled = _start()
    assert not compiled.as_captured and len(cached) == 2


def test_auto_climbing_to_a_cached_graph_loads_its_kernels_from_the_capture_on(cached):
    # --auto knows from its memory that inductor's cache holds this signature's graph: it captures
    # with inductor loading at once, and no TorchScript build between
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi, args, _ = MAKE()
    policy = AutoPolicy(memory=Holds(), prior_capture_steps=0.0)
    with pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
        losses = [svi.step(*args) for _ in range(10)]
        Loading.started[0].arrive()
        losses += [svi.step(*args) for _ in range(5)]

    (entry,) = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values()
    assert not any(g is entry.compiled.captured.graph for g in cached)  # (torch's start-up builds one)
    (row,) = [d for d in run.report.auto if d.path]
    assert row.path[1].startswith("step at step 4 (captured in ")
    assert row.path[2:] == ("inductor's kernels loading from step 4, the graph run as captured meanwhile",
                            "inductor at step 11 (codegen 0.4 s in the background, warm disk cache)")
    assert "its kernels came from inductor's disk cache" in row.why
    assert any("the steps run the captured graph as it is" in n for n in run.report.notes)
    assert losses == pytest.approx(train(MAKE, steps=15).losses, rel=1e-5)


def test_auto_expecting_a_cached_graph_that_is_not_says_its_codegen_started(cached, monkeypatch):
    # the memory of earlier runs named another graph for this signature (its code changed since)
    from pyro_jitmagic.wholestep import memory

    class Remembers(Holds):
        def inductor_holds(self, digest):
            return digest == "an older graph"

        def graph(self, key):
            return "an older graph"

    remembers = Remembers()
    monkeypatch.setattr(memory, "shared", lambda: remembers)
    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    svi, args, _ = MAKE()
    policy = AutoPolicy(memory=remembers, prior_capture_steps=0.0)
    with pyro_jitmagic.compiled(auto=policy, backend="inductor") as run:
        losses = [svi.step(*args) for _ in range(10)]

    (entry,) = pyro_jitmagic.run.process.PROCESS.session.whole_steps.of(svi).values()
    assert not entry.compiled.as_captured  # on TorchScript, built at the capture
    assert any(g is entry.compiled.captured.graph for g in cached)
    (row,) = [d for d in run.report.auto if d.path]
    assert row.path[2:] == ("inductor's codegen from step 4",)
    assert "inductor's codegen started with the capture, expecting a warm cache" in row.why
    assert losses == pytest.approx(train(MAKE, steps=10).losses, rel=1e-5)
