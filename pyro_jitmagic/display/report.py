"""A :class:`~pyro_jitmagic.records.report.JitReport` as text and as HTML.

Both forms say the same things in the same order, section by section, with the
risky warnings spelled out. Every string that came from user code is escaped in
the HTML.
"""

from __future__ import annotations

import html
import math

from ..options import DEFAULT_EXECUTOR, EXECUTORS
from ..records.report import AutoDecision, CapturedWarning, JitReport, LossRun
from ..records.units import plural as _plural
from ..records.units import seconds


def _rows(report: JitReport) -> list[tuple[str, list[str]]]:
    """(section, lines) in display order; shared by the text and HTML forms."""
    rows: list[tuple[str, list[str]]] = []
    switched = [f"{s.target}: {s.before} -> {s.after}" if s.switched else
                f"{s.target}: {s.after} ({s.reason})"
                for s in report.switches if s.compiled]
    if switched:
        rows.append(("compiled", switched))
    eager = [f"{s.target}: {s.before} ({s.reason})" for s in report.switches if not s.compiled]
    if eager:
        rows.append(("ran eager", eager))
    if report.warmup:
        rows.append(("warm-up", [f"{w.target}: {w.detail} ({seconds(w.seconds)})"
                                 for w in report.warmup]))
    if report.compilations:
        lines = [f"{report.compile_count} built, costing {seconds(report.compile_seconds)} "
                 f"(tracing itself {seconds(report.trace_seconds)})"]
        lines += [f"{c.owner}: {c.key}" for c in report.compilations]
        rows.append(("traces", lines))
    if report.executor:
        rows += _executor_rows(report)
    if report.auto:
        rows.append(("--auto", auto_lines(report)))
    steps = []
    for run in report.svi_runs:
        if not run.steps:
            continue
        first = run.steps[0].seconds
        steps.append(f"{run.target}: {_plural(len(run.steps), 'step')} in {seconds(run.total_seconds)}, "
                     f"median {seconds(run.median_step_seconds)}, first {seconds(first)}, "
                     f"last loss {run.steps[-1].loss:.6g}")
    if steps:
        rows.append(("SVI", steps))
    losses = [loss_run_line(run) for run in report.loss_runs if run.calls]
    if losses:
        rows.append(("loss calls", losses))
    mcmc = []
    for m in report.mcmc_runs:
        rate = m.samples_per_second
        mcmc.append(f"{m.target}: {m.num_samples} samples + {m.warmup_steps} warm-up; "
                    f"setup {seconds(m.setup_seconds)}, warm-up {seconds(m.warmup_seconds)}, "
                    f"sampling {seconds(m.sampling_seconds)}"
                    + (f" ({rate:.3g} samples/s)" if rate else "")
                    + ("" if m.completed else "; did not finish"))
    if mcmc:
        rows.append(("MCMC", mcmc))
    if report.warnings:
        counts = {"risky": 0, "benign": 0, "deprecation": 0}
        for w in report.warnings:
            counts[w.kind] += w.count
        summary = ", ".join(f"{n} {kind}" for kind, n in counts.items() if n)
        rows.append(("warnings", [f"{summary} captured"]))
    if report.guards:
        rows.append(("guards", list(report.guards)))
    if report.sentinel_checks:
        checked = (f"{_plural(report.sentinel_checks, 'compiled call')} checked against eager's loss "
                   f"({seconds(report.sentinel_seconds)})")
        rows.append(("sentinel", [f"{checked}: all agreed" if not report.sentinel_findings else
                                  f"{checked}: {report.sentinel_findings} disagreed (see guards)"]))
    if report.notes:
        rows.append(("note", list(report.notes)))
    return rows


def _executor_rows(report: JitReport) -> list[tuple[str, list[str]]]:
    """The executor, when there is news: a key the default (adaptive) executor moved, or an
    executor asked for by name. How adaptive works is in %%pyrojit? and the README, not on
    every cell."""
    moved = [f"{c.owner}, {c.key}: {c.why}" for c in report.executor_choices]
    if report.executor != DEFAULT_EXECUTOR:
        return [("executor", [f"{report.executor}: {EXECUTORS[report.executor]}", *moved])]
    if moved:
        return [("executor", [f"{report.executor}: {moved[0]}", *moved[1:]])]
    return []


def loss_run_line(run: LossRun) -> str:
    """One ELBO loss called directly: its calls, their median time, and the last loss."""
    return (f"{run.target}: {_plural(len(run.calls), 'call')} in {seconds(run.total_seconds)}, "
            f"median {seconds(run.median_call_seconds)}, last loss {run.calls[-1].loss:.6g}")


def _saved(value: float | None) -> str:
    if value is None:
        return "n/a"
    if value == 0:  # a key that ran eager throughout, against always eager
        return "nothing saved or lost"
    return f"saved {seconds(value)}" if value > 0 else f"lost {seconds(-value)}"


