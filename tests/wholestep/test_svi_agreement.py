"""A compiled whole step trains as eager does: same losses step by step (same seed, 200 steps),
then the same params and optimizer state, for every supported ELBO, optimizer and guide family."""

from __future__ import annotations

import functools

import pyro
import pytest
import torch
from cases import (
    GUIDES,
    OPTIMIZERS,
    assert_losses_agree,
    assert_state_agrees,
    coin_svi,
    gaussian_svi,
    hmm_svi,
    mixture_svi,
    train,
)

ELBOS = {
    "Trace_ELBO": {},
    "TraceMeanField_ELBO": {},
    "TraceGraph_ELBO": {},
    "TraceEnum_ELBO": {"max_plate_nesting": 1},
}


def agree(make, steps=200, between=None, backend="step"):
    eager = train(make, steps, between=between)
    compiled = train(make, steps, compile_with=backend, between=between)
    assert compiled.compiled.steps == steps - 1, "some steps did not run compiled"
    assert_losses_agree(eager, compiled)
    assert_state_agrees(eager, compiled)
    return eager, compiled


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", list(ELBOS))
def test_every_elbo_with_every_optimizer(loss, optimizer):
    agree(functools.partial(gaussian_svi, "AutoDiagonalNormal", optimizer, loss, **ELBOS[loss]))


@pytest.mark.parametrize("guide", [g for g in GUIDES if g != "AutoDiagonalNormal"])
@pytest.mark.parametrize("loss", list(ELBOS))
def test_every_guide_family(loss, guide):
    agree(functools.partial(gaussian_svi, guide, "Adam", loss, **ELBOS[loss]))


@pytest.mark.parametrize("options", [
    {"num_particles": 3},
    {"num_particles": 4, "vectorize_particles": True, "max_plate_nesting": 1},
], ids=["num_particles", "vectorize_particles"])
@pytest.mark.parametrize("loss", ["Trace_ELBO", "TraceMeanField_ELBO", "TraceEnum_ELBO"])
def test_particles(loss, options):
    options = dict(options)
    if loss == "TraceEnum_ELBO":
        options.setdefault("max_plate_nesting", 1)
    agree(functools.partial(gaussian_svi, "hand guide", "Adam", loss, **options))


def test_enumerated_hmm():
    agree(hmm_svi)


def test_enumerated_hmm_through_jit_twin_is_the_same_algorithm():
    # a JitTraceEnum_ELBO computes TraceEnum_ELBO's loss: its whole step is captured the same way
    agree(functools.partial(hmm_svi, "JitTraceEnum_ELBO"))


def test_dice_mask_with_zero_probability_terms():
    _, compiled = agree(mixture_svi, steps=100)
    assert all(loss == loss for loss in compiled.losses)  # no NaN from 0 * -inf
    assert compiled.compiled.dice_masks > 0


def test_tracegraph_score_function():
    agree(coin_svi)


def test_per_param_optim_args():
    def make():
        svi, args, kwargs = gaussian_svi("hand guide", "Adam")
        svi.optim = pyro.optim.Adam(lambda name: {
            "lr": 0.05 if "scale" in name else 0.01,
            "betas": (0.8, 0.99) if name == "loc_loc" else (0.9, 0.999)})
        return svi, args, kwargs

    agree(make)


def test_per_param_optim_args_by_module_and_name():
    def make():
        svi, args, kwargs = gaussian_svi("pyro.module network", "Adam")
        svi.optim = pyro.optim.Adam(lambda module, name: {"lr": 0.001 if module == "encoder" else 0.01,
                                                          "amsgrad": name == "weight"})
        return svi, args, kwargs

    agree(make)


def test_learning_rate_scheduler_rate_is_an_input():
    def make():
        svi, args, kwargs = gaussian_svi("AutoDiagonalNormal", "Adam")
        svi.optim = pyro.optim.ExponentialLR({"optimizer": torch.optim.Adam, "optim_args": {"lr": 0.05},
                                              "gamma": 0.9})
        return svi, args, kwargs

    def epoch(svi, step):
        if step % 20 == 0:
            svi.optim.step()

    _, compiled = agree(make, between=epoch)
    # the rate changed nine times and the step never went stale (no recompile per epoch)
    rates = [state["scheduler"]["_last_lr"][0] for state in compiled.optim_state.values()]
    assert rates == [pytest.approx(0.05 * 0.9 ** 9)] * len(rates)
    assert compiled.compiled.stale is None


