"""Small Pyro models shared by the tests: the tutorial's, and ones that trace badly."""

from __future__ import annotations

import pyro
import pyro.distributions as dist
import torch
from pyro import poutine


def gaussian(data):
    """The tutorial's simple model."""
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = pyro.sample("scale", dist.LogNormal(0.0, 3.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def gaussian_guide(data):
    """A hand-written guide for :func:`gaussian`, with params of its own."""
    loc_loc = pyro.param("loc_loc", torch.tensor(0.0))
    scale_loc = pyro.param("scale_loc", torch.tensor(0.0))
    pyro.sample("loc", dist.Normal(loc_loc, 1.0))
    pyro.sample("scale", dist.LogNormal(scale_loc, 0.5))


def shifted(data):
    """Like :func:`gaussian` with another prior, so its loss differs."""
    loc = pyro.sample("loc", dist.Normal(5.0, 1.0))
    scale = pyro.sample("scale", dist.LogNormal(1.0, 1.0))
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def branchy(data):
    """A Python branch on a tensor value: the trace bakes in one side."""
    loc = pyro.sample("loc", dist.Normal(0.0, 10.0))
    scale = 1.0 if loc > 0 else 2.0
    with pyro.plate("data", data.size(0)):
        pyro.sample("obs", dist.Normal(loc, scale), obs=data)


def branchy_guide(data):
    loc_loc = pyro.param("b_loc", torch.tensor(0.0))
    pyro.sample("loc", dist.Normal(loc_loc, 1.0))


def hmm(sequence, num_sequences, length, state_dim=4):
    """The tutorial's HMM, smaller: structure depends on the ``length`` keyword."""
    with pyro.plate("states", state_dim):
        trans = pyro.sample("trans", dist.Dirichlet(0.5 * torch.ones(state_dim)))
        emit_loc = pyro.sample("emit_loc", dist.Normal(0.0, 10.0))
    emit_scale = pyro.sample("emit_scale", dist.LogNormal(0.0, 3.0))
    with poutine.scale(scale=num_sequences):
        x = 0
        for t in pyro.markov(range(length)):
            x = pyro.sample(f"x_{t}", dist.Categorical(trans[x]), infer={"enumerate": "parallel"})
            pyro.sample(f"y_{t}", dist.Normal(emit_loc[x], emit_scale), obs=sequence[t])


def coin_model(data):
    """A discrete latent for TraceGraph_ELBO, whose guide below uses a decaying-average baseline."""
    p = pyro.sample("p", dist.Beta(2.0, 2.0))
    z = pyro.sample("z", dist.Bernoulli(p))
    with pyro.plate("n", data.shape[0]):
        pyro.sample("obs", dist.Bernoulli(0.2 + 0.6 * z), obs=data)


def coin_guide(data):
    """Writes its running average to the param store inside the loss: Pyro's JIT cannot trace it."""
    a = pyro.param("a", torch.tensor(2.0), constraint=dist.constraints.positive)
    pyro.sample("p", dist.Beta(a, 2.0))
    q = pyro.param("q", torch.tensor(0.5), constraint=dist.constraints.unit_interval)
    pyro.sample("z", dist.Bernoulli(q), infer={"baseline": {"use_decaying_avg_baseline": True}})


COINS = torch.tensor([1.0, 0.0, 1.0, 1.0, 0.0, 1.0, 1.0, 1.0])


def data(n=20, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return 0.5 + 2.0 * torch.randn(n, generator=generator)


def ticking(clock, model=gaussian, seconds=1e-3):
    """``model``, whose Python takes ``seconds`` on ``clock`` (the ``fake_clock`` fixture's) each time
    it runs: an eager step runs it, a step on Pyro's compiled trace does not. Step times, and every
    decision taken from them (a compiled key measured slower than eager steps back down), are then
    the same on any machine, however loaded."""

    def ticking_model(*args, **kwargs):
        clock.advance(seconds)
        return model(*args, **kwargs)

    return ticking_model
