"""A NUTS leaf's own halves, kept per layout: a second model, or the next process, puts its
potential between the halves an earlier capture left, and builds the same leaf graph as a
capture from scratch would (the graph inductor's cache knows by its code)."""

from __future__ import annotations

import models
import pyro
import pyro.distributions as dist
import pytest
import torch
from leaves import assert_the_leaf_is_eagers, compiled_trajectory, leaf_inputs

from pyro_jitmagic.wholestep import halves


def with_offset(data):
    """:func:`models.gaussian` with a third site: another layout."""
    offset = pyro.sample("offset", dist.Normal(0.0, 1.0))
    models.gaussian(data - offset)


@pytest.fixture
def forgotten(monkeypatch):
    """This process keeps no halves (as in a new process); the disk's folder is the test's own."""
    monkeypatch.setattr(halves, "_KEPT", {})


def test_the_next_process_reads_the_halves_from_disk_and_builds_the_same_graph(forgotten):
    traced = compiled_trajectory()
    assert traced.captured.halves == halves.TRACED
    assert compiled_trajectory().captured.halves == halves.KEPT
    halves._KEPT.clear()  # a new process: only the disk remembers
    stored = compiled_trajectory()
    assert stored.captured.halves == halves.STORED
    assert stored.captured.graph.code == traced.captured.graph.code
    assert_the_leaf_is_eagers(stored)


def test_another_layout_is_traced_for_itself(forgotten):
    assert compiled_trajectory(models.gaussian).captured.halves == halves.TRACED
    # (one site more: another layout, other halves)
    assert compiled_trajectory(with_offset).captured.halves == halves.TRACED


def test_a_file_that_cannot_be_read_is_ignored_and_traced_again(forgotten):
    compiled_trajectory()
    halves._KEPT.clear()
    (stored,) = halves.folder().glob("*.json")
    stored.write_text('[{"op": "call_function", "target": "aten::no_such_op"}]')
    again = compiled_trajectory()
    assert again.captured.halves == halves.TRACED
    assert_the_leaf_is_eagers(again)
    assert halves._load(stored) is not None  # (traced afresh, and written again whole)


def test_a_second_model_of_the_same_layout_traces_nothing_and_holds_its_own_potential(forgotten, monkeypatch):
    first = compiled_trajectory(models.gaussian)
    traced = []
    trace = halves.trace_restoring
    monkeypatch.setattr(halves, "trace_restoring", lambda *a: traced.append(a) or trace(*a))
    second = compiled_trajectory(models.shifted)  # (the same sites, another prior)
    assert traced == [] and second.captured.halves == halves.KEPT
    assert_the_leaf_is_eagers(second)
    inputs = next(leaf_inputs(second))
    assert not torch.allclose(first._run(*inputs)[1], second._run(*inputs)[1])
