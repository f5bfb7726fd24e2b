"""A NUTS leaf's own halves, kept per layout: a second model, or the next process, puts its
potential between the halves an earlier capture left, and builds the same leaf graph as a
capture from scratch would (the graph inductor's cache knows by its code)."""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from pyro.infer.mcmc import NUTS

from pyro_jitmagic.wholestep import compile_potential, halves
from pyro_jitmagic.wholestep.trajectory import compile_trajectory


def with_offset(data):
    """:func:`models.gaussian` with a third site: another layout."""
    offset = pyro.sample("offset", dist.Normal(0.0, 1.0))
    models.gaussian(data - offset)


def _trajectory(model=models.gaussian, n=50):
    kernel = NUTS(model)
    kernel.setup(10, models.data(n))
    potential = compile_potential(kernel, kernel.initial_params, backend="step")
    return compile_trajectory(kernel, potential, backend="step")


@pytest.fixture
def forgotten(monkeypatch):
    """This process keeps no halves (as in a new process); the disk's folder is the test's own."""
    monkeypatch.setattr(halves, "_KEPT", {})


def _agrees_with_eager(trajectory):
    generator = torch.Generator().manual_seed(0)
    inputs = [example if example.dtype == torch.bool or i in (3, 4) else
              example + 0.3 * torch.rand(example.shape, generator=generator)
              for i, example in enumerate(trajectory.captured.example_inputs)]
    for got, want in zip(trajectory._run(*inputs), trajectory._eager_leaf(*inputs), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_the_next_process_reads_the_halves_from_disk_and_builds_the_same_graph(forgotten):
    traced = _trajectory()
    assert traced.captured.halves == halves.TRACED
    assert _trajectory().captured.halves == halves.KEPT
    halves._KEPT.clear()  # a new process: only the disk remembers
    stored = _trajectory()
    assert stored.captured.halves == halves.STORED
    assert stored.captured.graph.code == traced.captured.graph.code
    _agrees_with_eager(stored)


def test_another_layout_is_traced_for_itself(forgotten):
    assert _trajectory(models.gaussian).captured.halves == halves.TRACED
    # (one site more: another layout, other halves)
    assert _trajectory(with_offset).captured.halves == halves.TRACED


def test_a_file_that_cannot_be_read_is_ignored_and_traced_again(forgotten):
    _trajectory()
    halves._KEPT.clear()
    (stored,) = halves.folder().glob("*.json")
    stored.write_text('[{"op": "call_function", "target": "aten::no_such_op"}]')
    again = _trajectory()
    assert again.captured.halves == halves.TRACED
    _agrees_with_eager(again)
    assert halves._load(stored) is not None  # (traced afresh, and written again whole)
