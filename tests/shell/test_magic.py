"""``%%pyrojit`` driven through an in-process IPython shell, as a user types it."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import textwrap

import models
import pytest
from cells import run
from IPython.utils.capture import capture_output

SETUP = """
import pyro, torch
from pyro.infer import SVI, Trace_ELBO
from pyro.infer.autoguide import AutoDiagonalNormal
from pyro.optim import Adam
import models
pyro.clear_param_store()
data = models.data()
svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({"lr": 0.01}), Trace_ELBO())
"""


@pytest.fixture
def ip(shell, shell_with):
    return shell_with(shell, SETUP)


@pytest.fixture
def ticking_svi(ip, fake_clock):
    """``svi`` on the tutorial's model, its Python taking a millisecond of the fake clock (made again by
    each call): eager steps take it and compiled ones do not, so that no decision of --auto reads this
    machine's time. (On the real clock, a key whose compiled steps measured slower than its eager ones,
    as on a machine loaded right after the trace, stepped back down to eager.)"""
    ip.push({"ticking_gaussian": models.ticking(fake_clock)})

    def new_svi():
        ip.run_cell("pyro.clear_param_store()\n"
                    "svi = SVI(ticking_gaussian, AutoDiagonalNormal(ticking_gaussian), Adam({'lr': 0.01}), "
                    "Trace_ELBO())")

    new_svi()
    return new_svi




def test_loading_the_extension_imports_nothing_heavy():
    code = textwrap.dedent("""
        import sys
        from IPython.testing.globalipapp import start_ipython
        ip = start_ipython()
        before = set(sys.modules)
        ip.run_line_magic("load_ext", "pyro_jitmagic")
        assert "pyrojit" in ip.magics_manager.magics["cell"]
        new = set(sys.modules) - before
        heavy = [m for m in ("torch", "pyro", "ipywidgets", "matplotlib") if m in new]
        print("heavy:", heavy)
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "heavy: []" in out.stdout


def test_unload_and_reload_leave_nothing_behind(ip, patched_targets):
    from patches import assert_nothing_patched

    ip.run_line_magic("unload_ext", "pyro_jitmagic")
    try:
        assert "pyrojit" not in ip.magics_manager.magics["cell"]
        result, captured = run(ip, "%%pyrojit --backend pyro\nsvi.step(data)")
        assert "Cell magic `%%pyrojit` not found" in captured.stdout + captured.stderr
        assert_nothing_patched(patched_targets)
    finally:
        ip.run_line_magic("load_ext", "pyro_jitmagic")
    ip.run_line_magic("reload_ext", "pyro_jitmagic")
    result, _ = run(ip, "%%pyrojit --backend pyro -q\nsvi.step(data)")
    assert result.success
    assert_nothing_patched(patched_targets)


def test_report_is_one_display_with_text_and_html(ip):
    result, captured = run(ip, "%%pyrojit --backend pyro\nfor _ in range(3):\n    svi.step(data)")

    assert result.success
    (output,) = captured.outputs
    assert {"text/plain", "text/html"} <= set(output.data)
    assert "svi: Trace_ELBO -> JitTrace_ELBO" in output.data["text/plain"]
    assert "svi: Trace_ELBO -&gt; JitTrace_ELBO" in output.data["text/html"]
    assert "3 steps" in output.data["text/plain"]


def test_a_loss_called_directly_has_its_row_in_the_text_and_the_html(ip):
    run(ip, "loss_fn = Trace_ELBO().differentiable_loss")  # an earlier cell
    result, captured = run(ip, "%%pyrojit --backend pyro -o report\nfor _ in range(3):\n"
                               "    loss_fn(models.gaussian, models.gaussian_guide, data).backward()")

    assert result.success
    (output,) = captured.outputs
    text, html = output.data["text/plain"], output.data["text/html"]
    last = ip.user_ns["report"].loss_runs[0].last_loss
    assert "loss_fn: Trace_ELBO -> JitTrace_ELBO" in text
    assert "loss calls loss_fn: 3 calls in " in text and f"last loss {last:.6g}" in text
    assert "<th>loss calls</th><td>loss_fn: 3 calls in " in html and f"last loss {last:.6g}" in html
    assert "loss_fn: Trace_ELBO -&gt; JitTrace_ELBO" in html


def test_quiet_displays_nothing_and_o_stores_an_immutable_report(ip):
    from pyro_jitmagic import JitReport

    result, captured = run(ip, "%%pyrojit --backend pyro -q -o report\nsvi.step(data)")

    assert result.success and captured.outputs == []
    report = ip.user_ns["report"]
    assert isinstance(report, JitReport)
    with pytest.raises(dataclasses.FrozenInstanceError):
        report.error = "changed"
    assert report.svi_runs[0].steps[0].loss == pytest.approx(report.svi_runs[0].losses[0])


