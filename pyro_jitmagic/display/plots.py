"""The comparison's plots, drawn with matplotlib into PNG bytes.

No pyplot: figures are made and rendered directly, so the user's backend and
open figures are untouched. Long runs are downsampled to at most
:data:`MAX_POINTS` per line, so a 10 000-step panel stays light.
"""

from __future__ import annotations

import io
import statistics
from collections.abc import Sequence
from typing import Any

MAX_POINTS = 1000
EAGER, COMPILED = "#1f77b4", "#d62728"


def downsample(values: Sequence[float], max_points: int = MAX_POINTS) -> tuple[list[float], list[float]]:
    """(x, y): the values, or the median of each of ``max_points`` equal buckets."""
    n = len(values)
    if n <= max_points:
        return [float(i + 1) for i in range(n)], [float(v) for v in values]
    xs, ys = [], []
    for b in range(max_points):
        lo, hi = b * n // max_points, (b + 1) * n // max_points
        xs.append((lo + hi + 1) / 2)
        ys.append(statistics.median(values[lo:hi]))
    return xs, ys


def _figure(rows: int) -> Any:
    from matplotlib.figure import Figure

    # Fixed margins: constrained layout would double the drawing time.
    fig = Figure(figsize=(7.5, 2.6 * rows), dpi=80)
    fig.subplots_adjust(left=0.1, right=0.9, top=1 - 0.3 / (2.6 * rows), bottom=0.5 / (2.6 * rows),
                        hspace=0.45)
    return fig


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    # fast zlib: a few KB larger, a quarter of the encoding time
    fig.savefig(buffer, format="png", pil_kwargs={"compress_level": 1})
    return buffer.getvalue()


def _log_y(ax: Any) -> None:
    """Log scale with plain-text tick labels (mathtext "10^k" labels cost a parse each)."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    ax.set_yscale("log")
    ax.minorticks_off()  # minor log ticks cost most of the drawing time
    ax.yaxis.set_major_locator(LogLocator(numticks=5))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))


def timing_png(c: Any) -> bytes | None:
    """Step time over steps (log scale), eager and compiled, compile steps marked."""
    panels = len(c.svi) + (1 if c.mcmc else 0)
    if not panels:
        return None
    fig = _figure(panels)
    axes = fig.subplots(panels, 1, squeeze=False)[:, 0]
    for ax, s in zip(axes, c.svi, strict=False):
        for run, color, label in ((s.eager, EAGER, "eager"), (s.compiled, COMPILED, "compiled")):
            xs, ys = downsample([t * 1e3 for t in run.step_seconds])
            ax.plot(xs, ys, color=color, lw=1, label=label)
        traced = [(i + 1, st.seconds * 1e3) for i, st in enumerate(s.compiled.steps) if st.traced]
        if traced:
            ax.scatter(*zip(*traced, strict=True), marker="x", color="black", zorder=3,
                       label="compiled a trace")
        _log_y(ax)
        ax.set_xlabel("step")
        ax.set_ylabel("step time (ms)")
        ax.legend(fontsize=8, loc="upper right", title=s.target, title_fontsize=9)
    if c.mcmc:
        ax = axes[-1]
        labels, eager, compiled = [], [], []
        for m in c.mcmc:
            for part in ("setup", "warmup", "sampling"):
                labels.append(f"{m.target}\n{part}" if len(c.mcmc) > 1 else part)
                eager.append(getattr(m.eager, f"{part}_seconds"))
                compiled.append(getattr(m.compiled, f"{part}_seconds"))
        ticks = list(range(len(labels)))
        ax.bar([x - 0.2 for x in ticks], eager, width=0.4, color=EAGER, label="eager")
        ax.bar([x + 0.2 for x in ticks], compiled, width=0.4, color=COMPILED, label="compiled")
        ax.set_xticks(ticks, labels, fontsize=8)
        ax.set_ylabel("seconds")
        ax.legend(fontsize=8, loc="upper right", title="MCMC", title_fontsize=9)
    return _png(fig)


def agreement_png(c: Any) -> bytes | None:
    """Both loss curves, eager and compiled; posterior means ± sd side by side.

    (The difference itself is a number in the Agreement tab: a third axis on a
    log scale would double the drawing time, which --compare pays every cell.)
    """
    rows = len(c.svi) + len(c.mcmc)
    if not rows:
        return None
    fig = _figure(rows)
    axes = fig.subplots(rows, 1, squeeze=False)[:, 0]
    for ax, s in zip(axes, c.svi, strict=False):
        runs = ((s.eager, EAGER, "eager", 2.5), (s.compiled, COMPILED, "compiled", 1.0))
        for run, color, label, width in runs:  # eager drawn wider: where they agree, both show
            xs, ys = downsample(run.losses)
            ax.plot(xs, ys, color=color, lw=width, label=label)
        ax.set_ylabel("loss")
        ax.set_xlabel("step")
        ax.legend(fontsize=8, loc="upper right", title=s.target, title_fontsize=9)
    for ax, m in zip(axes[len(c.svi):], c.mcmc, strict=False):
        names, em, es, cm, cs = [], [], [], [], []
        compiled_sites = {site.name: site for site in m.compiled.sites}
        for site in m.eager.sites:
            other = compiled_sites.get(site.name)
            if other is None:
                continue
            for k in range(min(len(site.mean), 8)):  # a few elements per site stay readable
                names.append(site.name if len(site.mean) == 1 else f"{site.name}[{k}]")
                em.append(site.mean[k])
                es.append(site.sd[k])
                cm.append(other.mean[k])
                cs.append(other.sd[k])
        ticks = list(range(len(names)))
        ax.errorbar([x - 0.1 for x in ticks], em, yerr=es, fmt="o", color=EAGER, label="eager")
        ax.errorbar([x + 0.1 for x in ticks], cm, yerr=cs, fmt="o", color=COMPILED, label="compiled")
        ax.set_xticks(ticks, names, fontsize=8)
        ax.set_ylabel("posterior mean ± sd")
        ax.legend(fontsize=8, loc="upper right", title=m.target, title_fontsize=9)
    return _png(fig)
