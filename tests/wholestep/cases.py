"""SVI set-ups for the whole-step tests: models, guide families, optimizers, and a runner that
trains one eagerly and one compiled from the same seed and returns what a user would compare."""

from __future__ import annotations

import copy
import math

import models
import pyro
import pyro.distributions as dist
import pyro.optim
import torch
from agreement import rounding_atol
from pyro import poutine
from pyro.infer import SVI, config_enumerate
from pyro.infer.autoguide import AutoDiagonalNormal, AutoNormal
from pyro.nn import PyroModule, PyroParam
from torch.distributions import constraints

# -- guide families for models.gaussian ------------------------------------------------------

def hand_guide(data):
    """A hand-written guide with constrained params."""
    loc_loc = pyro.param("loc_loc", torch.tensor(0.0))
    loc_scale = pyro.param("loc_scale", torch.tensor(1.0), constraint=constraints.positive)
    scale_loc = pyro.param("scale_loc", torch.tensor(0.0))
    scale_scale = pyro.param("scale_scale", torch.tensor(0.5), constraint=constraints.interval(0.01, 2.0))
    pyro.sample("loc", dist.Normal(loc_loc, loc_scale))
    pyro.sample("scale", dist.LogNormal(scale_loc, scale_scale))


class ModuleGuide(PyroModule):
    """A PyroModule guide whose params are PyroParams (one of them constrained)."""

    def __init__(self):
        super().__init__()
        self.loc_loc = PyroParam(torch.tensor(0.0))
        self.loc_scale = PyroParam(torch.tensor(1.0), constraint=constraints.positive)
        self.scale_loc = PyroParam(torch.tensor([0.0]))

    def forward(self, data):
        pyro.sample("loc", dist.Normal(self.loc_loc, self.loc_scale))
        pyro.sample("scale", dist.LogNormal(self.scale_loc[0], 0.5))


