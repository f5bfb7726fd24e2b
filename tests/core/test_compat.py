"""Every private Pyro and torch name in core/compat.py is where it was checked: one test each.

When an upgrade of Pyro or torch moves one, its test fails naming it, and
pyro_jitmagic/core/compat.py is the one file to change.
"""

from __future__ import annotations

import functools
import warnings

import models
import pyro
import pyro.infer.mcmc.util
import pyro.ops.jit
import pytest
import torch
from pyro import infer
from pyro.infer.autoguide import AutoNormal
from pyro.infer.mcmc import HMC, NUTS
from pyro.optim import Adam

from pyro_jitmagic.core import compat


def _quietly(fn):
    @functools.wraps(fn)
    def run(*args, **kwargs):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the JIT's warnings, traced by hand
            return fn(*args, **kwargs)

    return run


@_quietly
def _stepped(elbo_class, model=models.gaussian, guide=models.gaussian_guide, data=None):
    """A Jit* ELBO after one SVI step: it holds its compiled function."""
    elbo = elbo_class()
    infer.SVI(model, guide, Adam({"lr": 0.01}), elbo).step(models.data() if data is None else data)
    return elbo


@_quietly
def _nuts_setup(jit_compile=True):
    """A NUTS kernel after its setup, and the names of the functions torch traced meanwhile."""
    traced, trace = [], torch.jit.trace

    def watched(fn, *args, **kwargs):
        traced.append(getattr(fn, "__name__", ""))
        return trace(fn, *args, **kwargs)

    kernel = NUTS(models.gaussian, jit_compile=jit_compile, ignore_jit_warnings=True)
    torch.jit.trace = watched
    try:
        kernel.setup(0, models.data())
    finally:
        torch.jit.trace = trace
    return kernel, traced


def _baseline_params():
    pyro.clear_param_store()
    elbo = infer.TraceGraph_ELBO()
    svi = infer.SVI(models.coin_model, models.coin_guide, Adam({"lr": 0.01}), elbo)
    svi.step(models.COINS)
    return list(pyro.get_param_store().keys())


# (what it belongs to, name) -> what should hold it (a truthy check where it is a value)
CHECKS = {
    ("pyro.ops.jit", "_hashable_args_kwargs"): lambda: pyro.ops.jit,
    ("pyro.ops.jit.CompiledFunction", "_param_names"):
        lambda: compat.compiled_function(_stepped(infer.JitTrace_ELBO)),
    ("pyro.infer.Jit*_ELBO", "_loss_and_surrogate_loss"): lambda: vars(_stepped(infer.JitTrace_ELBO)),
    ("pyro.infer.JitTraceMeanField_ELBO", "_differentiable_loss"):
        lambda: vars(_stepped(infer.JitTraceMeanField_ELBO)),
    ("pyro.infer.JitTraceGraph_ELBO", "_jit_loss_and_surrogate_loss"):
        lambda: vars(_stepped(infer.JitTraceGraph_ELBO)),
    ("pyro.infer.tracegraph_elbo", "__baseline_avg_downstream_cost_"):
        lambda: {name[:len(compat.BASELINE_PARAM_PREFIX)]: name for name in _baseline_params()},
    ("pyro.infer.mcmc.util", "_PEMaker"): lambda: pyro.infer.mcmc.util,
    ("pyro.infer.mcmc.util._PEMaker", "_compiled_fn"):
        lambda: {k: v for k, v in vars(compat.potential_maker(_nuts_setup()[0].potential_fn)).items()
                 if v is not None},
    ("pyro.infer.mcmc.util._PEMaker", "_potential_fn"): lambda: compat.potential_maker_class(),
    ("pyro.infer.mcmc.util._PEMaker", "_potential_fn_jit"): lambda: compat.potential_maker_class(),
    ("pyro.infer.mcmc.util", "_pe_jit"): lambda: dict.fromkeys(_nuts_setup()[1]),
    ("pyro.infer.mcmc.HMC", "_jit_compile"): lambda: HMC(models.gaussian),
    ("pyro.infer.mcmc.HMC", "_ignore_jit_warnings"): lambda: HMC(models.gaussian),
    ("pyro.infer.mcmc.HMC", "_jit_options"): lambda: HMC(models.gaussian),
    ("pyro.infer.mcmc.api", "_MultiSampler"): lambda: pyro.infer.mcmc.api,
    ("pyro.infer.autoguide.AutoGuide", "_setup_prototype"): lambda: AutoNormal(models.gaussian),
    ("pyro.infer.ELBO", "_guess_max_plate_nesting"): lambda: infer.TraceEnum_ELBO(),
    ("pyro.optim.PyroOptim", "_state_waiting_to_be_consumed"): lambda: Adam({"lr": 0.01}),
    ("torch._C", "_get_graph_executor_optimize"): lambda: torch._C,
    ("torch._C", "_set_graph_executor_optimize"): lambda: torch._C,
    ("torch._C", "_jit_set_profiling_executor"): lambda: torch._C,
    ("torch._C", "_jit_set_profiling_mode"): lambda: torch._C,
    ("torch._C", "_get_tracing_state"): lambda: torch._C,
    ("torch.Tensor", "_version"): lambda: torch.ones(1),
    ("pyro.poutine.runtime", "_PYRO_STACK"): lambda: pyro.poutine.runtime,
    ("pyro.params.param_store.ParamStoreDict", "_constraints"): lambda: pyro.get_param_store(),
}


@pytest.mark.parametrize(("owner", "name"), compat.PRIVATE_NAMES,
                         ids=[f"{owner}.{name}" for owner, name in compat.PRIVATE_NAMES])
def test_each_private_name_is_where_it_was_checked(owner, name):
    assert (owner, name) in CHECKS, f"{owner}.{name} is used in compat.py and has no check here"
    holder = CHECKS[(owner, name)]()
    present = name in holder if isinstance(holder, dict) else hasattr(holder, name)
    checked = compat.TORCH_CHECKED if owner.startswith("torch") else compat.PYRO_CHECKED
    assert present, (f"{owner}.{name} is gone or moved in this release (checked against {checked}): "
                     "pyro_jitmagic/core/compat.py uses it; update it there")


def test_every_check_is_of_a_name_compat_uses():
    assert set(CHECKS) == set(compat.PRIVATE_NAMES)


def test_the_key_rebuilt_by_hand_is_pyros():
    args, kwargs = (torch.ones(2), torch.zeros(3)), {"length": 24, "name": "x"}
    assert compat.fast_key(args, kwargs) == pyro.ops.jit._hashable_args_kwargs(args, kwargs), (
        "pyro.ops.jit._hashable_args_kwargs keys hashable keyword values another way now: "
        "update compat.fast_key")


def test_a_jit_elbo_keeps_the_model_and_guide_of_its_first_call_where_compat_looks():
    elbo = _stepped(infer.JitTrace_ELBO)
    assert compat.bound_model_and_guide(elbo) == (models.gaussian, models.gaussian_guide), (
        "Jit*_ELBO's compiled closure no longer holds 'model' and 'guide': "
        "update compat.bound_model_and_guide")


def test_a_potential_is_found_behind_its_compiled_and_eager_forms():
    compiled, _ = _nuts_setup(jit_compile=True)
    eager, _ = _nuts_setup(jit_compile=False)
    assert compat.is_compiled_potential(compiled.potential_fn)
    assert not compat.is_compiled_potential(eager.potential_fn)
    for kernel in (compiled, eager):
        assert isinstance(compat.potential_maker(kernel.potential_fn), compat.potential_maker_class())
