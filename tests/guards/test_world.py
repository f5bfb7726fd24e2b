"""What a model reads from outside its arguments, found from its code: the reads, their sources, the
modules it runs, the draws outside torch; and nothing run while looking."""

from __future__ import annotations

import functools
import random
import types

import numpy as np
import pyro
import pyro.distributions as dist
import torch
from pyro import poutine
from pyro.nn import PyroModule, PyroSample

from pyro_jitmagic.guards import read_world

prior_scale = 10.0
config = types.SimpleNamespace(scale=2.0, nested=types.SimpleNamespace(depth=3))
batch = torch.ones(4)
table = {"shift": 0.5}


def _helper(x):
    return x * config.scale


def _model(data):
    loc = pyro.sample("loc", dist.Normal(0.0, prior_scale))
    return _helper(loc) + batch.sum() + table["shift"] + config.nested.depth


def _described(world):
    return {read.describe(): read.value for read in world.reads}


def test_globals_attribute_chains_items_and_the_functions_it_calls_are_read():
    reads = _described(read_world([_model]))
    assert reads["global prior_scale"] == 10.0
    assert reads["global config.scale"] == 2.0  # read in _helper, which _model calls
    assert reads["global config.nested.depth"] == 3
    assert reads["global table['shift']"] == 0.5
    assert reads["global batch"] is batch
    assert reads["global _helper"] is _helper


def test_library_names_are_not_reads():
    reads = _described(read_world([_model]))
    assert not any(name.startswith(("global pyro", "global dist", "global torch")) for name in reads)


def test_closure_variables_are_read_but_a_functions_own_locals_are_not():
    def make(scale):
        shift = torch.zeros(())

        def model(data):
            local = data * 2  # a local: no read
            return local * scale + shift + (lambda: scale)()

        return model

    reads = _described(read_world([make(3.0)]))
    assert reads == {"closure variable scale": 3.0, "closure variable shift": reads["closure variable shift"]}


def test_a_methods_self_attributes_are_read_from_its_own_dict():
    class Model:
        def __init__(self):
            self.alpha = torch.tensor(0.1)
            self.width = 4

        def model(self, data):
            return self.alpha * self.width

    reads = _described(read_world([Model().model]))
    assert reads["Model.width"] == 4 and isinstance(reads["Model.alpha"], torch.Tensor)


def test_a_model_behind_a_pyro_handler_is_read():
    scale = 0.5

    def model(data):
        return data * scale

    reads = _described(read_world([poutine.block(model, expose=["x"]), functools.partial(model)]))
    assert reads["closure variable scale"] == 0.5


def test_modules_and_their_training_flags_are_the_worlds():
    net = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.Dropout(0.5))

    def model(data):
        return net(data)

    world = read_world([model])
    assert {type(m) for m in world.modules} >= {torch.nn.Sequential, torch.nn.Linear, torch.nn.Dropout}


def test_draws_outside_torch_are_found_with_their_lines():
    rng = np.random.default_rng(0)

    def model(data):
        a = np.random.choice(5, 2)
        b = random.random()
        c = rng.normal()
        return a, b, c

    world = read_world([model])
    found = {d.what for d in world.draws}
    assert {"np.random.choice", "random.random", "rng"} <= found
    assert rng in world.generators  # its state is watched with numpy's and Python's own
    assert all(d.line for d in world.draws)


def test_torch_draws_and_torchs_default_generator_are_not_outside_draws():
    def model(data):
        return torch.randn(3), torch.default_generator

    assert read_world([model]).draws == []


def test_reading_a_pyro_module_samples_nothing():
    class Regression(PyroModule):
        def __init__(self):
            super().__init__()
            self.linear = PyroModule[torch.nn.Linear](1, 1)
            self.linear.weight = PyroSample(dist.Normal(0.0, 1.0).expand([1, 1]).to_event(2))

        def forward(self, x):
            return self.linear(x)

    model = Regression()
    state = torch.get_rng_state()
    with poutine.trace() as tr:
        world = read_world([model])
    assert torch.equal(torch.get_rng_state(), state) and not tr.trace.nodes  # no sample was drawn
    assert model in world.modules


def test_locations_are_named_by_the_callers_namer():
    def model(data):
        return data * prior_scale

    (read,) = read_world([model], locate=lambda filename, line: f"cell In[7], line {line}").reads
    assert read.where.startswith("cell In[7], line ")
