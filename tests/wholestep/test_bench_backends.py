"""bench/bench_backends.py runs end to end on tiny counts (its timings are not checked)."""

from __future__ import annotations

import importlib
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_bench_backends_prints_its_table_and_targets(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    script = importlib.import_module("bench_backends")
    assert script.main(["--quick", "--only", "svi", "--only", "nuts"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:4] for line in out.splitlines()]
    for way in ("eager", "pyro", "step"):
        assert ["NUTS", "eight", "schools", way] in rows, f"no NUTS row for {way}"
    assert any(line.startswith("simple SVI 1,000 steps   step") for line in out.splitlines())
    assert "simple SVI 1,000 steps: step backend, per step," in out
    assert "faster than Pyro's JIT (target >= 2x)" in out