def _vs_eager(d: AutoDecision, unit: str) -> str:
    """Why the figure against always eager is what it is, from the figures beside it."""
    if not d.compiled_steps or d.eager_step_seconds is None or d.compiled_step_seconds is None:
        return ""
    gain = d.eager_step_seconds - d.compiled_step_seconds
    steps = _plural(d.compiled_steps, f"compiled {unit}")
    text = (f"{steps} at {seconds(gain)} less each" if gain >= 0
            else f"{steps} at {seconds(-gain)} more each: compiled {unit}s were slower")
    if d.compiled_at is not None and d.compile_seconds is not None:
        text += f", less compiling's {seconds(d.compile_seconds)}"
        if gain > 0 and (d.saved_vs_eager or 0) < 0:
            repaid = math.ceil(d.compile_seconds / gain)
            text += f": not repaid yet, that takes ~{_plural(repaid, f'compiled {unit}')}"
    return f" ({text})"


def _vs_compiled(d: AutoDecision, unit: str) -> str:
    """Why the figure against always compiled is what it is."""
    if d.eager_step_seconds is None or d.compiled_step_seconds is None:
        return ""
    parts = []
    if d.eager_steps:
        gain = d.eager_step_seconds - d.compiled_step_seconds
        parts.append(f"{_plural(d.eager_steps, f'eager {unit}')} at "
                     f"{seconds(abs(gain))} {'more' if gain >= 0 else 'less'} each")
    if d.compiled_at is None and not d.compiled_before and d.compile_seconds is not None:
        parts.append(f"no compiling's {seconds(d.compile_seconds)} to pay")
    return f" ({', '.join(parts)})" if parts else ""


def _tier_text(d: AutoDecision) -> str:
    versus = ", ".join(f"{name} {seconds(total)}" for name, total in d.versus)
    return (f"{' -> '.join(d.path)}; {seconds(d.seconds)} in all; each tier alone "
            f"(estimated from the measured steps): {versus}. Why: {d.why}.")


def tier_line(d: AutoDecision) -> str:
    """A call signature that climbed tiers: its path, and what each single tier would have taken."""
    return f"{d.owner}, {d.key}: {_tier_text(d)}"


def auto_decision_line(d: AutoDecision) -> str:
    """One key's decision: what ran how, what it cost and saved, and why."""
    if d.path:
        return tier_line(d)
    unit = "evaluation" if d.kind == "potential" else "step"
    if d.compiled_at is not None:
        ran = (f"{_plural(d.eager_steps, f'eager {unit}')}, compiled at {unit} {d.compiled_at}, "
               f"{d.compiled_steps - 1} compiled after")
    elif d.compiled_steps:
        ran = _plural(d.compiled_steps, f"compiled {unit}")
    else:
        ran = _plural(d.eager_steps, f"eager {unit}")
    est = ", estimated" if d.estimated else ""
    return (f"{d.owner}, {d.key}: {ran}. A {unit} eager {seconds(d.eager_step_seconds)}, compiled "
            f"{seconds(d.compiled_step_seconds)}; compiling {seconds(d.compile_seconds)}{est}. "
            f"{_saved(d.saved_vs_eager).capitalize()} vs always eager{_vs_eager(d, unit)}, "
            f"{_saved(d.saved_vs_compiled)} vs always compiled{_vs_compiled(d, unit)}. Why: {d.why}.")


def auto_lines(report: JitReport) -> list[str]:
    lines = [f"in all: {_saved(report.auto_saved_vs_eager)} vs always eager, "
             f"{_saved(report.auto_saved_vs_compiled)} vs always compiled "
             "(estimated from the measured step times)"]
    return lines + [auto_decision_line(d) for d in report.auto]


def _read_in(w: CapturedWarning) -> str:
    """For a risky read inside torch or Pyro: where, and that nobody has vouched for it."""
    return f"read in {w.origin}, a read pyro_jitmagic has not reviewed" if w.origin else ""


def _risky_line(w: CapturedWarning) -> str:
    first = w.message.splitlines()[0]
    times = f" (x{w.count})" if w.count > 1 else ""
    inside = f"\n    {_read_in(w)}" if w.origin else ""
    return f"{w.where}: {w.source}\n    {first}{times}{inside}"


def report_text(report: JitReport) -> str:
    title = "pyrojit"
    if report.error:
        title += " (stopped early)"
    lines = [f"{title}: {seconds(report.seconds)}"]
    for section, items in _rows(report):
        for i, item in enumerate(items):
            lines.append(f"  {section if i == 0 else '':<10} {item}")
    for w in report.risky_warnings:
        lines.append("  RISKY      " + _risky_line(w).replace("\n", "\n           "))
    if report.risky_warnings:
        lines.append("             a tensor became a Python value while tracing: the compiled step "
                     "may compute a wrong loss for other inputs")
    if report.error:
        lines.append(f"  error      {report.error}")
    if report.advice:
        lines.append(f"  advice     {report.advice}")
    return "\n".join(lines)