def test_help_comes_from_the_docstring(ip):
    with capture_output() as captured:
        ip.run_line_magic("pinfo", "%%pyrojit")
    text = captured.stdout
    assert "%%pyrojit [--compare] [--seed N] [-o NAME]" in text
    assert "--warnings {capture,show,error}" in text
    assert "--auto" in text and "--executor {adaptive,no-opt,optimizing,legacy}" in text
    assert "Run the cell with its Pyro inference compiled" in text


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("--bogus", "unrecognized arguments: --bogus"),
        ("--warnings loud", "argument --warnings: invalid choice: 'loud'"),
        ("--executor fast", "argument --executor: invalid choice: 'fast'"),
        ("svi.step(data)", "unrecognized arguments: svi.step(data)"),
        ("{data}", "unrecognized arguments: {data}"),
        ("$data", "unrecognized arguments: $data"),
        ("-o 1report", "-o needs a variable name"),
    ],
)
def test_bad_magic_lines_are_one_line_usage_errors_and_nothing_runs(ip, line, message, patched_targets):
    from patches import assert_nothing_patched

    result, captured = run(ip, f"%%pyrojit {line}\nran = True")

    assert not result.success
    assert "ran" not in ip.user_ns
    lines = [ln for ln in (captured.stdout + captured.stderr).splitlines() if ln.strip()]
    assert lines == [f"UsageError: {lines[0].removeprefix('UsageError: ')}"]
    assert message in lines[0]
    assert_nothing_patched(patched_targets)


def test_empty_cell_is_a_usage_error(ip):
    result, captured = run(ip, "%%pyrojit --backend pyro\n\n")
    assert not result.success
    assert "the cell is empty" in captured.stdout + captured.stderr


def test_error_traceback_points_at_the_cell_line_and_the_report_still_shows(ip, patched_targets):
    from patches import assert_nothing_patched

    result, captured = run(ip, "%%pyrojit --backend pyro\nsvi.step(data)\n"
                               "raise ValueError('boom in my cell')\n")

    assert isinstance(result.error_in_exec, ValueError)
    out = captured.stdout
    assert out.count("ValueError") >= 1 and out.count("Traceback") <= 1
    assert "raise ValueError('boom in my cell')" in out
    assert "Cell In[" in out
    (report,) = captured.outputs
    assert "stopped early" in report.data["text/plain"]
    assert "ValueError: boom in my cell" in report.data["text/plain"]
    assert_nothing_patched(patched_targets)


def test_syntax_error_is_reported_with_the_users_line_and_nothing_is_patched(ip, patched_targets):
    from patches import assert_nothing_patched

    result, captured = run(ip, "%%pyrojit --backend pyro\nsvi.step(data\n")
    assert not result.success
    assert "SyntaxError" in captured.stdout
    assert captured.outputs == []
    assert_nothing_patched(patched_targets)


def test_ipython_syntax_and_last_expression_work_inside_the_cell(ip):
    result, captured = run(ip, "%%pyrojit --backend pyro -q\n%time loss = svi.step(data)\n"
                               "files = !echo hello\nloss + 1")

    assert result.success
    assert list(ip.user_ns["files"]) == ["hello"]
    assert "Wall time" in captured.stdout
    assert str(ip.user_ns["loss"] + 1) in captured.stdout


def test_risky_warning_html_escapes_the_users_code(ip):
    ip.run_cell(textwrap.dedent("""
        import pyro.distributions as dist
        def hostile(data):
            loc = pyro.sample("loc", dist.Normal(0., 1.))
            tag = "<img src=x onerror=alert(1)>" if loc > 0 else "</script>"
            with pyro.plate("d", data.size(0)):
                pyro.sample("obs", dist.Normal(loc, 1.), obs=data)
        hostile_svi = SVI(hostile, models.branchy_guide, Adam({"lr": 0.01}), Trace_ELBO())
    """))
    result, captured = run(ip, "%%pyrojit --backend pyro\nhostile_svi.step(data)")

    assert result.success
    (output,) = captured.outputs
    html = output.data["text/html"]
    assert "<img src=x" not in html and "</script>" not in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "Risky JIT warning" in html
    assert "cell In[" in output.data["text/plain"]  # the user's cell is named as IPython names it


