"""A :class:`~pyro_jitmagic.records.comparison.Comparison` as text and as static HTML.

The ``--compare`` panel (:mod:`.panel`) shows the same content in tabs; this is
what a terminal, a notebook saved without widget state and an export show.
"""

from __future__ import annotations

import html

from ..options import EXECUTORS
from ..records.comparison import RELATIVE_TOLERANCE, Comparison, MCMCComparison, SVIComparison
from ..records.units import seconds
from .report import STYLE, auto_table_html, report_text, warnings_html


def _difference(x: float) -> str:
    if x != x:
        return "n/a"
    if x == 0:
        return "identical"
    return f"{x:.2g}"


def _svi_rows(s: SVIComparison) -> list[tuple[str, str, str]]:
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


def _break_even(s: SVIComparison) -> str:
    if s.break_even_step is not None:
        return f"step {s.break_even_step}"
    if s.projected_break_even_step is not None:
        return f"not in this run (~step {s.projected_break_even_step})"
    return "never"


def _mcmc_rows(m: MCMCComparison) -> list[tuple[str, str, str]]:
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


def agreement_lines(c: Comparison) -> list[str]:
    lines = []
    for s in c.svi:
        steps = min(len(s.eager.steps), len(s.compiled.steps))
        lines.append(f"{s.target}: losses {_VERDICT_WORDS[s.outcome]}: {s.reason}")
        if s.outcome != "agree":  # (an agreement's reason gives these figures already)
            lines.append(f"{s.target}: largest relative difference of the losses "
                         f"{_difference(s.loss_difference)} over {steps} steps, of the final params "
                         f"{_difference(s.param_difference)} "
                         f"(step by step within {RELATIVE_TOLERANCE:g})")
    for m in c.mcmc:
        lines.append(f"{m.target}: posterior means {_VERDICT_WORDS[m.outcome]}: {m.reason}")
    report = c.compiled
    if report.sentinel_checks:
        lines.append(f"while the compiled run ran, {report.sentinel_checks} of its compiled calls were "
                     f"checked against eager's loss: " + ("all agreed" if not report.sentinel_findings else
                                                          f"{report.sentinel_findings} disagreed"))
    lines += [f"guards: {g}" for g in report.guards]
    return lines


def isolation_lines(c: Comparison) -> list[str]:
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


def comparison_text(c: Comparison) -> str:
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


def timing_table_html(c: Comparison) -> str:
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


def comparison_html(c: Comparison, plots: dict[str, str] | None = None) -> str:
    """The whole comparison as static HTML: what the panel shows, without widgets."""
    esc = html.escape
    plots = plots if plots is not None else {}
    verdict_class = "agree" if c.agree else "risky"  # "agree within noise" included
    parts = [STYLE, "<style>.pyrojit .agree{background:#e8f5e9;border-left:4px solid #2e7d32;"
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


def changes_html(c: Comparison) -> str:
    esc = html.escape
    items = [f"{s.target}: {s.before} → {s.after}" if s.switched else f"{s.target}: {s.after} ({s.reason})"
             for s in c.compiled.switches]
    items += [f"warm-up, {w.target}: {w.detail} ({seconds(w.seconds)})" for w in c.compiled.warmup]
    if c.compiled.executor:
        items.append(f"executor: {c.compiled.executor} ({EXECUTORS[c.compiled.executor]})")
        items += [f"executor, {x.owner}, {x.key}: {x.why}" for x in c.compiled.executor_choices]
    items += isolation_lines(c)
    return "<ul>" + "".join(f"<li>{esc(i)}</li>" for i in items) + "</ul>"
