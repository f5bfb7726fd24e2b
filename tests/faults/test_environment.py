"""Nesting, loading twice, and terminal IPython."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from IPython.utils.capture import capture_output
from patches import assert_nothing_patched

SETUP = """
from pyro.infer import SVI, Trace_ELBO
from pyro.optim import Adam
import pyro_jitmagic
import models
data = models.data()
svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())

def train_in_a_script(n):
    with pyro_jitmagic.compiled(backend="pyro") as inner:
        for _ in range(n):
            svi.step(data)
    return inner.report
"""


def test_a_cell_calling_code_that_uses_the_twin(shell, shell_with, patched_targets):
    ip = shell_with(shell, SETUP)
    with capture_output():
        result = ip.run_cell("%%pyrojit --backend pyro -o outer\nsvi.step(data)\n"
                             "inner = train_in_a_script(3)\nsvi.step(data)")
    assert result.success
    outer, inner = ip.user_ns["outer"], ip.user_ns["inner"]
    assert len(outer.svi_runs[0].steps) == 2 and len(inner.svi_runs[0].steps) == 3
    assert outer.compile_count == 1 and inner.compile_count == 0  # one trace, shared
    assert_nothing_patched(patched_targets)


def test_loading_twice_registers_once(shell):
    with capture_output() as captured:
        shell.run_line_magic("load_ext", "pyro_jitmagic")
    assert "already loaded" in captured.stdout
    assert list(shell.magics_manager.magics["cell"]).count("pyrojit") == 1


def test_terminal_ipython_shows_the_report_as_text(tmp_path):
    # typed into a real terminal IPython: a blank line ends the cell
    tests = Path(__file__).resolve().parents[1]
    typed = textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(tests)!r})
        %load_ext pyro_jitmagic
        from pyro.infer import SVI, Trace_ELBO
        from pyro.optim import Adam
        import models
        svi = SVI(models.gaussian, models.gaussian_guide, Adam({{"lr": 0.01}}), Trace_ELBO())
        data = models.data()
    """) + "%%pyrojit --backend pyro\nfor _ in range(3):\n    svi.step(data)\n\n\nexit()\n"
    ipython = Path(sys.executable).with_name("ipython")
    out = subprocess.run([str(ipython), "--simple-prompt", "--no-banner", "--colors=nocolor"],
                         input=typed, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "compiled   svi: Trace_ELBO -> JitTrace_ELBO" in out.stdout
    assert "3 steps in" in out.stdout
    assert "<div" not in out.stdout  # text, not HTML
    assert "TracerWarning" not in out.stdout + out.stderr
