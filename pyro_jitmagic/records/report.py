"""What a ``%%pyrojit`` cell did, as immutable records.

:class:`JitReport` is what ``%%pyrojit -o NAME`` stores, and what ``with pyro_jitmagic.compiled()
as run`` leaves in ``run.report``. It is plain data, so it can be kept, compared and pickled after
the objects it describes are gone. Its views are :mod:`pyro_jitmagic.display`'s; its ``repr`` is
a summary, not every step.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

from .shown import Shown, summary
from .units import plural, seconds

WarningKind = Literal["risky", "benign", "deprecation"]

#: Steps after a trace that count toward its compile cost: the TorchScript
#: executor optimises the trace on its first few calls, not only when tracing.
COMPILE_WINDOW = 10


def compile_cost(steps: Sequence[float], traced: Sequence[bool], window: int = COMPILE_WINDOW) -> float:
    """Seconds above the steady step time on each traced step and the next ``window - 1``."""
    steady = [t for t, tr in zip(steps, traced, strict=True) if not tr]
    if not steady:
        return sum(steps)
    median = statistics.median(steady)
    counted: set[int] = set()
    for i, tr in enumerate(traced):
        if tr:
            counted.update(range(i, min(i + window, len(steps))))
    return sum(max(0.0, steps[i] - median) for i in counted)


#: A posterior site's repr lists at most this many elements of its means and sds.
_SHOWN_ELEMENTS = 8


def _steps(steps: Sequence[Step], word: str) -> str:
    """A run's steps in a repr: how many, and the last loss (not every step)."""
    if not steps:
        return f"<no {word}s>"
    total = seconds(sum(s.seconds for s in steps))
    return f"<{plural(len(steps), word)} in {total}, last loss {steps[-1].loss:.6g}>"


def _elements(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:.4g}" for v in values[:_SHOWN_ELEMENTS])
    return f"<{len(values)} elements: {shown}, ...>"


def _total(values: Any) -> float | None:
    values = list(values)
    return None if not values or None in values else sum(values)


@dataclass(frozen=True)
class Switch:
    """What ``%%pyrojit`` did with one SVI or MCMC object, or one ELBO loss called directly.

    Attributes
    ----------
    target : str
        The object, named as in the user's namespace when it has a name there
        (``"svi"``, ``"loss_fn"``), else described (``"SVI(model, AutoNormal)"``).
    before, after : str
        The inference as written and as run, e.g. ``"Trace_ELBO"`` and
        ``"JitTrace_ELBO"``, or ``"NUTS"`` and ``"NUTS(jit_compile=True)"``.
        Equal when nothing was switched.
    compiled : bool
        Whether the object's inference ran compiled in this cell.
    reason : str
        Why, in one sentence, when it was left as it was (empty otherwise).
    """

    target: str
    before: str
    after: str
    compiled: bool
    reason: str = ""

    @property
    def switched(self) -> bool:
        return self.before != self.after


class Step(NamedTuple):
    """One ``SVI.step`` (or one direct call of an ELBO's loss): its wall time, its loss,
    and whether it compiled a trace.

    (A named tuple rather than a dataclass: a report holds one per step, and
    these are made thirty times faster.)
    """

    seconds: float
    loss: float
    compiled: bool
    compile_seconds: float = 0.0

    @property
    def traced(self) -> bool:
        """True when this step built a new trace (its time includes compiling)."""
        return self.compile_seconds > 0.0


@dataclass(frozen=True)
class SVIRun:
    """Every step one SVI object took in the cell.

    ``diverges`` says why this run's random draws part from those of the same
    steps run eager (empty while they do not): its losses can then be
    compared with an eager run's in distribution only, not step by step.
    """

    target: str
    model: str
    guide: str
    elbo: str
    steps: tuple[Step, ...]
    diverges: str = ""

    def __repr__(self) -> str:
        return summary(self, steps=_steps(self.steps, "step"))

    @property
    def losses(self) -> tuple[float, ...]:
        return tuple(s.loss for s in self.steps)

    @property
    def step_seconds(self) -> tuple[float, ...]:
        return tuple(s.seconds for s in self.steps)

    @property
    def total_seconds(self) -> float:
        return sum(self.step_seconds)

    @property
    def compile_seconds(self) -> float:
        """What compiling cost this SVI: its steps' excess over the steady step
        time on each step that built a trace and the steps right after it."""
        traced = [s.traced for s in self.steps]
        return compile_cost(self.step_seconds, traced) if any(traced) else 0.0

    @property
    def median_step_seconds(self) -> float | None:
        """Median wall time of the steps that did not build a trace."""
        steady = [s.seconds for s in self.steps if not s.traced]
        return statistics.median(steady) if steady else None


