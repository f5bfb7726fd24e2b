"""What cannot be captured says why, in words that say what to do; nothing is half-done."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import pyro.optim
import pytest
import torch
from cases import gaussian_svi
from pyro.infer import SVI, RenyiELBO, Trace_ELBO, TraceGraph_ELBO

from pyro_jitmagic.wholestep import CannotCompile, NeedsEagerStep, compile_svi_step


def stepped(svi, args, kwargs=None):
    svi.step(*args, **(kwargs or {}))
    return svi


def reason(svi, args, kwargs=None, **options):
    with pytest.raises(CannotCompile) as info:
        compile_svi_step(svi, args, kwargs or {}, **options)
    return info.value.reason


def test_a_fresh_svi_needs_one_eager_step_first():
    svi, args, _ = gaussian_svi()
    with pytest.raises(NeedsEagerStep, match="prototype on the first step"):
        compile_svi_step(svi, args)
    svi.step(*args)
    compile_svi_step(svi, args)  # and then it compiles


def test_hand_guide_optimizer_state_comes_from_the_first_step():
    svi, args, _ = gaussian_svi("hand guide")
    with pytest.raises(NeedsEagerStep, match="creates its torch optimizers"):
        compile_svi_step(svi, args)


def test_other_elbos_are_named():
    svi, args, _ = gaussian_svi()
    svi = SVI(svi.model, svi.guide, svi.optim, RenyiELBO())
    stepped(svi, args)
    assert reason(svi, args) == ("RenyiELBO is not captured: the whole step compiles Trace_ELBO, "
                                 "TraceMeanField_ELBO, TraceEnum_ELBO and TraceGraph_ELBO")


def test_elbo_subclasses_keep_their_overrides():
    class MyELBO(Trace_ELBO):
        pass

    svi, args, _ = gaussian_svi()
    svi = stepped(SVI(svi.model, svi.guide, svi.optim, MyELBO()), args)
    assert "MyELBO subclasses Trace_ELBO" in reason(svi, args)


def test_custom_loss_function():
    svi, args, _ = gaussian_svi()
    svi = SVI(svi.model, svi.guide, svi.optim, lambda model, guide, *a: Trace_ELBO().differentiable_loss(
        model, guide, *a))
    stepped(svi, args)
    assert reason(svi, args).startswith("a custom loss")


def test_gradient_clipping_is_named():
    svi, args, _ = gaussian_svi()
    svi.optim = pyro.optim.Adam({"lr": 0.01}, {"clip_norm": 1.0})
    stepped(svi, args)
    assert "clips gradients (clip_args)" in reason(svi, args)


def test_unsupported_torch_optimizer():
    svi, args, _ = gaussian_svi()
    svi.optim = pyro.optim.NAdam({"lr": 0.01})
    stepped(svi, args)
    assert "optimized by NAdam" in reason(svi, args)


def test_foreach_optimizer():
    svi, args, _ = gaussian_svi()
    svi.optim = pyro.optim.Adam({"lr": 0.01, "foreach": True})
    stepped(svi, args)
    assert "foreach=True" in reason(svi, args)


def test_optimizer_step_hooks():
    svi, args, _ = gaussian_svi()
    stepped(svi, args)
    next(iter(svi.optim.optim_objs.values())).register_step_post_hook(lambda *a: None)
    assert "step hooks" in reason(svi, args)


def test_a_tensor_keyword_is_an_input_of_the_step():
    # svi.step(x, log_radon=y), as Pyro's examples pass data: the keyword's tensor of each call is used
    def model(data, shift=None):
        pyro.sample("loc", dist.Normal(shift, 1.0))

    def guide(data, shift=None):
        pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    def losses(compiled):
        pyro.clear_param_store()
        pyro.set_rng_seed(0)
        svi = SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO())
        step = svi.step
        found = [step(torch.zeros(3), shift=torch.zeros(()))]
        if compiled:
            step = compile_svi_step(svi, (torch.zeros(3),), {"shift": torch.zeros(())})
        found += [step(torch.zeros(3), shift=torch.tensor(float(i))) for i in range(1, 6)]
        return found, step

    eager, _ = losses(compiled=False)
    compiled, step = losses(compiled=True)
    assert compiled == pytest.approx(eager, rel=1e-6)
    assert step.steps == 5 and step.eager_steps == 0


def test_decaying_average_baseline_writes_the_param_store():
    def model(data):
        p = pyro.sample("p", dist.Beta(2.0, 2.0))
        with pyro.plate("n", len(data)):
            pyro.sample("obs", dist.Bernoulli(p), obs=data)

    class Unreparameterized(dist.Beta):
        has_rsample = False

    def score_guide(data):
        q = pyro.param("q", torch.tensor(0.3), constraint=dist.constraints.unit_interval)
        pyro.sample("p", Unreparameterized(q * 10, (1 - q) * 10),
                    infer={"baseline": {"use_decaying_avg_baseline": True}})

    data = torch.tensor([1.0, 0.0, 1.0])
    svi = stepped(SVI(model, score_guide, pyro.optim.Adam({"lr": 0.01}), TraceGraph_ELBO()), (data,))
    store = pyro.get_param_store()
    average = store["__baseline_avg_downstream_cost_p"]
    text = reason(svi, (data,))
    assert "writes the param store" in text and "decaying-average baseline" in text
    # and trying left the running average as the eager step left it
    assert torch.equal(store["__baseline_avg_downstream_cost_p"], average)


def test_a_model_changing_a_global_tensor_in_place_does_so_on_every_compiled_step():
    counter = torch.zeros(1)

    def model(data):
        counter.add_(1)
        pyro.sample("loc", dist.Normal(0.0, 1.0))

    def guide(data):
        pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    svi = stepped(SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()), (torch.zeros(1),))
    assert counter.item() == 1
    step = compile_svi_step(svi, (torch.zeros(1),))
    assert counter.item() == 1  # capturing ran the model, and put back what it changed
    for _ in range(3):
        step(torch.zeros(1))
    assert counter.item() == 4 and step.steps == 3  # the closure's tensor is an input the graph writes


def test_a_global_counter_moves_once_a_step_also_on_steps_a_guard_declines():
    counter = torch.zeros(1)

    def model(data):
        counter.add_(1)
        loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
        scale = 1.0 if loc > 0 else 2.0  # a value read: the graph checks it on every step
        with pyro.plate("n", len(data)):
            pyro.sample("obs", dist.Normal(loc, scale), obs=data)

    def guide(data):
        pyro.sample("loc", dist.Normal(pyro.param("m", torch.tensor(0.0)), 1.0))

    data = torch.randn(8)
    pyro.set_rng_seed(0)
    svi = stepped(SVI(model, guide, pyro.optim.Adam({"lr": 0.01}), Trace_ELBO()), (data,))
    step = compile_svi_step(svi, (data,))
    for _ in range(40):
        step(data)
    assert step.guard_failures > 0 and step.steps > 0  # (both sides of the branch were met)
    assert counter.item() == 41  # the graph's write undone where its guard failed; eager's step wrote it


def test_bad_backend_is_a_value_error():
    svi, args, _ = gaussian_svi()
    stepped(svi, args)
    with pytest.raises(ValueError, match="backend must be one of"):
        compile_svi_step(svi, args, backend="tvm")


def test_no_cxx_compiler_falls_back_to_step():
    from torch._inductor import config

    svi, args, _ = gaussian_svi()
    stepped(svi, args)
    with config.patch({"cpp.cxx": (None, "/nonexistent/c++")}):  # inductor's own search finds none
        compiled = compile_svi_step(svi, args, backend="inductor")
    assert compiled.backend == "step"
    assert compiled.fallback == ("inductor needs a C++ compiler and none was found (searched: "
                                 "/nonexistent/c++; set CXX or install g++); running the step backend")
    loss = compiled(*args)
    assert loss == loss and compiled.steps == 1


def test_stale_step_runs_eagerly_and_says_why():
    svi, args, _ = gaussian_svi("hand guide")
    stepped(svi, args)
    compiled = compile_svi_step(svi, args)
    compiled(*args)
    pyro.get_param_store()["loc_loc"] = torch.tensor(3.0)  # a new tensor for the param
    compiled(*args)
    assert compiled.stale == "the param 'loc_loc' was replaced, reshaped or removed"
    assert (compiled.steps, compiled.eager_steps) == (1, 1)


def test_changed_hyperparameter_makes_it_stale():
    svi, args, _ = gaussian_svi("hand guide", "Adam")
    stepped(svi, args)
    compiled = compile_svi_step(svi, args)
    for optimizer in svi.optim.optim_objs.values():
        optimizer.param_groups[0]["betas"] = (0.5, 0.9)
    compiled(*args)
    assert compiled.stale == "the Adam hyperparameters changed"


def test_a_param_resized_in_place_makes_it_stale():
    svi, args, _ = gaussian_svi("hand guide")
    stepped(svi, args)
    compiled = compile_svi_step(svi, args)
    pyro.get_param_store()._params["loc_loc"].data = torch.zeros(3)  # same tensor, another shape
    declined = compiled.run(*args)
    assert declined.stale and declined.why == "the param 'loc_loc' was replaced, reshaped or removed"
    assert compiled.stale == declined.why


def test_arguments_of_another_shape_are_another_key():
    from pyro_jitmagic.wholestep import step_key

    svi, args, _ = gaussian_svi()
    stepped(svi, args)
    compiled = compile_svi_step(svi, args)
    other = (torch.zeros(7),)
    assert step_key(other, {}) != compiled.key == step_key(args, {})
    with pytest.raises(ValueError, match=r"compiled for argument 0 of shape \(100,\)"):
        compiled(*other)


def test_the_binding_sees_a_params_optimizer_replaced_but_not_another_params_added():
    svi, args, _ = gaussian_svi("AutoDiagonalNormal", "Adam")
    stepped(svi, args)
    compiled = compile_svi_step(svi, args)
    compiled(*args)
    objs = svi.optim.optim_objs
    other = torch.zeros(2, requires_grad=True)
    objs[other] = torch.optim.Adam([other])  # (another SVI's param, trained by the same optimizer)
    assert compiled._bound_now(args, {})
    assert type(compiled(*args)) is float and compiled.stale is None
    param = next(p for p in objs if p is not other)
    objs[param] = torch.optim.Adam([param])
    assert not compiled._bound_now(args, {})
    declined = compiled.run(*args)
    assert declined.stale and declined.why == "the optimizer was replaced for a param"


def test_a_step_binds_in_one_call_and_leaves_what_failed_to_the_checks_one_by_one():
    svi, args, _ = gaussian_svi("AutoDiagonalNormal", "Adam")
    stepped(svi, args)
    compiled = compile_svi_step(svi, args)
    compiled(*args)
    assert compiled._bound_now(args, {})  # nothing changed: every check in one call
    optimizer = next(iter(svi.optim.optim_objs.values()))
    (state,) = optimizer.state.values()
    state["exp_avg"] = state["exp_avg"].double()
    assert not compiled._bound_now(args, {})
    declined = compiled.run(*args)
    assert declined.stale and declined.why == "the optimizer's 'exp_avg' changed its shape or type"
