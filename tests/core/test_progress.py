"""Live progress: what the core reports while a cell runs, and how the views show it."""

from __future__ import annotations

import io
from types import SimpleNamespace

import models
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam

from pyro_jitmagic import jitrun as _run
from pyro_jitmagic.display import progress as _progress
from pyro_jitmagic.records.report import Progress
from pyro_jitmagic.run import recorder


def test_progress_reports_steps_and_compiling(monkeypatch):
    monkeypatch.setattr(recorder, "PROGRESS_INTERVAL", 0.0)  # every step, so the test needs no clock
    seen: list[Progress] = []
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    with _run.JitRun(on_progress=seen.append, backend="pyro"):
        for _ in range(3):
            svi.step(models.data())

    compiling = [p for p in seen if p.compiling]
    assert len(compiling) == 1 and compiling[0].steps == 0  # while the first step traced
    steps = [p.steps for p in seen if not p.compiling]
    assert steps == [1, 2, 3]
    assert all(p.run == "compiled" for p in seen)
    assert seen[-1].recent_median_step_seconds is not None
    assert seen[-1].describe().startswith("pyrojit: compiled run, 3 steps, median ")


def test_progress_is_throttled(monkeypatch):
    monkeypatch.setattr(recorder, "PROGRESS_INTERVAL", 3600.0)
    seen: list[Progress] = []
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    with _run.JitRun(on_progress=seen.append, backend="eager"):
        for _ in range(50):
            svi.step(models.data())
    assert seen == []  # 50 fast steps fall within one interval


def test_terminal_progress_is_one_line_cleared_at_the_end(monkeypatch):
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    out = io.StringIO()
    monkeypatch.setattr(_progress.sys, "stdout", out)
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda bundle, raw=False: shown.append(bundle))
    live = _progress.LiveProgress(SimpleNamespace())  # no .kernel: a terminal
    live(Progress("compiled", 10, 0.001, 0, False, 1.0))
    live(Progress("compiled", 20, 0.001, 0, True, 2.0))
    live.finish({"text/plain": "the report"})

    text = out.getvalue()
    assert text.count("\r") == 4 and "\n" not in text  # two updates, then cleared
    assert "20 steps" in text and "compiling..." in text
    assert text.endswith("\r")
    assert shown == [{"text/plain": "the report"}]


def test_progress_waits_before_showing_anything(monkeypatch):
    out = io.StringIO()
    monkeypatch.setattr(_progress.sys, "stdout", out)
    monkeypatch.setattr(_progress, "time", SimpleNamespace(perf_counter=lambda: 5.0))  # no time passes
    live = _progress.LiveProgress(SimpleNamespace())
    live(Progress("compiled", 1, 0.001, 0, False, 0.01))  # a short cell: within DELAY
    assert out.getvalue() == ""


def test_on_cuda_each_step_waits_for_the_gpu_before_reading_the_clock(monkeypatch):
    # No GPU here: pretend CUDA is in use and count the synchronisations.
    import torch

    synced = []
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: synced.append(1))
    svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
    with _run.JitRun(backend="pyro") as run:
        for _ in range(4):
            svi.step(models.data())
    assert len(synced) == 4
    assert len(run.report.svi_runs[0].steps) == 4