@dataclass(frozen=True)
class LossRun:
    """Every direct call of one ELBO loss method, for one model and guide, in the cell.

    A direct call is one the cell makes itself, not through ``SVI.step``:
    ``loss = loss_fn(model, guide, data)`` with
    ``loss_fn = Trace_ELBO().differentiable_loss``, a ``PyroModule`` trained
    through ``Trace_ELBO()(model, guide)``, or ``elbo.loss_and_grads(...)``.

    Attributes
    ----------
    target : str
        The loss, named as in the user's namespace: the name bound to the
        method (``"loss_fn"``) or the ``ELBOModule``, else the ELBO's name with
        the method (``"elbo.loss"``), else described
        (``"Trace_ELBO().differentiable_loss"``).
    method : {"differentiable_loss", "loss", "loss_and_grads"}
        The ELBO method called.
    model, guide : str
        What it was called with.
    elbo : str
        The ELBO that computed it: ``"JitTrace_ELBO"`` when compiled, the
        user's class when it ran eager.
    calls : tuple of Step
        Wall time and loss of every call (the loss's value for
        ``differentiable_loss``).
    diverges : str
        As for :class:`SVIRun`: why the calls' random draws part from eager's.

    Its calls read as an :class:`SVIRun`'s steps (``steps``, ``step_seconds``,
    ``median_step_seconds``), so ``--compare`` judges a hand-written training
    loop as it judges ``SVI.step``.
    """

    target: str
    method: str
    model: str
    guide: str
    elbo: str
    calls: tuple[Step, ...]
    diverges: str = ""

    def __repr__(self) -> str:
        return summary(self, calls=_steps(self.calls, "call"))

    @property
    def steps(self) -> tuple[Step, ...]:
        return self.calls

    @property
    def step_seconds(self) -> tuple[float, ...]:
        return self.call_seconds

    @property
    def median_step_seconds(self) -> float | None:
        return self.median_call_seconds

    @property
    def losses(self) -> tuple[float, ...]:
        return tuple(c.loss for c in self.calls)

    @property
    def call_seconds(self) -> tuple[float, ...]:
        return tuple(c.seconds for c in self.calls)

    @property
    def total_seconds(self) -> float:
        return sum(self.call_seconds)

    @property
    def compile_seconds(self) -> float:
        """What compiling cost: the calls' excess over the steady call time on
        each call that built a trace and the calls right after it."""
        traced = [c.traced for c in self.calls]
        return compile_cost(self.call_seconds, traced) if any(traced) else 0.0

    @property
    def median_call_seconds(self) -> float | None:
        """Median wall time of the calls that did not build a trace."""
        steady = [c.seconds for c in self.calls if not c.traced]
        return statistics.median(steady) if steady else None

    @property
    def last_loss(self) -> float | None:
        return self.calls[-1].loss if self.calls else None


@dataclass(frozen=True)
class PosteriorSite:
    """Summary of one latent site's samples (elements flattened)."""

    name: str
    mean: tuple[float, ...]
    sd: tuple[float, ...]
    ess: float  # smallest effective sample size over the site's elements
    r_hat: float  # largest split r-hat (nan with a single chain too short to split)

    def __repr__(self) -> str:
        if len(self.mean) <= _SHOWN_ELEMENTS:
            return summary(self)
        return summary(self, mean=_elements(self.mean), sd=_elements(self.sd))


