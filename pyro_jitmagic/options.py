"""What a compiled run can be asked to do: one frozen :class:`RunOptions`, and its choice lists.

The magic's arguments, the twins (:func:`~pyro_jitmagic.compiled`, :func:`~pyro_jitmagic.compare`,
:class:`~pyro_jitmagic.JitRun`) and validation all read this one definition. Each field carries its
flag and help text, so ``%%pyrojit?`` is built from it, and a bad value is refused here with one
line saying what to do. Nothing here imports anything of ours, torch or Pyro.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

#: What happens to the JIT's warnings.
WarningMode = Literal["capture", "show", "error"]
WARNING_MODES: tuple[WarningMode, ...] = get_args(WarningMode)

#: The TorchScript executors a cell's traces can run under: name -> what it does.
EXECUTORS = {
    "adaptive": "each trace starts no-opt; a key called often enough moves to the optimizing executor, "
                "and back if its steps got slower",
    "no-opt": "traces run as recorded: torch.jit.optimized_execution(False)",
    "optimizing": "torch's default: the profiling executor, optimising each trace over its first calls",
    "legacy": "the executor before the profiling one, optimising each trace on its first call",
}
DEFAULT_EXECUTOR = "adaptive"

#: What compiles the cell's inference: name -> what it does. "eager" compiles nothing and
#: records the cell as written (the first run of --compare); the magic offers the others.
BACKENDS = {
    "pyro": "Pyro's JIT: Jit* ELBOs for SVI and ELBO losses, jit_compile=True for HMC/NUTS",
    "step": "the whole SVI step (loss, gradients, optimizer update), or an HMC/NUTS potential and its "
            "gradient, captured as one graph and run by TorchScript",
    "inductor": "that graph compiled into C++ kernels by inductor (needs a C++ compiler; without "
                "one, step runs); a first compile takes seconds to minutes, later ones come from "
                "inductor's disk cache",
    "eager": "nothing compiled: the cell runs as written, recorded as a compiled run is",
}
#: What compiles a run told not to climb (``auto=False``) that names no backend: Pyro's JIT.
DEFAULT_BACKEND = "pyro"
#: The highest tier --auto climbs to when no --backend caps it.
TOP_TIER = "inductor"
#: The backends a cell can ask for.
CELL_BACKENDS = ("pyro", "step", "inductor")


def _option(flag: str, help: str, **argparse: Any) -> dict[str, Any]:
    """A field's metadata: its magic flag, the argparse settings beside the flag, its help."""
    return {"flag": flag, "argparse": argparse, "help": help}


