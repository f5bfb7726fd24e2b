"""bench/bench_backends.py runs end to end on tiny counts (its timings are not checked)."""

from __future__ import annotations

import importlib
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"


def test_bench_backends_prints_its_table_and_targets(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    script = importlib.import_module("bench_backends")
    monkeypatch.setattr(script.numpyro_ways, "available", lambda: None)  # as where it is not installed
    assert script.main(["--quick", "--only", "svi", "--only", "nuts"]) == 0
    out = capsys.readouterr().out
    rows = [line.split()[:4] for line in out.splitlines()]
    for way in ("eager", "pyro", "step"):
        assert ["NUTS", "eight", "schools", way] in rows, f"no NUTS row for {way}"
    assert any(line.startswith("simple SVI 1,000 steps   step") for line in out.splitlines())
    assert "simple SVI 1,000 steps: step backend, per step," in out
    assert "faster than Pyro's JIT (target >= 2x)" in out
    assert "NumPyro: not installed (its ways are left out)" in out
    assert "numpyro" not in out.lower().replace("numpyro: not installed", "")


@pytest.mark.slow
def test_bench_backends_runs_numpyros_ways_where_it_is_installed(capsys, monkeypatch):
    pytest.importorskip("numpyro")
    monkeypatch.syspath_prepend(str(BENCH))
    script = importlib.import_module("bench_backends")
    assert script.main(["--quick", "--only", "svi", "--only", "nuts"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()]
    assert [r for r in rows if r[:5] == ["simple", "SVI", "1,000", "steps", "numpyro"]]
    assert ["NUTS", "eight", "schools", "numpyro"] in [r[:4] for r in rows]


@pytest.mark.slow
def test_step_pieces_prints_each_piece_of_a_settled_step(capsys, monkeypatch):
    pytest.importorskip("torch._inductor")
    monkeypatch.syspath_prepend(str(BENCH))
    script = importlib.import_module("step_pieces")
    assert script.main(["--rounds", "1", "--calls", "3"]) == 0
    out = capsys.readouterr().out
    for piece in ("graph's call", "binding", "random state kept", "short way (CompiledStep.short_way)",
                  "svi.step"):
        lines = [line.strip() for line in out.splitlines()]
        assert any(line.startswith(piece) and line.endswith(")") for line in lines), piece


def test_a_cell_after_a_restart_is_judged_against_pyros_jit_after_one(monkeypatch):
    # given figures: the new-process run is held to the climb's promise against Pyro's JIT in a new
    # process, and a run that captured nothing has no set-up to judge
    monkeypatch.syspath_prepend(str(BENCH))
    script = importlib.import_module("bench_backends")
    table = script.Table()
    run = script.Run
    table.add("NUTS tutorial model", "pyro", run(total=2.0, step=3e-4, steps=600))
    table.add("NUTS tutorial model", "pyro, new process", run(total=1.8, step=3e-4))
    table.add("NUTS tutorial model", "%%pyrojit, new process", run(total=1.9, step=float("nan"), steps=600))
    table.add("NUTS eight schools", "pyro", run(total=11.0, step=4e-4, steps=600))
    table.add("NUTS eight schools", "pyro, new process", run(total=12.0, step=4e-4))
    table.add("NUTS eight schools", "%%pyrojit, new process",
              run(total=14.0, step=float("nan"), steps=600, setup=0.05))
    targets = "\n".join(script.target_lines(table))
    assert ("PASS  NUTS tutorial model: %%pyrojit, new process, whole run, 1.06x the time of Pyro's JIT in a "
            "new process (promise <= 1.15x)") in targets
    assert "MISS  NUTS eight schools: %%pyrojit, new process, whole run, 1.17x the time" in targets
    setup = "\n".join(script.setup_lines(table))
    assert ("NUTS tutorial model: %%pyrojit in a new process captured nothing (the run stayed on Pyro's "
            "JIT): no set-up to judge") in setup
    # 50 ms against 5 iterations of 11 s / 600
    assert "PASS  NUTS eight schools: %%pyrojit in a new process, set-up 50.00 ms: 2.7 iterations" in setup