@dataclass(frozen=True)
class MCMCRun:
    """One ``MCMC.run``: where its time went, and what it sampled.

    ``potential_evals`` counts evaluations of the potential energy after
    setup; HMC and NUTS take its gradient at each leapfrog step, so this is
    the work the compiled potential speeds up.
    """

    target: str
    kernel: str
    compiled: bool
    warmup_steps: int
    num_samples: int
    setup_seconds: float
    warmup_seconds: float
    sampling_seconds: float
    compile_seconds: float
    completed: bool
    potential_evals: int = 0
    sites: tuple[PosteriorSite, ...] = ()

    @property
    def total_seconds(self) -> float:
        return self.setup_seconds + self.warmup_seconds + self.sampling_seconds

    @property
    def samples_per_second(self) -> float | None:
        if not self.num_samples or self.sampling_seconds <= 0:
            return None
        return self.num_samples / self.sampling_seconds

    @property
    def min_ess(self) -> float | None:
        return min((s.ess for s in self.sites), default=None)

    @property
    def ess_per_second(self) -> float | None:
        """Smallest effective sample size over sites, per second of sampling."""
        ess = self.min_ess
        if ess is None or self.sampling_seconds <= 0:
            return None
        return ess / self.sampling_seconds

    @property
    def max_r_hat(self) -> float | None:
        values = [s.r_hat for s in self.sites if s.r_hat == s.r_hat]
        return max(values) if values else None


@dataclass(frozen=True)
class Compilation:
    """One trace built by ``torch.jit.trace``.

    Attributes
    ----------
    owner : str
        The SVI or MCMC object (or the ELBO loss called directly) whose
        inference was compiled.
    key : str
        What Pyro keyed this trace on: the number of positional tensors and the
        keyword values (``"1 positional arg, length=24, num_sequences=75"``).
    seconds : float
        The whole first call for this key: Pyro's eager run to find params,
        the trace, and the trace's first (optimising) run. For HMC/NUTS, whose
        trace is made inside ``setup``, the trace alone.
    trace_seconds : float
        Time spent inside ``torch.jit.trace``.
    input_shapes : tuple of str
        Shapes of the tensors the trace was built with (params first).
    """

    owner: str
    key: str
    seconds: float
    trace_seconds: float
    input_shapes: tuple[str, ...] = ()


@dataclass(frozen=True)
class AutoDecision:
    """What the climb did with one cache key, or one call signature, in one cell, and what that
    saved or lost.

    Attributes
    ----------
    kind : {"svi", "potential"}
        An SVI's compiled loss (one key per call signature) or an HMC/NUTS
        potential energy (one per MCMC run).
    owner, key : str
        The SVI or MCMC object, and the call signature (``"potential energy"``).
    state : str
        How the key ran at the end of the cell: ``"eager"`` or ``"compiled"``; for a call
        signature that climbed above Pyro's JIT, its tier (``"eager"``, ``"pyro"``, ``"step"``
        or ``"inductor"``).
    why : str
        The decision, in one sentence, with the figures it rested on.
    eager_steps, compiled_steps : int
        Steps (for a potential: evaluations) run eager and compiled in the cell;
        the compiling one counts as compiled.
    compiled_at : int or None
        The cell's step (evaluation) number, from 1, that compiled; None when the
        key did not compile in this cell, and for a call signature's tiers (``path``
        says where each began).
    seconds : float
        What those steps took.
    eager_step_seconds, compiled_step_seconds, compile_seconds : float or None
        Median eager step, median steady compiled step, and the compile's cost
        (its step and the slow steps after it, over the steady step), measured
        in this session, or estimated when ``estimated``. For a call signature's
        tiers: its step time on the tier it ended on, and its capture.
    always_eager_seconds, always_compiled_seconds : float or None
        What the same steps would have taken all eager, or all compiled
        (compiling on the first, unless compiled in an earlier cell): ``seconds``
        plus what each compiled step saved (the step times' difference) less
        the compile cost, or less what each eager step lost. So the savings
        follow from the step times and compile cost shown beside them. For a
        call signature's tiers, all compiled means all on Pyro's JIT (``versus``
        has every tier).
    estimated : bool
        True when a figure above was estimated from the session's other keys
        (a key that never ran compiled, or never eager).
    compiled_before : bool
        The key was compiled in an earlier cell (always compiled pays no compile).
    path : tuple of str
        With the tiers above Pyro's JIT: the tiers the call signature ran on, in order, each
        with the step it began at (``("eager", "pyro at step 6", "step at step 212", ...)``).
    versus : tuple of (str, float)
        With the tiers: each single tier (``eager``, ``pyro``, ``step``, ``inductor``) and what
        the same steps would have taken on it alone, estimated from the step times measured on
        each tier (or the session's speedups where a tier never ran) plus its up-front cost.
    """

    kind: str
    owner: str
    key: str
    state: str
    why: str
    eager_steps: int
    compiled_steps: int
    compiled_at: int | None
    seconds: float
    eager_step_seconds: float | None
    compiled_step_seconds: float | None
    compile_seconds: float | None
    always_eager_seconds: float | None
    always_compiled_seconds: float | None
    estimated: bool = False
    compiled_before: bool = False
    path: tuple[str, ...] = ()
    versus: tuple[tuple[str, float], ...] = ()

    @property
    def saved_vs_eager(self) -> float | None:
        """Seconds saved against running every step eager (negative: lost)."""
        return None if self.always_eager_seconds is None else self.always_eager_seconds - self.seconds

    @property
    def saved_vs_compiled(self) -> float | None:
        """Seconds saved against compiling on the first step (negative: lost)."""
        return None if self.always_compiled_seconds is None else self.always_compiled_seconds - self.seconds


