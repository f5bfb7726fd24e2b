"""The :class:`~pyro_jitmagic.report.JitReport` as text and as HTML.

Both forms say the same things in the same order: what was switched (and what
ran eager, and why), warm-up, compilations, steps and MCMC runs, warnings with
the risky ones spelled out, notes, and the error that ended the cell. Every
string that came from user code is escaped in the HTML.
"""

from __future__ import annotations

import html

from .report import CapturedWarning, JitReport


def seconds(value: float | None) -> str:
    """A duration with a unit that keeps about three significant figures."""
    if value is None or value != value:
        return "n/a"
    if value < 1e-3:
        return f"{value * 1e6:.3g} µs"
    if value < 1:
        return f"{value * 1e3:.3g} ms"
    if value < 120:
        return f"{value:.3g} s"
    return f"{value / 60:.3g} min"


def _plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


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
    if report.notes:
        rows.append(("note", list(report.notes)))
    return rows


def _risky_line(w: CapturedWarning) -> str:
    first = w.message.splitlines()[0]
    times = f" (x{w.count})" if w.count > 1 else ""
    return f"{w.where}: {w.source}\n    {first}{times}"


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


_STYLE = (
    "<style>"
    ".pyrojit{font-family:var(--jp-ui-font-family,sans-serif);font-size:13px;line-height:1.4}"
    ".pyrojit table{border-collapse:collapse}"
    ".pyrojit th{text-align:left;vertical-align:top;padding:2px 12px 2px 0;font-weight:600;"
    "white-space:nowrap}"
    ".pyrojit td{padding:2px 0}"
    ".pyrojit .risky{background:#fdecea;border-left:4px solid #c62828;padding:6px 10px;margin:6px 0}"
    ".pyrojit .error{background:#fff4e5;border-left:4px solid #ef6c00;padding:6px 10px;margin:6px 0}"
    ".pyrojit code{font-family:var(--jp-code-font-family,monospace)}"
    "</style>"
)


def report_html(report: JitReport) -> str:
    esc = html.escape
    title = "pyrojit" + (" — stopped early" if report.error else "")
    parts = [_STYLE, '<div class="pyrojit">',
             f"<strong>{esc(title)}</strong> <span>{esc(seconds(report.seconds))}</span>",
             "<table>"]
    for section, items in _rows(report):
        cells = "<br>".join(esc(item) for item in items)
        parts.append(f"<tr><th>{esc(section)}</th><td>{cells}</td></tr>")
    parts.append("</table>")
    for w in report.risky_warnings:
        first = w.message.splitlines()[0]
        times = f" (×{w.count})" if w.count > 1 else ""
        parts.append(
            f'<div class="risky"><strong>Risky JIT warning</strong> at {esc(w.where)}: '
            f"<code>{esc(w.source)}</code><br>{esc(first)}{esc(times)}<br>"
            "<em>A tensor became a Python value while tracing: the compiled step may compute "
            "a wrong loss for other inputs.</em></div>")
    if report.error:
        advice = f"<br><strong>Advice:</strong> {esc(report.advice)}" if report.advice else ""
        parts.append(f'<div class="error"><strong>Error:</strong> <code>{esc(report.error)}</code>'
                     f"{advice}</div>")
    parts.append("</div>")
    return "".join(parts)
