"""Installing the package keeps the user's torch; what a run needs from torch is checked when it starts."""

from __future__ import annotations

import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import models
import pytest
import torch
from patches import assert_nothing_patched
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam

from pyro_jitmagic import JitMagicError, compiled

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _torch_requirement():
    tomllib = pytest.importorskip("tomllib")
    from packaging.requirements import Requirement

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    (torch_req,) = [Requirement(r) for r in project["dependencies"] if Requirement(r).name == "torch"]
    return torch_req


def test_the_declared_torch_requirement_admits_newer_releases():
    specifier = _torch_requirement().specifier
    for version in ("2.13.0", "2.14.1", "2.15.0", "2.20.0", "3.0.0"):
        assert specifier.contains(version), version
    assert not specifier.contains("2.0.1")  # older than anything checked


def _svi():
    return SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.01}), Trace_ELBO())


def test_a_torch_whose_trace_fails_runs_the_cell_eager_and_says_why_in_one_line(monkeypatch,
                                                                             patched_targets):
    def trace(*args, **kwargs):
        raise RuntimeError("torch.jit.trace is deprecated and now an error\nsecond line")

    monkeypatch.setattr(torch.jit, "trace", trace)
    svi = _svi()
    with compiled(backend="pyro") as run:
        losses = [svi.step(models.data()) for _ in range(2)]
    assert all(loss == loss for loss in losses)
    report = run.report
    assert report.compile_count == 0 and not report.switches[0].compiled
    (note,) = [n for n in report.notes if "torch.jit.trace" in n]
    assert note == (f"torch.jit.trace failed in torch {torch.__version__} (RuntimeError: torch.jit.trace "
                    "is deprecated and now an error): the cell ran eager")
    monkeypatch.undo()
    assert_nothing_patched(patched_targets)


def test_a_torch_without_executor_settings_compiles_under_its_own_executor(monkeypatch, patched_targets):
    monkeypatch.delattr(torch._C, "_set_graph_executor_optimize")
    svi = _svi()
    with compiled(backend="pyro") as run:
        for _ in range(3):
            svi.step(models.data())
    report = run.report
    assert report.error is None and report.compile_count == 1
    assert (f"--executor adaptive left the TorchScript executor as torch set it: torch {torch.__version__} "
            "has no torch._C._set_graph_executor_optimize (traces ran under torch's own executor)"
            ) in report.notes
    monkeypatch.undo()
    assert_nothing_patched(patched_targets)


def test_an_executor_asked_for_by_name_stops_with_one_line_when_torch_cannot_set_it(monkeypatch,
                                                                                   patched_targets):
    monkeypatch.delattr(torch._C, "_jit_set_profiling_executor")
    svi = _svi()
    with pytest.raises(JitMagicError) as caught, compiled(executor="legacy", backend="pyro"):
        svi.step(models.data())
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("--executor legacy needs TorchScript's executor settings, and torch ")
    assert "leave out --executor" in message
    monkeypatch.undo()
    assert_nothing_patched(patched_targets)


# -- installing next to a newer torch ----------------------------------------------


def _pip_env():
    """pip's environment without this machine's pip configuration (its indexes, links and
    constraints): the resolution must depend on this project's requirements alone."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_") and k != "PYTHONPATH"}
    return {**env, "PIP_CONFIG_FILE": os.devnull, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}


def _fake_wheel(directory, name, version, requires=()):
    """A wheel with metadata and nothing else: enough for pip to resolve against."""
    dist_info = f"{name.replace('-', '_')}-{version}.dist-info"
    path = directory / f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    files = {
        f"{dist_info}/METADATA": "Metadata-Version: 2.1\n"
                                 f"Name: {name}\nVersion: {version}\n"
                                 + "".join(f"Requires-Dist: {r}\n" for r in requires),
        f"{dist_info}/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                              "Tag: py3-none-any\n",
    }
    record = "".join(f"{f},,\n" for f in files) + f"{dist_info}/RECORD,,\n"
    with zipfile.ZipFile(path, "w") as wheel:
        for f, text in files.items():
            wheel.writestr(f, text)
        wheel.writestr(f"{dist_info}/RECORD", record)
    return path


def _project_wheel(tmp_path, name, torch_requirement=None):
    """This project's wheel (its metadata is what matters), built offline from a copy of the
    source, so that the build leaves nothing in the working tree; ``torch_requirement``
    replaces the declared one."""
    source = tmp_path / name
    shutil.copytree(ROOT, source, ignore=shutil.ignore_patterns(
        ".git", ".venv", "*.egg-info", "build", "dist", "notebooks", "artifacts", "__pycache__", ".*_cache"))
    if torch_requirement is not None:
        pyproject = source / "pyproject.toml"
        text = pyproject.read_text()
        (line,) = [x for x in text.splitlines() if x.strip().startswith('"torch')]
        pyproject.write_text(text.replace(line, f'    "{torch_requirement}",'))
    out = tmp_path / f"{name}-wheel"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "--no-index", "-q", "-w", str(out), str(source)], check=True, env=_pip_env())
    (wheel,) = out.glob("pyro_jitmagic-*.whl")
    return wheel


def _dry_run(python, wheelhouse, wheel):
    result = subprocess.run([str(python), "-m", "pip", "install", "--dry-run", "--no-index",
                             "--find-links", str(wheelhouse), "--report", "-", "-q", str(wheel)],
                            capture_output=True, text=True, env=_pip_env())
    return result


@pytest.mark.slow
def test_installing_the_package_keeps_an_installed_newer_torch(tmp_path):
    # A throwaway venv holds a metadata-only torch 2.15.0, and metadata-only pyro-ppl and
    # ipython that ask for nothing but torch>=2.0 (pyro-ppl 1.9.2's own torch requirement; their
    # other requirements are left out, as they say nothing about torch). pip resolves this
    # project's wheel against them, offline.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    fakes = tmp_path / "fakes"
    fakes.mkdir()
    installed = [_fake_wheel(fakes, "torch", "2.15.0"),
                 _fake_wheel(fakes, "pyro-ppl", "1.9.2", ["torch>=2.0"]),
                 _fake_wheel(fakes, "ipython", "9.0.0")]
    subprocess.run([str(python), "-m", "pip", "install", "--no-index", "-q", *map(str, installed)],
                   check=True, env=_pip_env())
    wheelhouse = tmp_path / "wheelhouse"
    wheelhouse.mkdir()

    result = _dry_run(python, wheelhouse, _project_wheel(tmp_path, "ours"))
    assert result.returncode == 0, result.stderr
    would_install = {item["metadata"]["name"]: item["metadata"]["version"]
                     for item in json.loads(result.stdout)["install"]}
    assert would_install == {"pyro_jitmagic": "0.1.0"}  # torch 2.15.0 stays

    # the same with the former cap: pip wants to replace torch (and, offline, cannot)
    result = _dry_run(python, wheelhouse, _project_wheel(tmp_path, "capped", "torch>=2.1,<2.15"))
    assert result.returncode != 0
    assert "torch<2.15,>=2.1" in result.stderr.replace(" ", ""), result.stderr