@dataclass(frozen=True)
class ExecutorChoice:
    """With the adaptive executor: a cache key (or MCMC potential) whose executor changed in the cell.

    ``executor`` is ``"optimizing"`` or ``"no-opt, kept"`` (its optimised steps
    were slower, so it was compiled again no-opt); ``why`` gives the step and
    the step times compared.
    """

    owner: str
    key: str
    executor: str
    why: str


@dataclass(frozen=True)
class WarmupAction:
    """One thing done eagerly before compiling, and what it cost."""

    target: str
    action: str
    detail: str
    seconds: float


@dataclass(frozen=True)
class CapturedWarning:
    """A group of identical warnings raised while compiling.

    Attributes
    ----------
    kind : {"risky", "benign", "deprecation"}
        ``"risky"``: a tensor was turned into a Python value while tracing, by
        the user's code or by a torch or Pyro function not known to be safe, so
        a branch or a number may be baked into the trace and the compiled loss
        may be wrong for other inputs. ``"benign"``: expected while tracing
        Pyro models (constants registered in the trace; torch's and Pyro's
        shape checks and validation, reviewed one by one). ``"deprecation"``:
        torch's notice that ``torch.jit.trace`` is deprecated.
    where : str
        The user's code that caused it (``"cell In[3], line 5"`` or
        ``"model.py:12"``), or torch's own location when no user frame was found.
    source : str
        That line of code, stripped.
    count : int
        How many times it was raised.
    filename, lineno : str, int
        The file and line that ``where`` names.
    origin : str
        The torch or Pyro function that read the value, when it was not the
        user's code (``"torch/nn/functional.py: binary_cross_entropy_with_logits"``).
    why : str
        For a benign read inside torch or Pyro: why it cannot change the result.
    """

    kind: WarningKind
    category: str
    message: str
    where: str
    source: str
    count: int
    filename: str = ""
    lineno: int = 0
    origin: str = ""
    why: str = ""


@dataclass(frozen=True)
class Progress:
    """Where a running cell is, for the live progress line.

    ``run`` is ``"compiled"`` or ``"eager"`` (the first half of ``--compare``).
    """

    run: str
    steps: int
    recent_median_step_seconds: float | None
    samples: int
    compiling: bool
    seconds: float

    def describe(self) -> str:
        parts = [f"{self.run} run"]
        if self.steps:
            parts.append(f"{plural(self.steps, 'step')}, median {seconds(self.recent_median_step_seconds)}")
        if self.samples:
            parts.append(f"{self.samples} MCMC samples")
        if self.compiling:
            parts.append("compiling...")
        return f"pyrojit: {', '.join(parts)} ({seconds(self.seconds)})"