STYLE = (
    "<style>"
    ".pyrojit{font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;line-height:1.4}"
    ".pyrojit table{border-collapse:collapse}"
    ".pyrojit th{text-align:left;vertical-align:top;padding:2px 12px 2px 0;font-weight:600;"
    "white-space:nowrap}"
    ".pyrojit td{padding:2px 12px 2px 0;vertical-align:top}"
    ".pyrojit .risky{background:#fdecea;border-left:4px solid #c62828;padding:6px 10px;margin:6px 0}"
    ".pyrojit .error{background:#fff4e5;border-left:4px solid #ef6c00;padding:6px 10px;margin:6px 0}"
    ".pyrojit code{font-family:var(--jp-code-font-family,monospace)}"
    "</style>"
)


def report_html(report: JitReport) -> str:
    esc = html.escape
    title = "pyrojit" + (" — stopped early" if report.error else "")
    parts = [STYLE, '<div class="pyrojit">',
             f"<strong>{esc(title)}</strong> <span>{esc(seconds(report.seconds))}</span>",
             "<table>"]
    for section, items in _rows(report):
        cells = "<br>".join(esc(item) for item in items)
        if section == "--auto":
            cells = auto_table_html(report)
        parts.append(f"<tr><th>{esc(section)}</th><td>{cells}</td></tr>")
    parts.append("</table>")
    for w in report.risky_warnings:
        first = w.message.splitlines()[0]
        times = f" (×{w.count})" if w.count > 1 else ""
        inside = f"<br>{esc(_read_in(w))}" if w.origin else ""
        parts.append(
            f'<div class="risky"><strong>Risky JIT warning</strong> at {esc(w.where)}: '
            f"<code>{esc(w.source)}</code><br>{esc(first)}{esc(times)}{inside}<br>"
            "<em>A tensor became a Python value while tracing: the compiled step may compute "
            "a wrong loss for other inputs.</em></div>")
    if report.error:
        advice = f"<br><strong>Advice:</strong> {esc(report.advice)}" if report.advice else ""
        parts.append(f'<div class="error"><strong>Error:</strong> <code>{esc(report.error)}</code>'
                     f"{advice}</div>")
    parts.append("</div>")
    return "".join(parts)


def auto_table_html(report: JitReport) -> str:
    """--auto's decisions as a table: a row of figures per key with its reason under it, then the total."""
    esc = html.escape
    heads = ("owner", "key", "steps eager", "compiled at", "steps compiled", "eager step", "compiled step",
             "compile", "vs eager", "vs compiled")
    rows = []
    for d in report.auto:
        if d.path:  # a signature that climbed tiers: its path across the row
            rows.append(f"<tr class='tiers'><td>{esc(d.owner)}</td><td>{esc(d.key)}</td>"
                        f"<td colspan='{len(heads) - 2}'>{esc(_tier_text(d))}</td></tr>")
            continue
        est = "*" if d.estimated else ""
        cells = (d.owner, d.key, str(d.eager_steps), "" if d.compiled_at is None else str(d.compiled_at),
                 str(d.compiled_steps), seconds(d.eager_step_seconds),
                 seconds(d.compiled_step_seconds) + est, seconds(d.compile_seconds) + est,
                 _saved(d.saved_vs_eager), _saved(d.saved_vs_compiled))
        rows.append("<tr>" + "".join(f"<td>{esc(x)}</td>" for x in cells) + "</tr>")
        span = len(heads) - 1
        rows.append(f"<tr class='why'><td></td><td colspan='{span}'><em>{esc(d.why)}</em></td></tr>")
    total = (f"In all, {_saved(report.auto_saved_vs_eager)} against running every step eager and "
             f"{_saved(report.auto_saved_vs_compiled)} against compiling every key on its first step, "
             "estimated from the measured step times (* estimated from the session's other keys).")
    head = "".join(f"<th>{h}</th>" for h in heads)
    return ("<style>.pyrojit .pyrojit-auto th{white-space:normal}</style>"
            f"<table class='pyrojit-auto'><tr>{head}</tr>{''.join(rows)}</table>"
            f"<p>{esc(total)}</p>")


def warnings_html(report: JitReport) -> str:
    esc = html.escape
    if not report.warnings:
        return "<p>No JIT warnings were raised.</p>"
    rows = "".join(
        f"<tr class='{w.kind}-row'><td>{esc(w.kind)}</td><td>{w.count}</td><td>{esc(w.where)}</td>"
        f"<td><code>{esc(w.source)}</code></td><td>{esc(w.message.splitlines()[0])}</td>"
        f"<td>{esc(_read_by(w))}</td></tr>"
        for w in report.warnings)
    return ("<table class='pyrojit-warnings'><tr><th>kind</th><th>count</th><th>where</th><th>code</th>"
            f"<th>message</th><th>read by</th></tr>{rows}</table>")


def _read_by(w: CapturedWarning) -> str:
    """Who read the value: the user's code, or a torch or Pyro function (and why that is fine)."""
    if not w.origin:
        return ""
    return f"{w.origin}: {w.why}" if w.why else _read_in(w)