class Encoder(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(2, 4)

    def forward(self, data):
        summary = torch.stack([data.mean(), data.std()])
        return self.linear(summary)


def network_guide_for(net):
    """An amortised guide: a network registered with pyro.module maps the data to the posterior."""

    def network_guide(data):
        pyro.module("encoder", net)
        out = net(data)
        pyro.sample("loc", dist.Normal(out[0], torch.nn.functional.softplus(out[1]) + 0.1))
        pyro.sample("scale", dist.LogNormal(out[2], torch.nn.functional.softplus(out[3]) + 0.1))

    return network_guide


GUIDES = {
    "AutoDiagonalNormal": lambda: AutoDiagonalNormal(models.gaussian),
    "AutoNormal": lambda: AutoNormal(models.gaussian),
    "hand guide": lambda: hand_guide,
    "PyroModule": ModuleGuide,
    "pyro.module network": lambda: network_guide_for(Encoder()),
}

OPTIMIZERS = {
    "Adam": lambda: pyro.optim.Adam({"lr": 0.02}),
    "AdamW": lambda: pyro.optim.AdamW({"lr": 0.02, "weight_decay": 0.1}),
    "SGD nesterov": lambda: pyro.optim.SGD({"lr": 2e-4, "momentum": 0.9, "nesterov": True}),
    "RMSprop": lambda: pyro.optim.RMSprop({"lr": 0.005, "centered": True, "momentum": 0.5}),
    "Adagrad": lambda: pyro.optim.Adagrad({"lr": 0.1, "lr_decay": 0.01}),
    "ClippedAdam": lambda: pyro.optim.ClippedAdam({"lr": 0.02, "lrd": 0.999, "clip_norm": 5.0,
                                                   "weight_decay": 0.01}),
}


def elbo(name, **options):
    return getattr(pyro.infer, name)(**options)


def gaussian_svi(guide="AutoDiagonalNormal", optimizer="Adam", loss="Trace_ELBO", **options):
    """(svi, args, kwargs) for the tutorial's simple model."""
    data = models.data(100)
    svi = SVI(models.gaussian, GUIDES[guide](), OPTIMIZERS[optimizer](), elbo(loss, **options))
    return svi, (data,), {}


# -- models for the other ELBOs ---------------------------------------------------------------

def hmm_svi(loss="TraceEnum_ELBO", length=6):
    """The tutorial's HMM (4 states), enumerated."""
    sequence = torch.randn(length, generator=torch.Generator().manual_seed(3))
    guide = AutoDiagonalNormal(poutine.block(models.hmm, expose=["trans", "emit_scale", "emit_loc"]))
    svi = SVI(models.hmm, guide, pyro.optim.Adam({"lr": 0.02}), elbo(loss, max_plate_nesting=1))
    return svi, (sequence,), {"num_sequences": 4, "length": length}


@config_enumerate
def mixture(data):
    """A two-component mixture whose assignments are enumerated; component 2 has prior weight 0,
    so Dice meets probability-0 terms whose cost is -inf (its mask matters)."""
    weights = torch.tensor([0.6, 0.4, 0.0])
    locs = pyro.param("locs", torch.tensor([-1.0, 1.0, 3.0]))
    scale = pyro.param("mix_scale", torch.tensor(1.0), constraint=constraints.positive)
    with pyro.plate("data", data.size(0)):
        z = pyro.sample("z", dist.Categorical(weights))
        pyro.sample("obs", dist.Normal(locs[z], scale), obs=data)


def mixture_svi():
    data = models.data(20)
    svi = SVI(mixture, lambda data: None, pyro.optim.Adam({"lr": 0.05}), elbo("TraceEnum_ELBO",
                                                                               max_plate_nesting=1))
    return svi, (data,), {}


def coin(data):
    """A discrete latent the guide samples (not reparameterizable): TraceGraph_ELBO's score function."""
    fair = pyro.sample("fair", dist.Bernoulli(0.5))
    p = 0.5 * fair + 0.8 * (1 - fair)
    with pyro.plate("flips", data.size(0)):
        pyro.sample("obs", dist.Bernoulli(p), obs=data)


def coin_guide(data):
    q = pyro.param("q", torch.tensor(0.5), constraint=constraints.unit_interval)
    pyro.sample("fair", dist.Bernoulli(q))


def coin_svi(loss="TraceGraph_ELBO"):
    data = (torch.arange(30) % 3 == 0).float()
    svi = SVI(coin, coin_guide, pyro.optim.Adam({"lr": 0.01}), elbo(loss))
    return svi, (data,), {}


# -- running and comparing --------------------------------------------------------------------

class Run:
    """What a user would look at after training: losses, params, optimizer state."""

    def __init__(self, losses, compiled=None):
        store = pyro.get_param_store()
        self.losses = losses
        self.params = {name: value.detach().clone() for name, value in store.items()}
        self.optim_state = None
        self.compiled = compiled


def train(make, steps=200, compile_with=None, between=None, eager_after=None, seed=0):
    """Train ``make()``'s SVI for ``steps`` steps from ``seed``: the first step eager (it creates the
    optimizer's state), the rest with ``compile_with`` (a backend) or eagerly; from step
    ``eager_after`` on, eagerly again (switching backend mid-run)."""
    from pyro_jitmagic.wholestep import compile_svi_step

    pyro.clear_param_store()
    pyro.set_rng_seed(seed)
    svi, args, kwargs = make()
    losses = [svi.step(*args, **kwargs)]
    step = svi.step
    compiled = None
    if compile_with is not None:
        compiled = step = compile_svi_step(svi, args, kwargs, backend=compile_with)
    for i in range(1, steps):
        if eager_after is not None and i == eager_after:
            step = svi.step
        losses.append(step(*args, **kwargs))
        if between is not None:
            between(svi, i)
    run = Run(losses, compiled)
    run.optim_state = copy.deepcopy(svi.optim.get_state())
    return run


def assert_losses_agree(eager, compiled, rtol=1e-4):
    assert len(eager.losses) == len(compiled.losses)
    for i, (a, b) in enumerate(zip(eager.losses, compiled.losses, strict=True)):
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=1e-6), f"step {i}: eager {a}, compiled {b}"


def assert_state_agrees(eager, compiled, rtol=1e-5, atol=1e-6):
    steps = len(eager.losses)
    assert eager.params.keys() == compiled.params.keys()
    for name in eager.params:
        expected = eager.params[name]
        torch.testing.assert_close(compiled.params[name], expected, rtol=rtol,
                                   atol=max(atol, rounding_atol(expected, steps)),
                                   msg=lambda m, name=name: f"param {name}: {m}")
    _assert_nested_close(compiled.optim_state, eager.optim_state, rtol, atol, "optimizer state", steps)


def _assert_nested_close(a, b, rtol, atol, where, steps):
    if isinstance(b, dict):
        assert isinstance(a, dict) and a.keys() == b.keys(), f"{where}: keys {list(a)} != {list(b)}"
        for key in b:
            _assert_nested_close(a[key], b[key], rtol, atol, f"{where}[{key!r}]", steps)
    elif isinstance(b, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _assert_nested_close(x, y, rtol, atol, f"{where}[{i}]", steps)
    elif isinstance(b, torch.Tensor):
        torch.testing.assert_close(a, b, rtol=rtol, atol=max(atol, rounding_atol(b, steps)),
                                   msg=lambda m: f"{where}: {m}")
    elif isinstance(b, float):
        assert math.isclose(a, b, rel_tol=rtol, abs_tol=atol), f"{where}: {a} != {b}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"