def test_advice_is_printed_beside_the_original_error(ip):
    ip.run_cell(textwrap.dedent("""
        def with_n(data, n):
            models.gaussian(data)
        def guide_n(data, n):
            models.gaussian_guide(data)
        from pyro.infer import JitTrace_ELBO
        svi_n = SVI(with_n, guide_n, Adam({"lr": 0.01}), JitTrace_ELBO())  # Pyro's JIT as written
    """))
    result, captured = run(ip, "%%pyrojit --backend pyro\nsvi_n.step(data, 3)")

    assert isinstance(result.error_in_exec, RuntimeError)
    assert "cannot be traced" in captured.stdout
    assert "pyro_jitmagic: positional argument 2 of the step is a int" in captured.stdout
    (report,) = captured.outputs
    assert "advice" in report.data["text/plain"]


def test_the_same_report_through_the_twin_and_the_magic(ip):
    from pyro_jitmagic import compiled

    run(ip, "%%pyrojit --backend pyro -q -o magic_report\nfor _ in range(2):\n    svi.step(data)")
    with compiled(names=ip.user_ns, backend="pyro") as twin:
        for _ in range(2):
            ip.user_ns["svi"].step(ip.user_ns["data"])
    magic = ip.user_ns["magic_report"]
    assert [dataclasses.astuple(s) for s in twin.report.switches] == [
        dataclasses.astuple(s) for s in magic.switches]
    assert len(twin.report.svi_runs[0].steps) == len(magic.svi_runs[0].steps) == 2
    assert twin.report.compile_count == 0  # the magic's trace was kept for the twin


def test_a_plain_cell_climbs_as_auto_does_and_a_named_backend_compiles_from_its_first_step(ip, auto_policy,
                                                                                           ticking_svi):
    auto_policy(prior_compile_steps={"svi": 0.0})  # Pyro's trace pays once three steps measured it
    run(ip, "%%pyrojit -q -o plain\nfor _ in range(30):\n    svi.step(data)")
    plain = ip.user_ns["plain"]
    (decision,) = plain.auto  # the climb's row: eager first, then Pyro's JIT
    assert (decision.owner, decision.eager_steps, decision.compiled_at) == ("svi", 3, 4)
    assert "--auto" in str(plain)

    ip.run_cell("pyro.clear_param_store()\n"
                "svi = SVI(models.gaussian, AutoDiagonalNormal(models.gaussian), Adam({'lr': 0.01}), "
                "Trace_ELBO())")
    run(ip, "%%pyrojit --backend pyro -q -o named\nfor _ in range(30):\n    svi.step(data)")
    named = ip.user_ns["named"]
    assert named.auto == () and "--auto" not in str(named)  # no climb: Pyro's JIT throughout
    assert "JitTrace_ELBO" in named.switches[0].after
    assert [s.compiled for s in named.svi_runs[0].steps] == [True] * 30


def test_auto_shows_each_decision_in_the_text_and_the_html(ip, auto_policy, ticking_svi):
    # compiling is expected to cost nothing: the key compiles once three eager steps measured it,
    # and on the fake clock its compiled steps stay faster than its eager ones
    auto_policy(prior_compile_steps={"svi": 0.0})
    result, captured = run(ip, "%%pyrojit --auto\nfor _ in range(30):\n    svi.step(data)")

    assert result.success
    (output,) = captured.outputs
    text, html = output.data["text/plain"], output.data["text/html"]
    assert re.search(r"--auto     in all: (saved|lost) \S+ \S+ vs always eager, (saved|lost) \S+ \S+ vs "
                     r"always compiled", text)
    assert "svi, 1 positional arg: 3 eager steps, compiled at step 4, 26 compiled after." in text
    assert "Why: compiled after 3 eager steps" in text
    assert "  executor " not in text  # no key can move before thirty compiled steps
    assert "<table class='pyrojit-auto'>" in html and "<td>1 positional arg</td>" in html


def test_auto_reads_how_long_the_cell_runs_from_its_loop(ip, auto_policy):
    import pyro_jitmagic

    # a capture costs 20 low steps and repays 1 - 1/1.7 of a step per step after it: the 57 steps
    # left after three measured ones repay it, 27 do not
    def policy():
        return auto_policy(memory=None, prior_capture_steps=20.0)

    policy()
    result, _ = run(ip, "%%pyrojit --auto --backend step -q -o r\nfor _ in range(60):\n    svi.step(data)")
    assert result.success
    (row,) = [d for d in ip.user_ns["r"].auto if d.path]
    assert row.state == "step" and row.path[-1].startswith("step at step 4 ")
    assert "the ~57 steps expected (the cell's loops run 60 steps)" in row.why

    policy()
    ip.run_cell(SETUP)  # a new SVI
    result, _ = run(ip, "%%pyrojit --auto --backend step -q -o r\nfor _ in range(30):\n    svi.step(data)")
    assert result.success
    assert not any(d.path for d in ip.user_ns["r"].auto)  # stayed on Pyro's JIT
    # with no loop to read (a with block), a young SVI expects ~200 steps and climbs
    ip.run_cell(SETUP)
    with pyro_jitmagic.compiled(auto=policy(), backend="step", names=ip.user_ns) as twin:
        for _ in range(30):
            ip.user_ns["svi"].step(ip.user_ns["data"])
    assert any(d.path for d in twin.report.auto)