@dataclass(frozen=True)
class RunOptions:
    """How one ``%%pyrojit`` cell, ``compiled()`` block or ``compare()`` runs.

    Parameters
    ----------
    warmup : bool
        Build AutoGuide prototypes and find ``max_plate_nesting`` eagerly before
        the first compiled step (the tutorial's manual warm-up); ``--no-warmup``.
    warnings : {"capture", "show", "error"}
        Capture JIT warnings silently, also print them, or raise
        :class:`~pyro_jitmagic.RiskyTraceError` when a trace turns a tensor into a
        Python value (before the compiled step is used).
    auto : bool, optional
        Climb tiers per call signature only as far as is expected to pay: eager, Pyro's JIT, the
        whole step, inductor's kernels built in the background; ``backend``, when given, is the
        highest tier it may reach. The session's :class:`~pyro_jitmagic.AutoPolicy` decides. Not
        given: True unless ``backend`` is given (a named backend alone compiles from the first
        step), which is what plain ``%%pyrojit`` does; ``False`` with no backend runs Pyro's JIT.
    executor : {"adaptive", "no-opt", "optimizing", "legacy"}
        The TorchScript executor the traces run under (``--executor``).
    max_entries : int, optional
        Compile at most this many traces per compiled function; calls with
        further keys run eager (``--max-entries``).
    seed : int, optional
        Seed the run with ``pyro.set_rng_seed`` (both runs of a comparison).
    backend : {"pyro", "step", "inductor", "eager"}, optional
        What compiles the inference (``--backend``): Pyro's JIT; the whole step as one graph run by
        TorchScript; that graph compiled by inductor. ``"eager"`` records the cell as written
        (the first run of ``--compare``). With ``auto``, the highest tier it may climb to. Not
        given: every tier (``"inductor"``) when climbing, else ``"pyro"``.

    Raises
    ------
    ValueError
        When a value is not one the run can use; the message says what would be.
    """

    warmup: bool = field(default=True, metadata=_option(
        "--no-warmup", action="store_false",
        help="skip the eager warm-up (AutoGuide prototype, max_plate_nesting) before compiling"))
    warnings: WarningMode = field(default="capture", metadata=_option(
        "--warnings", choices=WARNING_MODES,
        help="JIT warnings: capture them (default), also print them, or stop with an "
             "error on a risky one before its compiled step is used"))
    auto: bool = field(default=None, metadata=_option(  # type: ignore[assignment]
        "--auto", action="store_true",
        help="what a plain %%%%pyrojit does: start each call signature eager and climb the tiers "
             "only as far as the steps expected to follow repay: Pyro's JIT, the whole step, "
             "inductor's kernels built in the background (per SVI call signature, and per MCMC "
             "run); with --backend, climb no higher than it"))
    executor: str = field(default=DEFAULT_EXECUTOR, metadata=_option(
        "--executor", choices=tuple(EXECUTORS),
        help="the TorchScript executor for the cell's traces: adaptive (default: each trace "
             "starts no-opt, the cheapest to compile, and a key called often enough is tried "
             "optimizing and keeps the faster), no-opt, optimizing (torch's default), or legacy"))
    max_entries: int | None = field(default=None, metadata=_option(
        "--max-entries", type=int, metavar="N",
        help="compile at most N traces per compiled function; calls with further keys run eager"))
    seed: int | None = field(default=None, metadata=_option(
        "--seed", type=int, metavar="N",
        help="seed both runs of --compare (pyro.set_rng_seed(N)); alone, seed the run"))
    backend: str = field(default=None, metadata=_option(  # type: ignore[assignment]
        "--backend", choices=CELL_BACKENDS,
        help="compile the cell with this backend from its first step instead of climbing: pyro "
             "(Pyro's JIT traces the loss), step (the whole step, loss, gradients and optimizer "
             "update, as one graph run by TorchScript), or inductor (that graph compiled into C++ "
             "kernels: the fastest steps, a first compile of seconds to minutes); with --auto, "
             "the highest tier it may climb to"))

    #: The fields left to their default (``auto``, ``backend``), settled from the others; replace()
    #: settles them again, so that ``RunOptions().replace(backend="pyro")`` is Pyro's JIT alone.
    defaulted: frozenset[str] = field(default=frozenset(), init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "defaulted",
                           frozenset(name for name in ("auto", "backend") if getattr(self, name) is None))
        if self.auto is None:  # not given: climb, unless a backend was named to run from the start
            object.__setattr__(self, "auto", self.backend is None)
        if self.backend is None:  # not given: a climb may reach every tier, auto=False runs Pyro's JIT
            object.__setattr__(self, "backend", TOP_TIER if self.auto is True else DEFAULT_BACKEND)
        problem = _problem(self)
        if problem is not None:
            raise ValueError(problem)

    @property
    def compiles(self) -> bool:
        """False for the eager run of ``--compare``, which records the cell as written."""
        return self.backend != "eager"

    def replace(self, **changes: Any) -> RunOptions:
        """These options with ``changes`` (validated again); fields left to their default are
        settled again from the changed ones."""
        settle: dict[str, Any] = {name: None for name in self.defaulted if name not in changes}
        return dataclasses.replace(self, **settle, **changes)


def _problem(options: RunOptions) -> str | None:
    """What is wrong with ``options``, in one line; None when nothing is."""
    for name, choices in (("warnings", WARNING_MODES), ("executor", tuple(EXECUTORS)),
                          ("backend", tuple(BACKENDS))):
        value = getattr(options, name)
        if value not in choices:
            return f"{name} must be one of {', '.join(choices)}, not {value!r}"
    for name in ("warmup", "auto"):
        if not isinstance(getattr(options, name), bool):
            return f"{name} must be True or False, not {getattr(options, name)!r}"
    if options.max_entries is not None and (not isinstance(options.max_entries, int)
                                            or options.max_entries < 1):
        return "--max-entries needs a positive number of traces, e.g. --max-entries 8"
    if options.seed is not None and not isinstance(options.seed, int):
        return f"seed must be an integer, not {options.seed!r}"
    return None


def argument(name: str) -> tuple[tuple[str, ...], dict[str, Any]]:
    """``(flags, settings)`` of the magic's argument for the field ``name``, for argparse."""
    option = {f.name: f for f in dataclasses.fields(RunOptions)}[name]
    meta = option.metadata
    settings = {"dest": name, "default": option.default, "help": meta["help"], **meta["argparse"]}
    return (meta["flag"],), settings


def flagged() -> tuple[str, ...]:
    """The fields the magic has a flag for."""
    return tuple(f.name for f in dataclasses.fields(RunOptions) if "flag" in f.metadata)


def from_arguments(parsed: Any) -> RunOptions:
    """The options of a parsed magic line (argparse's namespace)."""
    return RunOptions(**{name: getattr(parsed, name) for name in flagged()})
