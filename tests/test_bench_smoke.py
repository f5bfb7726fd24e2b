"""The benchmark scripts run end to end on tiny counts; their timings are not checked."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"

# the hand-written JIT cell traces outside %%pyrojit, with the warnings the tutorial shows
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:`torch\.jit\.trace` is deprecated:DeprecationWarning"),
    pytest.mark.filterwarnings("ignore::torch.jit.TracerWarning"),
]


@pytest.fixture
def run_script(shell, capsys, monkeypatch):
    """Run a bench script's main(["--quick"]) in the test shell; its printed output."""
    monkeypatch.syspath_prepend(str(BENCH))

    def run(name):
        script = importlib.import_module(name)
        before = set(shell.user_ns)
        try:
            assert script.main(["--quick"], shell=shell) == 0
        finally:
            for variable in set(shell.user_ns) - before:
                del shell.user_ns[variable]
        return capsys.readouterr().out

    return run


def test_bench_svi_prints_its_table_and_ratios(run_script):
    out = run_script("bench_svi")
    for way in ("eager", "hand JIT", "%%pyrojit"):
        assert any(line.startswith(way) for line in out.splitlines()), f"no table row for {way}"
    assert "%%pyrojit / hand JIT (total time):" in out
    assert "speedup over eager (total time): hand JIT" in out
    assert out.count("PASS") + out.count("MISS") == 2


def test_overhead_svi_prints_its_three_breakdowns(run_script, shell):
    out = run_script("overhead_svi")
    for heading in ("1. steady-state step", "2. the compiling step", "3. torch.jit.trace"):
        assert heading in out
    assert "inside compiled()" in out and "under %%nest" in out
    assert "nest" not in shell.magics_manager.magics["cell"]


def test_bench_compare_prints_a_ratio_per_workload(run_script):
    out = run_script("bench_compare")
    for workload in ("simple SVI", "NUTS", "HMM"):
        assert f"{workload}: compare / (eager + compiled) = " in out
        assert f"{workload}: compare -q / (eager + compiled) = " in out
    assert out.count("PASS") + out.count("MISS") == 6


@pytest.mark.slow  # cold inductor compiles of the three workloads' graphs: minutes on 2 cores
def test_bench_auto_prints_its_table_and_verdicts(run_script):
    out = run_script("bench_auto")
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("case "))
    assert header.split()[1:8] == ["eager", "pyro", "step", "inductor", "--auto", "Pyro", "JIT"], header
    cases = ("simple SVI 20 steps", "simple SVI comprehension 20 steps", "NUTS 5 samples", "HMM 1 epochs")
    for case in cases:
        row = next(line for line in lines if line.startswith(case) and ("PASS" in line or "MISS" in line))
        assert len(row.split()) >= 13, row
    assert "cold: worst --auto / best: " in out
    verdicts = ("PASS  1. every case, cold:", "MISS  1. every case, cold:")
    assert any(line.startswith(verdicts) for line in lines)
    assert "WARM:" not in out  # one round: the cold table only


def test_bench_executor_prints_each_setting_and_the_switching_check(capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    script = importlib.import_module("bench_executor")
    assert script.main(["--quick", "--workloads", "simple SVI", "--settings", "default", "no-opt"]) == 0
    out = capsys.readouterr().out
    assert "simple SVI default" in out and "simple SVI no-opt" in out and "steady step" in out
    assert script.main(["--quick", "--switching"]) == 0
    out = capsys.readouterr().out
    assert "alternating  median step flag on:" in out and "flag off:" in out


def test_bench_real_models_prints_a_table_row_per_model(run_script):
    out = run_script("bench_real_models")
    lines = out.splitlines()
    header = "| model | compiled | verdict | eager / compiled | by hand / compiled | plain / best | risky |"
    assert header in lines
    rows = [line for line in lines if line.startswith("| ") and not line.startswith(("| model", "| ---"))]
    assert [row.split(" | ")[0] for row in rows] == ["| net_empty_guide", "| control_branch"]
    control = rows[1].split(" | ")
    assert control[1] == "yes" and control[6] == "1 |"  # compiled, with the branch named as risky
    assert float(control[5]) > 0  # plain %%pyrojit over the better of eager and by hand
    assert "plain %%pyrojit within 1.15x of the better of eager and Pyro's JIT by hand on" in out


def test_bench_real_models_long_runs_scale_each_run_and_print_their_times(shell, capsys, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))
    script = importlib.import_module("bench_real_models")
    zoo = importlib.import_module("zoo")
    # the run's length scales; a leapfrog's step count (HMC(num_steps=8), in the run cell) does not
    sir, said = script.longer(zoo.BY_NAME["sir_hmc"], 10)
    assert said == ["num_samples=30 x10", "warmup_steps=30 x10"]
    assert "num_samples=300, warmup_steps=300" in sir.run and "num_steps=8," in sir.run
    hmm, said = script.longer(zoo.BY_NAME["hmm"], 10)
    assert said == ["num_steps=25 x10"] and "num_steps=250" in hmm.setup and "num_steps=250" in hmm.by_hand
    before = set(shell.user_ns)
    try:
        assert script.main(["--quick", "--long", "2"], shell=shell) == 0
    finally:
        for variable in set(shell.user_ns) - before:
            del shell.user_ns[variable]
    lines = capsys.readouterr().out.splitlines()
    assert "| model | made longer | plain %%pyrojit ran | eager | by hand | plain | plain / best |" in lines
    rows = [line.split(" | ") for line in lines if line.startswith(("| net_empty_guide", "| control_branch"))]
    assert [(row[0], row[1]) for row in rows] == [("| net_empty_guide", "range(100) x2"),
                                                  ("| control_branch", "range(30) x2")]
    # control_branch's Pyro JIT by hand keeps one side of its branch: no bar for plain %%pyrojit
    assert "computes something else" in rows[1][4] and "computes something else" not in rows[0][4]
    assert all(row[6].rstrip(" |").replace(".", "").isdigit() for row in rows)


def test_bench_capture_prints_both_ways_for_each_capture(capsys, monkeypatch):
    from pyro_jitmagic.compat import capture as compat

    monkeypatch.syspath_prepend(str(BENCH))
    fast = compat._one_fake_mode
    script = importlib.import_module("bench_capture")
    assert script.main(["--quick"]) == 0
    assert compat._one_fake_mode is fast  # put back
    lines = capsys.readouterr().out.splitlines()
    for case in ("simple SVI step", "HMM step, length 6", "NUTS potential"):
        row = next(line for line in lines if line.startswith(case))
        assert re.search(r" \d+\.\d{3} s +\d+\.\d{3} s +\d+\.\d\d$", row), row


def test_climb_overhead_prints_each_way_and_what_the_climb_adds(run_script):
    out = run_script("climb_overhead")
    assert "control_branch: 1 rounds; medians; the cell takes " in out
    assert re.search(r"^  eager +\d", out, re.M) and re.search(r"^  plain %%pyrojit +\d", out, re.M)
    assert re.search(r"the climb adds -?\d+\.\d us a step", out)
