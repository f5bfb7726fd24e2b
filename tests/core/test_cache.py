"""The compile caches: what they hold, what they cost, clearing them, and the recompilation watch."""

from __future__ import annotations

import gc
import warnings
import weakref

import models
import pyro
import pytest
import torch
from pyro.infer import SVI, JitTrace_ELBO, Trace_ELBO, TraceEnum_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

from pyro_jitmagic import compiled
from pyro_jitmagic.inspector import Inspector
from pyro_jitmagic.run.cache_stats import RecompilationWarning
from pyro_jitmagic.run.process import PROCESS


def snapshot(namespace=None):
    return Inspector(PROCESS.session).snapshot(namespace or {})


def functions_of(snap, owner_prefix):
    return [f for f in snap.functions if f.owner.startswith(owner_prefix)]


def test_a_compiled_svi_shows_its_entry_with_hits_and_compile_time():
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    data = models.data()
    with compiled(backend="pyro"):
        for _ in range(5):
            svi.step(data)
    (f,) = functions_of(snapshot({"svi": svi}), "svi ")
    assert f.owner == "svi (Trace_ELBO, compiled by %%pyrojit as JitTrace_ELBO)"
    assert f.serves == "model=gaussian, guide=gaussian_guide"
    (entry,) = f.entries
    assert entry.key == "1 positional arg"
    assert entry.hits == 5 and entry.compile_seconds > 0 and entry.last_hit is not None
    assert entry.graph_nodes > 10 and entry.code.startswith("def ")
    assert entry.input_shapes[-1] == "(20,)"  # the data, after the two params


def test_a_hand_built_jit_elbo_outside_any_cell_shows_unknown_costs():
    elbo = JitTrace_ELBO()
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), elbo)
    svi.step(models.data())  # no %%pyrojit: nothing was counted
    (f,) = functions_of(snapshot({"my_elbo": elbo}), "my_elbo ")
    (entry,) = f.entries
    assert (entry.compile_seconds, entry.hits, entry.last_hit) == (None, None, None)
    text = str(snapshot({"my_elbo": elbo}))
    assert "compiled in unknown, unknown hits" in text


def test_hmm_has_one_entry_per_length_with_its_hits():
    guide = AutoDiagonalNormal(pyro.poutine.block(models.hmm, expose=["trans", "emit_loc", "emit_scale"]))
    svi = SVI(models.hmm, guide, Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=1))
    sequences = [torch.randn(n) for n in [4] * 5 + [6] * 2 + [8]]
    with compiled(backend="pyro"):
        for _ in range(2):  # two epochs
            for seq in sequences:
                svi.step(seq, num_sequences=len(sequences), length=len(seq))
    (f,) = functions_of(snapshot({"hmm_svi": svi}), "hmm_svi ")
    hits = {e.key: e.hits for e in f.entries}
    assert hits == {"1 positional arg, length=4, num_sequences=8": 10,
                    "1 positional arg, length=6, num_sequences=8": 4,
                    "1 positional arg, length=8, num_sequences=8": 2}


def test_nuts_potential_appears_with_its_evaluations():
    from pyro.infer.mcmc import MCMC, NUTS

    kernel = NUTS(models.gaussian)
    mcmc = MCMC(kernel, num_samples=5, warmup_steps=5, disable_progbar=True)
    with compiled(backend="pyro") as run:
        mcmc.run(models.data())
    (f,) = functions_of(snapshot({"kernel": kernel}), "kernel ")
    assert f.kind == "potential" and f.serves == "model=gaussian"
    (entry,) = f.entries
    assert entry.hits == run.report.mcmc_runs[0].potential_evals > 0
    assert entry.compile_seconds > 0


def test_clearing_frees_the_traces_and_the_next_step_compiles_again():
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    data = models.data()
    with compiled(backend="pyro"):
        svi.step(data)
    inspector = Inspector(PROCESS.session)
    (f,) = functions_of(inspector.snapshot({"svi": svi}), "svi ")
    companion = next(c for e, _, _, c in PROCESS.session.companions() if e is svi.loss_and_grads.__self__)
    traced = weakref.ref(next(iter(companion._loss_and_surrogate_loss.compiled.values())))

    assert inspector.clear(f.ident) == 1
    gc.collect()
    assert traced() is None
    assert functions_of(inspector.snapshot({"svi": svi}), "svi ") == []
    with compiled(backend="pyro") as run:
        svi.step(data)
    assert run.report.compile_count == 1


def test_a_keyword_that_changes_every_step_is_caught_once():
    def model(data, noise=0.0):
        models.gaussian(data + noise)

    def guide(data, noise=0.0):
        models.gaussian_guide(data)

    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    data = models.data()
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("always")
        with compiled(backend="pyro") as run:
            for i in range(12):
                svi.step(data, noise=0.01 * i)
    caught = [w for w in shown if w.category is RecompilationWarning]
    assert len(caught) == 1
    message = str(caught[0].message)
    assert message.startswith("SVI(model, guide): 8 traces compiled, a new one on 8 of the last 8")
    assert "keyword argument noise=0.07 changes between calls" in message
    assert any("keyword argument noise" in n for n in run.report.notes)