@pytest.mark.parametrize("loop", [
    "for _ in range({n}):\n    svi.step(data)",
    "losses = [svi.step(data) for _ in range({n})]",  # read alike: the comprehension's range
])
def test_auto_compiles_pyros_trace_only_when_the_cells_loop_repays_it(ip, auto_policy, ticking_svi, loop):
    # a trace costs 20 eager steps and compiled steps take half as long: the 57 steps left after
    # three measured ones repay it, the 27 of a 30-step loop do not, and knowing the cell's
    # length, rent or buy (which would compile once 20 eager steps were spent) is off
    def policy():
        return auto_policy(prior_compile_steps={"svi": 20.0}, prior_speedup={"svi": 2.0})

    policy()
    result, _ = run(ip, "%%pyrojit --auto --backend pyro -q -o r\n" + loop.format(n=60))
    assert result.success
    (row,) = ip.user_ns["r"].auto
    assert (row.state, row.eager_steps, row.compiled_steps) == ("compiled", 3, 57)
    assert "the ~57 calls expected to follow (the cell's loops run 60 steps)" in row.why

    policy()
    ticking_svi()  # a new SVI
    result, _ = run(ip, "%%pyrojit --auto --backend pyro -q -o r\n" + loop.format(n=30))
    assert result.success
    (row,) = ip.user_ns["r"].auto
    assert (row.state, row.eager_steps, row.compiled_steps) == ("eager", 30, 0)
    assert "stayed eager: the ~1 calls expected to follow (the cell's loops run 30 steps)" in row.why


def test_auto_names_a_risky_line_of_the_trace_it_compiles(ip, auto_policy):
    # as above, the 57 steps after three measured ones repay the trace: it is built, and the line
    # it baked in is named, as a named backend names it
    auto_policy(prior_compile_steps={"svi": 20.0}, prior_speedup={"svi": 2.0})
    ip.run_cell('branchy_svi = SVI(models.branchy, models.branchy_guide, Adam({"lr": 0.01}), Trace_ELBO())')
    cell = "%%pyrojit --auto --backend pyro -q -o r\nfor _ in range(60):\n    branchy_svi.step(data)"
    result, _ = run(ip, cell)
    assert result.success
    report = ip.user_ns["r"]
    (row,) = report.auto  # (the sentinel then finds the baked-in branch wrong: the rest runs eager)
    assert row.why.startswith("compiled after 3 eager steps") and report.compilations, row.why
    assert [w.source for w in report.risky_warnings] == ["scale = 1.0 if loc > 0 else 2.0"]


def test_an_interrupted_auto_cell_starts_no_codegen_it_had_put_off(ip, auto_policy, monkeypatch, fake_clock):
    # Ctrl-C means stop: the cell's end starts nothing new. A cheap capture pays at once, and on the
    # fake clock the steps never outlast a cold codegen: it is put off until the cell ends
    from pyro_jitmagic.wholestep.backends import SwitchesToInductor

    started = []
    monkeypatch.setattr(SwitchesToInductor, "build_inductor",
                        lambda self, on_done=None, delay=0.0: started.append(self))
    auto_policy(memory=None, prior_capture_steps=3.0)
    result, _ = run(ip, "%%pyrojit --auto --backend inductor -q -o r\nfor _ in range(40):\n"
                        "    svi.step(data)\nraise KeyboardInterrupt")

    assert isinstance(result.error_in_exec, KeyboardInterrupt)
    (row,) = [d for d in ip.user_ns["r"].auto if d.path]
    assert row.path[1].startswith("step at step 4")  # it climbed, and put its codegen off
    assert started == []
    assert any("the cell was interrupted: inductor's codegen, put off until it ended, was not started" in n
               for n in ip.user_ns["r"].notes)


def test_compare_auto_panel_shows_the_decisions(ip, auto_policy, ticking_svi):
    auto_policy(prior_compile_steps={"svi": 0.0})  # compiles after three eager steps, certainly
    result, _ = run(ip, "%%pyrojit --compare --auto -q -o c\nfor _ in range(30):\n    svi.step(data)")

    assert result.success
    c = ip.user_ns["c"]
    (decision,) = c.compiled.auto
    assert decision.state == "compiled" and decision.eager_steps == 3
    assert c.agree  # eager steps, then compiled ones: the same losses as the eager run
    html = c._repr_html_()
    assert "<h4>--auto</h4>" in html and "pyrojit-auto" in html
    assert "executor: adaptive" in html
