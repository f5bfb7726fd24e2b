"""Guards hold while the world they were built in holds, and say what changed in the user's words;
the call site, the storm rule and the sentinel's schedule and tolerance."""

from __future__ import annotations

import itertools
import math
import types

import numpy as np
import pyro
import pytest
import torch
from pyro import poutine

from pyro_jitmagic.guards import CallSite, Change, GuardBuilder, Recompiles, Sentinel, agree, read_world
from pyro_jitmagic.guards.checks import STORM_ANY, STORM_SAME
from pyro_jitmagic.guards.sentinel import FIRST_GAP, GROWTH, ROUNDING_EPS

SCALE = 1.0
NAN = math.nan
SIZES = [3, 4]
WEIGHTS = torch.ones(3)
ARRAY = np.zeros(4)
CONFIG = types.SimpleNamespace(scale=2.0)


def _guards(fn):
    builder = GuardBuilder()
    builder.world(read_world([fn]))
    builder.modes()
    return builder.build()


def _model(data):
    total = data * SCALE * CONFIG.scale + WEIGHTS.sum() + len(SIZES) + ARRAY.sum()
    return total + (NAN if data is None else 0)


@pytest.fixture
def world(monkeypatch):
    """A fresh world for each test: the module's globals as they were."""
    monkeypatch.setitem(globals(), "SIZES", [3, 4])
    monkeypatch.setitem(globals(), "WEIGHTS", torch.ones(3))
    monkeypatch.setitem(globals(), "ARRAY", np.zeros(4))
    monkeypatch.setattr(CONFIG, "scale", 2.0)
    return _guards(_model)


def test_they_hold_while_nothing_changes_nan_included(world):
    assert world.holds() and world.changes() == []


@pytest.mark.parametrize(("change", "said"), [
    (lambda: globals().__setitem__("SCALE", 2.0), "global SCALE 1.0 -> 2.0"),
    (lambda: setattr(CONFIG, "scale", 3.0), "global CONFIG.scale 2.0 -> 3.0"),
    (lambda: SIZES.append(5), "global SIZES [3, 4] -> [3, 4, 5]"),
    (lambda: WEIGHTS.mul_(2),
     "global WEIGHTS a tensor of shape (3,) (version 0) -> changed in place (version 1)"),
    (lambda: globals().__setitem__("WEIGHTS", torch.ones(3)),
     "global WEIGHTS a tensor of shape (3,) (version 0) -> another tensor of shape (3,)"),
    (lambda: ARRAY.__setitem__(0, 1.0), "global ARRAY an array of shape (4,) -> changed in place"),
    (lambda: globals().pop("SIZES"), "global SIZES [3, 4] -> gone"),
    (lambda: pyro.enable_validation(not pyro.infer.util.is_validation_enabled()), "pyro.enable_validation"),
])
def test_a_change_is_seen_and_said(world, change, said, monkeypatch):
    validation = pyro.infer.util.is_validation_enabled()
    scale = SCALE
    try:
        change()
        assert not world.holds()
        assert any(str(c).startswith(said) for c in world.changes()), world.changes()
    finally:
        pyro.enable_validation(validation)
        globals()["SCALE"] = scale


def test_a_training_flag_is_guarded():
    net = torch.nn.Sequential(torch.nn.Linear(1, 1), torch.nn.Dropout(0.5))

    def model(data):
        return net(data)

    guards = _guards(model)
    net[1].eval()
    assert [str(c) for c in guards.changes()] == ["Dropout.training True -> False"]


def test_settings_of_an_object_are_guarded_by_value():
    elbo = pyro.infer.Trace_ELBO(num_particles=1)
    builder = GuardBuilder()
    builder.settings("Trace_ELBO", elbo)
    guards = builder.build()
    assert guards.holds()
    elbo.num_particles = 8
    assert [str(c) for c in guards.changes()] == ["Trace_ELBO.num_particles 1 -> 8"]


def test_no_guards_always_hold_and_the_inspector_lists_them(world):
    assert GuardBuilder().build().holds()
    assert "global SCALE == 1.0" in world.described()


def test_the_call_site_names_what_no_graph_holds():
    site = CallSite()
    assert site.problem() is None
    with torch.no_grad():
        assert site.problem() == "torch.no_grad() was active"
    with poutine.scale(scale=0.5):
        assert site.problem() == "a Pyro handler was active around it (ScaleMessenger)"
    with torch.inference_mode():
        assert site.problem() == "torch.inference_mode() was active"


def test_a_value_that_keeps_changing_is_a_storm_and_says_what_changed():
    recompiles = Recompiles()
    said = [recompiles.add([Change("global anneal", str(i), str(i + 1))]) for i in range(STORM_SAME)]
    assert said[:-1] == [None] * (STORM_SAME - 1)
    assert said[-1] == "global anneal kept changing (1 -> 2 -> 3)"


def test_many_changes_of_different_values_are_a_storm_too():
    recompiles = Recompiles()
    said = [recompiles.add([Change(f"global g{i}", "a", "b")]) for i in range(STORM_ANY)]
    assert said[-1] is not None and said[-1].startswith(f"it compiled again {STORM_ANY} times")


def test_the_sentinel_checks_the_first_call_then_at_growing_gaps():
    sentinel = Sentinel()
    checked = [call for call in range(1, 10_001) if sentinel.due()]
    gaps = [b - a for a, b in itertools.pairwise(checked)]
    assert checked[0] == 1 and gaps[0] == FIRST_GAP
    assert all(b == GROWTH * a for a, b in itertools.pairwise(gaps))
    assert len(checked) == sentinel.checks <= 4  # a 10,000-step run is checked four times


def test_a_postponed_check_happens_at_the_next_call_and_the_gaps_go_on():
    sentinel = Sentinel()
    checked = []
    for call in range(1, (GROWTH + 2) * FIRST_GAP):
        if sentinel.due():
            if call == 1 + FIRST_GAP:  # the interpreter is busy then (inductor loading its kernels)
                sentinel.postpone()
                continue
            checked.append(call)
    # the schedule moved by one call
    assert checked == [1, FIRST_GAP + 2, FIRST_GAP + 2 + GROWTH * FIRST_GAP]
    assert sentinel.checks == len(checked)


def test_losses_agree_to_float_rounding_of_the_terms_summed_and_no_further():
    eps = torch.finfo(torch.float32).eps
    terms = 1000.0  # the magnitudes the loss was summed from
    assert agree(1.0, 1.0 + 0.5 * ROUNDING_EPS * eps * terms, terms, eps)
    assert not agree(1.0, 1.0 + 2.0 * ROUNDING_EPS * eps * terms, terms, eps)
    assert not agree(292.69, 2.927, 300.0, eps)  # a dropped poutine.scale
    assert agree(math.nan, math.nan, 1.0, eps) and not agree(math.nan, 1.0, 1.0, eps)
    assert agree(math.inf, math.inf, 1.0, eps) and not agree(math.inf, -math.inf, 1.0, eps)