def test_a_tensor_keyword_runs_eager_on_pyros_jit_and_says_why():
    # Pyro keys a trace on a tensor keyword's identity and holds it as a constant: a trace per call
    def model(data, noise=None):
        models.gaussian(data + noise)

    def guide(data, noise=None):
        models.gaussian_guide(data)

    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    data = models.data()
    with compiled(backend="pyro") as run:
        for _ in range(12):
            svi.step(data, noise=torch.randn(()))
    assert run.report.compile_count == 0
    (line,) = run.report.guards
    assert "the keyword argument noise is a tensor" in line and "pass it positionally" in line


def test_a_float_keyword_that_changes_gets_its_own_advice():
    from pyro_jitmagic.compilers.pyro.caches import changing_keyword

    before = (1, (("temperature", 0.5),))
    after = (1, (("temperature", 0.6),))
    assert "keyword argument temperature=0.6 changes between calls: make it a fixed setting" in \
        changing_keyword(before, after, {"temperature": 0.6})
    lengths = changing_keyword((1, (("length", 24),)), (1, (("length", 25),)), {"length": 25})
    assert "bucket or pad it" in lengths


def test_max_entries_runs_further_keys_eager_and_says_so():
    def model(data, length=0):
        models.gaussian(data[:length])

    def guide(data, length=0):
        models.gaussian_guide(data)

    svi = SVI(model, guide, Adam({"lr": 0.01}), Trace_ELBO())
    data = models.data()
    with compiled(max_entries=2, backend="pyro") as run:
        losses = [svi.step(data, length=n) for n in (10, 11, 12, 13, 10)]
    assert run.report.compile_count == 2
    assert all(loss == loss for loss in losses)  # finite: the eager calls computed real losses
    assert any("2 calls with new keys ran eager past --max-entries 2" in n for n in run.report.notes)


@pytest.fixture(autouse=True)
def _forget_dead_objects():
    yield
    gc.collect()


def test_a_potential_compiled_by_auto_appears_too(auto_policy):
    # under --auto the kernel's potential_fn is Pyro's eager one again after the run, and its
    # compiled potential is still found through it. Pyro's tier only: whether the whole potential
    # pays is a decision from measured times (the next test climbs on purpose)
    from pyro.infer.mcmc import MCMC, NUTS

    auto_policy(prior_compile_steps={"potential": 2.0}, prior_speedup={"potential": 2.0})
    kernel = NUTS(models.gaussian)
    mcmc = MCMC(kernel, num_samples=20, warmup_steps=20, disable_progbar=True)
    with compiled(auto=True, backend="pyro") as run:
        mcmc.run(models.data())
    (decision,) = run.report.auto
    assert decision.state == "compiled"
    (f,) = functions_of(snapshot({"kernel": kernel}), "kernel ")
    assert f.kind == "potential"
    (entry,) = f.entries
    assert entry.hits > 0 and entry.compile_seconds > 0


def test_a_potential_that_climbed_to_the_whole_step_appears_with_its_evaluations(auto_policy):
    from pyro.infer.mcmc import MCMC, NUTS

    # a capture that costs about one evaluation pays at once
    auto_policy(prior_compile_steps={"potential": 2.0}, prior_speedup={"potential": 2.0},
                memory=None, prior_potential_capture_evals=1.0)
    kernel = NUTS(models.gaussian)
    mcmc = MCMC(kernel, num_samples=100, warmup_steps=100, disable_progbar=True)
    with compiled(auto=True, backend="step") as run:
        mcmc.run(models.data())
    assert any("the potential and its gradient captured after" in n for n in run.report.notes)
    # (Pyro's compiled potential, if its tier came first, is listed too: either may be cleared)
    (f,) = [f for f in functions_of(snapshot({"kernel": kernel}), "kernel ") if f.kind != "potential"]
    assert f.owner == "kernel (its whole potential, compiled by %%pyrojit)"
    assert f.kind == "potential and gradient"
    (entry,) = f.entries
    assert entry.hits > 0 and entry.compile_seconds > 0


def test_the_twins_of_the_cache_magic_list_and_clear_what_it_does():
    from pyro_jitmagic import CacheSnapshot, cache_snapshot, clear_cache

    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    with compiled(backend="pyro"):
        svi.step(models.data())
    snapshot = cache_snapshot({"svi": svi})
    assert isinstance(snapshot, CacheSnapshot)
    (f,) = functions_of(snapshot, "svi ")
    assert len(f.entries) == 1
    with pytest.raises(ValueError, match=r"no compiled function is owned by 'nobody'; owners: .*svi"):
        clear_cache("nobody", namespace={"svi": svi})
    assert clear_cache("svi", namespace={"svi": svi}) == 1
    assert functions_of(cache_snapshot({"svi": svi}), "svi ") == []
