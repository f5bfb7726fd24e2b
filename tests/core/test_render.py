"""Durations as the reports print them."""

from __future__ import annotations

import re

import pytest

from pyro_jitmagic.records.units import seconds


@pytest.mark.parametrize(("value", "shown"), [
    (0.0, "0 µs"),
    (1e-7, "0.1 µs"),
    (0.0009994, "999 µs"),
    (0.0009996, "1 ms"),  # not "1e+03 µs"
    (0.001, "1 ms"),
    (0.0123, "12.3 ms"),
    (0.9994, "999 ms"),
    (0.9996, "1 s"),  # not "1e+03 ms"
    (0.99999, "1 s"),
    (1.0, "1 s"),
    (119.4, "119 s"),
    (119.6, "1.99 min"),  # "120 s" would be the next unit's
    (120.0, "2 min"),
    (7140.0, "119 min"),
    (7200.0, "2 h"),
    (-0.0005, "-500 µs"),
    (None, "n/a"),
    (float("nan"), "n/a"),
])
def test_each_unit_boundary(value, shown):
    assert seconds(value) == shown


def test_no_duration_prints_an_exponent_or_four_figures():
    value = 1e-9
    while value < 3e6:  # to 833 hours
        text = seconds(value)
        number, unit = text.split(" ")
        assert "e" not in number, (value, text)
        assert float(number) < {"s": 120, "min": 120}.get(unit, 1000), (value, text)
        assert re.fullmatch(r"\d+(\.\d+)?", number), (value, text)
        value *= 1.0007


# -- the executor row -------------------------------------------------------------


def _report(executor, choices=()):
    from pyro_jitmagic.records.report import ExecutorChoice, JitReport

    return JitReport(executor=executor, executor_choices=tuple(ExecutorChoice(*c) for c in choices))


def test_the_default_executor_says_nothing_when_no_key_moved():
    text, html = str(_report("adaptive")), _report("adaptive")._repr_html_()
    assert "executor" not in text and "executor" not in html


def test_the_executor_row_shows_the_keys_that_moved():
    report = _report("adaptive", [("svi", "1 positional arg", "optimizing",
                                   "optimizing from step 601: 800 µs a step optimized against 1 ms")])
    assert ("  executor   adaptive: svi, 1 positional arg: optimizing from step 601: 800 µs a step "
            "optimized against 1 ms") in str(report)
    assert "each trace starts no-opt" not in str(report)  # the explanation is in %%pyrojit?


def test_an_executor_asked_for_by_name_is_shown_with_what_it_does():
    assert "  executor   no-opt: traces run as recorded" in str(_report("no-opt"))