def test_scheduled_sgd():
    def make():
        svi, args, kwargs = gaussian_svi("hand guide", "Adam")
        svi.optim = pyro.optim.StepLR({"optimizer": torch.optim.SGD,
                                       "optim_args": {"lr": 1e-3, "momentum": 0.5}, "step_size": 1})
        return svi, args, kwargs

    agree(make, between=lambda svi, step: svi.optim.step() if step % 50 == 0 else None)


def test_switching_to_eager_mid_run_continues_exactly():
    make = functools.partial(gaussian_svi, "AutoNormal", "ClippedAdam")
    eager = train(make)
    switched = train(make, compile_with="step", eager_after=120)
    assert switched.compiled.steps == 119
    assert_losses_agree(eager, switched)
    assert_state_agrees(eager, switched)


def test_params_stay_the_same_tensor_objects():
    pyro.set_rng_seed(0)
    from pyro_jitmagic.wholestep import compile_svi_step

    svi, args, kwargs = gaussian_svi("hand guide", "Adam")
    svi.step(*args)
    store = pyro.get_param_store()
    held = {name: store._params[name] for name in store}
    before = {name: t.detach().clone() for name, t in held.items()}
    compiled = compile_svi_step(svi, args, kwargs)
    for _ in range(5):
        compiled(*args)
    for name, tensor in held.items():
        assert store._params[name] is tensor
        assert not torch.equal(tensor, before[name]), f"{name} did not move"
    saved = store.get_state()
    assert all(saved["params"][name] is held[name] for name in held)


def test_loss_is_eager_float_to_the_last_bit():
    make = functools.partial(gaussian_svi, "AutoDiagonalNormal", "Adam")
    eager = train(make, steps=50)
    compiled = train(make, steps=50, compile_with="step")
    assert compiled.losses == eager.losses


@pytest.mark.slow
@pytest.mark.parametrize("guide", list(GUIDES))
@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize("loss", list(ELBOS))
def test_every_elbo_optimizer_and_guide(loss, optimizer, guide):
    # the fast tier covers every pair of these; this is every triple
    agree(functools.partial(gaussian_svi, guide, optimizer, loss, **ELBOS[loss]))


@pytest.mark.parametrize("optimizer", ["Adam", "AdamW", "Adagrad"])
def test_a_rules_numbers_from_the_step_count_are_torchs_bit_for_bit(optimizer):
    # Adam's and Adagrad's bias corrections and step size are computed in the graph, in double, from
    # the step tensor the graph counts: they must be torch's own (from step_t.item(), in Python),
    # past float32's exact integers too, where step_t += 1 stops counting
    from pyro_jitmagic.wholestep.optim import _classes

    torch.manual_seed(0)
    optim = OPTIMIZERS[optimizer]()
    for step in (0.0, 1.0, 41.0, 2.0**24 - 1, 2.0**24, 2.0**25 + 2):
        param = torch.zeros(3, requires_grad=True)
        torch_optim = optim.pt_optim_constructor([param], **optim.pt_optim_args)
        param.grad = torch.randn(3)
        torch_optim.step()  # (its state)
        state = torch_optim.state[param]
        state["step"].fill_(step)
        with torch.no_grad():  # (at zero, the update's last bits, and so the numbers', are not lost)
            param.zero_()
        rule = _classes()[type(torch_optim)](torch_optim, torch_optim, param, dynamic_lr=True)
        assert rule.numbers_in_double
        numbers = list(torch.tensor(rule.scalars(state), dtype=torch.float64))
        with torch.no_grad():
            new = rule.update(param.clone(), param.grad, {k: v.clone() for k, v in state.items()}, numbers)
            torch_optim.step()
        assert new.keys() == {"param", *state}
        for key, value in new.items():
            assert torch.equal(value, param if key == "param" else state[key]), (step, key)
