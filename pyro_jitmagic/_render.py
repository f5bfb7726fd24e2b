"""The :class:`~pyro_jitmagic.report.JitReport` as text and as HTML.

Both forms say the same things in the same order: what was switched (and what
ran eager, and why), warm-up, compilations, SVI steps, losses called directly,
MCMC runs, warnings with the risky ones spelled out, notes, and the error that
ended the cell. Every string that came from user code is escaped in the HTML.
"""

from __future__ import annotations

import html
import math
from typing import Any

from .records.report import AutoDecision, CapturedWarning, JitReport, LossRun
from .records.units import plural as _plural
from .records.units import seconds


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
    if report.notes:
        rows.append(("note", list(report.notes)))
    return rows


def _executor_rows(report: JitReport) -> list[tuple[str, list[str]]]:
    """The executor, when there is news: a key the default (adaptive) executor moved, or an
    executor asked for by name. How adaptive works is in %%pyrojit? and the README, not on
    every cell."""
    from .options import DEFAULT_EXECUTOR, EXECUTORS

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


def auto_decision_line(d: AutoDecision) -> str:
    """One key's decision: what ran how, what it cost and saved, and why."""
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


_STYLE = (
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
    parts = [_STYLE, '<div class="pyrojit">',
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


# -- comparisons -----------------------------------------------------------------
def _difference(x: float) -> str:
    if x != x:
        return "n/a"
    if x == 0:
        return "identical"
    return f"{x:.2g}"


def _svi_rows(s: Any) -> list[tuple[str, str, str]]:
    e, c = s.eager, s.compiled
    return [
        ("total", seconds(e.total_seconds), seconds(c.total_seconds)),
        ("first step", seconds(e.steps[0].seconds if e.steps else None),
         seconds(c.steps[0].seconds if c.steps else None)),
        ("median step", seconds(e.median_step_seconds), seconds(c.median_step_seconds)),
        ("steps", str(len(e.steps)), str(len(c.steps))),
        ("compile cost", "", seconds(s.compile_cost)),
        ("speedup", "", f"{_ratio(s.speedup)} total, {_ratio(s.steady_speedup)} per step"),
        ("ahead from", "", _break_even(s)),
    ]


def _ratio(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3g}x"


def _break_even(s: Any) -> str:
    if s.break_even_step is not None:
        return f"step {s.break_even_step}"
    if s.projected_break_even_step is not None:
        return f"not in this run (~step {s.projected_break_even_step})"
    return "never"


def _mcmc_rows(m: Any) -> list[tuple[str, str, str]]:
    e, c = m.eager, m.compiled

    def rate(x: float | None, unit: str) -> str:
        return "n/a" if x is None else f"{x:.3g} {unit}"

    return [
        ("total", seconds(e.total_seconds), seconds(c.total_seconds)),
        ("setup (compiles)", seconds(e.setup_seconds), seconds(c.setup_seconds)),
        ("warm-up", seconds(e.warmup_seconds), seconds(c.warmup_seconds)),
        ("sampling", seconds(e.sampling_seconds), seconds(c.sampling_seconds)),
        ("samples/s", rate(e.samples_per_second, "/s"), rate(c.samples_per_second, "/s")),
        ("min ESS/s", rate(e.ess_per_second, "/s"), rate(c.ess_per_second, "/s")),
        ("max r-hat", rate(e.max_r_hat, ""), rate(c.max_r_hat, "")),
        ("potential evaluations", str(e.potential_evals), str(c.potential_evals)),
        ("speedup", "", f"{_ratio(m.speedup)} total, {_ratio(m.sampling_speedup)} sampling"),
    ]


_VERDICT_WORDS = {"agree": "agree", "agree within noise": "agree within noise", "disagree": "DISAGREE"}


def agreement_lines(c: Any) -> list[str]:
    from .records.comparison import RELATIVE_TOLERANCE

    lines = []
    for s in c.svi:
        steps = min(len(s.eager.steps), len(s.compiled.steps))
        lines.append(f"{s.target}: losses {_VERDICT_WORDS[s.outcome]}: {s.reason}")
        lines.append(f"{s.target}: largest relative difference of the losses "
                     f"{_difference(s.loss_difference)} over {steps} steps, of the final params "
                     f"{_difference(s.param_difference)} "
                     f"(step by step within {RELATIVE_TOLERANCE:g})")
    for m in c.mcmc:
        lines.append(f"{m.target}: posterior means {_VERDICT_WORDS[m.outcome]}: {m.reason}")
    return lines


def isolation_lines(c: Any) -> list[str]:
    iso = c.isolation
    lines = [f"restored before the compiled run: {', '.join(iso.restored)}"]
    if iso.discarded:
        lines.append(f"the eager run's bindings were discarded: {', '.join(iso.discarded)}")
    if iso.mutated:
        lines.append(f"NOT isolated: {', '.join(iso.mutated)} changed in place by the eager run, "
                     "and again by the compiled run")
    if c.seed is not None:
        lines.append(f"both runs seeded with {c.seed}")
    return lines


def comparison_text(c: Any) -> str:
    lines = [f"pyrojit --compare: {c.verdict}"]
    for s in c.svi:
        lines.append(f"  {s.target} ({s.eager.elbo} vs {s.compiled.elbo})")
        lines += [f"    {name:<22} {e:>12} {cc:>12}" for name, e, cc in
                  [("", "eager", "compiled"), *_svi_rows(s)]]
    for m in c.mcmc:
        lines.append(f"  {m.target} ({m.eager.kernel})")
        lines += [f"    {name:<22} {e:>12} {cc:>12}" for name, e, cc in
                  [("", "eager", "compiled"), *_mcmc_rows(m)]]
    lines += [f"  agreement  {line}" for line in agreement_lines(c)]
    lines += [f"  state      {line}" for line in isolation_lines(c)]
    compiled_text = report_text(c.compiled).splitlines()[1:]
    if compiled_text:
        lines.append("  compiled run:")
        lines += ["  " + line for line in compiled_text]
    return "\n".join(lines)


def timing_table_html(c: Any) -> str:
    esc = html.escape
    parts = []
    sections = [(f"{s.target} ({s.eager.elbo} vs {s.compiled.elbo})", _svi_rows(s)) for s in c.svi]
    sections += [(f"{m.target} ({m.eager.kernel})", _mcmc_rows(m)) for m in c.mcmc]
    for title, rows in sections:
        body = "".join(f"<tr><th>{esc(n)}</th><td>{esc(e)}</td><td>{esc(cc)}</td></tr>" for n, e, cc in rows)
        parts.append(f"<h4>{esc(title)}</h4><table class='pyrojit-table'><tr><th></th><th>eager</th>"
                     f"<th>compiled</th></tr>{body}</table>")
    if c.compiled.auto:
        parts.append("<h4>--auto</h4>" + auto_table_html(c.compiled))
    return "".join(parts)


def auto_table_html(report: JitReport) -> str:
    """--auto's decisions as a table: a row of figures per key with its reason under it, then the total."""
    esc = html.escape
    heads = ("owner", "key", "steps eager", "compiled at", "steps compiled", "eager step", "compiled step",
             "compile", "vs eager", "vs compiled")
    rows = []
    for d in report.auto:
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


def comparison_html(c: Any, plots: dict[str, str] | None = None) -> str:
    """The whole comparison as static HTML: what the panel shows, without widgets."""
    esc = html.escape
    plots = plots if plots is not None else {}
    verdict_class = "agree" if c.agree else "risky"  # "agree within noise" included
    parts = [_STYLE, "<style>.pyrojit .agree{background:#e8f5e9;border-left:4px solid #2e7d32;"
             "padding:6px 10px;margin:6px 0}.pyrojit-table td,.pyrojit-table th{padding:2px 10px;"
             "text-align:right}.pyrojit h4{margin:10px 0 4px}</style>",
             '<div class="pyrojit">',
             f'<div class="{verdict_class}"><strong>{esc(c.verdict)}</strong></div>',
             "<h4>Timing</h4>", timing_table_html(c), plots.get("timing", ""),
             "<h4>Agreement</h4>", "<br>".join(esc(x) for x in agreement_lines(c)),
             plots.get("agreement", ""),
             "<h4>Warnings</h4>", warnings_html(c.compiled),
             "<h4>Changes</h4>", changes_html(c),
             "</div>"]
    return "".join(parts)


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


def changes_html(c: Any) -> str:
    esc = html.escape
    items = [f"{s.target}: {s.before} → {s.after}" if s.switched else f"{s.target}: {s.after} ({s.reason})"
             for s in c.compiled.switches]
    items += [f"warm-up, {w.target}: {w.detail} ({seconds(w.seconds)})" for w in c.compiled.warmup]
    if c.compiled.executor:
        from .options import EXECUTORS

        items.append(f"executor: {c.compiled.executor} ({EXECUTORS[c.compiled.executor]})")
        items += [f"executor, {x.owner}, {x.key}: {x.why}" for x in c.compiled.executor_choices]
    items += isolation_lines(c)
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"


# -- the compile cache -------------------------------------------------------------
def _unknown(value: float | int | None, fmt: Any = str) -> str:
    return "unknown" if value is None else fmt(value)


def _when(timestamp: float | None) -> str:
    if timestamp is None:
        return "unknown"
    import time

    ago = time.time() - timestamp
    return "just now" if ago < 1 else f"{seconds(ago)} ago"


def cache_totals(snapshot: Any) -> str:
    unknown = any(e.compile_seconds is None for f in snapshot.functions for e in f.entries)
    entries = snapshot.entry_count
    return (f"{_plural(len(snapshot.functions), 'compiled function')}, "
            f"{entries} {'entry' if entries == 1 else 'entries'}"
            f", {seconds(snapshot.compile_seconds)} compiling"
            + (" (some unknown)" if unknown else "") + f", {snapshot.hits} hits")


def cache_text(snapshot: Any) -> str:
    lines = [f"pyrojit cache: {cache_totals(snapshot)}"]
    if not snapshot.functions:
        lines.append("  no compiled functions are alive in this session")
    for f in snapshot.functions:
        lines.append(f"  {f.owner}" + (f" -- {f.serves}" if f.serves else ""))
        for e in f.entries:
            lines.append(f"    {e.key}: compiled in {_unknown(e.compile_seconds, seconds)}, "
                         f"{_unknown(e.hits)} hits, last {_when(e.last_hit)}, "
                         f"{e.graph_nodes} graph nodes, inputs {', '.join(e.input_shapes) or '()'}")
    return "\n".join(lines)


def cache_function_html(f: Any) -> str:
    esc = html.escape
    rows = "".join(
        f"<tr><td>{esc(e.key)}</td><td>{esc(_unknown(e.compile_seconds, seconds))}</td>"
        f"<td>{esc(_unknown(e.hits))}</td><td>{esc(_when(e.last_hit))}</td>"
        f"<td>{esc(', '.join(e.input_shapes))}</td><td>{e.graph_nodes}</td></tr>"
        f"<tr><td colspan='6'><details><summary>traced code</summary>"
        f"<pre>{esc(e.code)}</pre></details></td></tr>"
        for e in f.entries)
    return (f"<h4>{esc(f.owner)}</h4><p>{esc(f.serves)}</p>"
            "<table class='pyrojit-cache'><tr><th>key</th><th>compile</th><th>hits</th>"
            f"<th>last hit</th><th>input shapes</th><th>graph nodes</th></tr>{rows}</table>")


def cache_html(snapshot: Any) -> str:
    esc = html.escape
    body = "".join(cache_function_html(f) for f in snapshot.functions) or \
        "<p>No compiled functions are alive in this session.</p>"
    return (f'{_STYLE}<div class="pyrojit"><strong>pyrojit cache</strong>: '
            f"{esc(cache_totals(snapshot))}{body}</div>")
