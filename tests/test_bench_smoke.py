"""The SVI benchmark script runs end to end (a few steps, one round); its timings are not checked."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "bench_svi.py"


def _load_bench():
    spec = importlib.util.spec_from_file_location("bench_svi", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    # dataclasses look their module up in sys.modules while the class is built
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


# the hand-written JIT cell calls torch.jit.trace outside %%pyrojit, as the tutorial does
@pytest.mark.filterwarnings(r"ignore:`torch\.jit\.trace` is deprecated:DeprecationWarning")
def test_bench_svi_quick_prints_its_ratios(shell, capsys):
    bench = _load_bench()
    before = set(shell.user_ns)
    try:
        assert bench.main(["--quick"], shell=shell) == 0
    finally:
        for name in set(shell.user_ns) - before:
            del shell.user_ns[name]
    out = capsys.readouterr().out
    for way in ("eager", "hand JIT", "%%pyrojit"):
        assert any(line.startswith(way) for line in out.splitlines()), f"no table row for {way}"
    assert "%%pyrojit / hand JIT (total time):" in out
    assert "speedup over eager (total time): hand JIT" in out
    assert out.count("PASS") + out.count("MISS") == 2