@dataclass(frozen=True)
class JitReport(Shown):
    """Everything one ``%%pyrojit`` cell (or ``compiled()`` block) did.

    Attributes
    ----------
    switches : tuple of Switch
        Each SVI and MCMC object met, what it ran as, and why when it ran eager.
    svi_runs : tuple of SVIRun
        Per SVI object, the wall time and loss of every step.
    loss_runs : tuple of LossRun
        Per ELBO loss the cell called directly (not through ``SVI.step``), the
        wall time and loss of every call.
    mcmc_runs : tuple of MCMCRun
        Per ``MCMC.run``, warm-up, sampling and compile time.
    compilations : tuple of Compilation
        Every trace built in the cell.
    warmup : tuple of WarmupAction
        What was done eagerly before compiling (AutoGuide prototypes,
        ``max_plate_nesting``), with its cost.
    warnings : tuple of CapturedWarning
        JIT warnings captured instead of printed, risky ones first.
    notes : tuple of str
        Other things the user should know, one sentence each.
    error : str or None
        The exception that ended the cell early, as ``"Type: message"``.
    advice : str or None
        What to do about ``error`` when it is a known JIT failure.
    seconds : float
        Wall time of the whole cell.
    executor : str
        The TorchScript executor the cell's traces ran under (``"adaptive"``,
        ``"no-opt"``, ``"optimizing"``, ``"legacy"``), empty when nothing ran compiled.
    executor_choices : tuple of ExecutorChoice
        With ``adaptive``: the keys whose executor changed in the cell.
    auto : tuple of AutoDecision
        With the climb (plain ``%%pyrojit``, ``--auto``): per cache key, or per call signature
        that climbed above Pyro's JIT, what ran on which tier, from when, and why.
    guards : tuple of str
        What a compiled graph assumed that changed while the cell ran (``global prior_scale
        10.0 -> 0.05``), and what was done: compiled again, or run eager, with the step.
    sentinel_checks, sentinel_findings : int
        Compiled calls whose loss was checked against eager's for the same params and draws,
        and how many of them disagreed (each named in ``guards``).
    sentinel_seconds : float
        What those checks cost (their eager calls, and comparing).
    """

    switches: tuple[Switch, ...] = ()
    svi_runs: tuple[SVIRun, ...] = ()
    mcmc_runs: tuple[MCMCRun, ...] = ()
    compilations: tuple[Compilation, ...] = ()
    warmup: tuple[WarmupAction, ...] = ()
    warnings: tuple[CapturedWarning, ...] = ()
    notes: tuple[str, ...] = ()
    error: str | None = None
    advice: str | None = None
    seconds: float = 0.0
    executor: str = ""
    executor_choices: tuple[ExecutorChoice, ...] = ()
    auto: tuple[AutoDecision, ...] = ()
    loss_runs: tuple[LossRun, ...] = ()
    guards: tuple[str, ...] = ()
    sentinel_checks: int = 0
    sentinel_findings: int = 0
    sentinel_seconds: float = 0.0

    @property
    def auto_saved_vs_eager(self) -> float | None:
        """With ``--auto``: seconds saved against running every key eager (negative: lost)."""
        return _total(d.saved_vs_eager for d in self.auto)

    @property
    def auto_saved_vs_compiled(self) -> float | None:
        """With ``--auto``: seconds saved against compiling every key on its first step."""
        return _total(d.saved_vs_compiled for d in self.auto)

    @property
    def compile_count(self) -> int:
        return len(self.compilations)

    @property
    def compile_seconds(self) -> float:
        """What compiling cost: for each SVI (and each loss called directly),
        the steps' excess over its steady step time on each step that built a
        trace and the :data:`COMPILE_WINDOW` steps after it (the executor
        optimises a trace on its first calls); for HMC/NUTS, tracing the
        potential."""
        svi = sum(run.compile_seconds for run in self.svi_runs)
        losses = sum(run.compile_seconds for run in self.loss_runs)
        mcmc = sum(run.compile_seconds for run in self.mcmc_runs)
        runs = ({run.target for run in self.svi_runs} | {run.target for run in self.loss_runs}
                | {run.target for run in self.mcmc_runs})
        # traces made outside any step or run (a potential built by initialize_model)
        elsewhere = sum(c.seconds for c in self.compilations if c.owner not in runs)
        return svi + losses + mcmc + elsewhere

    @property
    def trace_seconds(self) -> float:
        """Time spent inside ``torch.jit.trace`` alone."""
        return sum(c.trace_seconds for c in self.compilations)

    @property
    def warmup_seconds(self) -> float:
        return sum(w.seconds for w in self.warmup)

    @property
    def risky_warnings(self) -> tuple[CapturedWarning, ...]:
        return tuple(w for w in self.warnings if w.kind == "risky")

    @property
    def ran_inference(self) -> bool:
        """False when the cell ran no SVI step, no ELBO loss and no MCMC run."""
        return bool(self.svi_runs or self.loss_runs or self.mcmc_runs or self.switches)
