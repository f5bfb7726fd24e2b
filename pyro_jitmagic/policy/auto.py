"""When compiling pays: one policy for every tier of the climb, eager -> Pyro's JIT -> whole step ->
inductor's kernels.

Compiling is a bet: a price up front (a trace, a capture, a codegen) against a saving on every
later step. :class:`AutoPolicy` bets from step times on each tier, and from what compiles cost in
the session in steps of the tier below (a ratio that carries across models). It expects the steps
the cell's loops say, else its last run's, else as many again. It climbs when those would repay the
next tier; with no count, once the time spent below reaches that cost (rent or buy). Priors stand
in until the session has measured (docs/benchmarks.md, The default climb). Switching tiers mid-run
is safe: every tier computes the same loss from the same params and random state.
"""

from __future__ import annotations

import statistics
import weakref
from collections.abc import Callable
from typing import Any, Literal

from ..records.report import AutoDecision
from ..records.units import plural, seconds
from .books import TIERS, FunctionCalls, KeyBook, Kind, Memory, Tally, TierBook, TierTally

CodegenStart = Literal["now", "after the cell"] | None

# -- Pyro's keys (eager or traced) and HMC/NUTS potentials ----------------------------------
#: An SVI run is expected to last at least this many steps in all (tutorials and fits run hundreds
#: to thousands).
HORIZON = 200
#: Before a compile is measured: its cost in eager steps of the key compiled, and the speedup of
#: its compiled steps (the tutorial's SVI, its HMM and NUTS: docs/benchmarks.md, The default climb).
PRIOR_COMPILE_STEPS = {"svi": 12.0, "potential": 15.0}
PRIOR_SPEEDUP = {"svi": 2.0, "potential": 1.5}
#: Below this measured speedup a new key is not worth compiling.
MIN_SPEEDUP = 1.1
#: Eager steps a key runs before its median step time is trusted (its first pays one-off costs).
MIN_EAGER_STEPS = 3
#: A key compiles on the steps expected to follow only when they save this many times its expected
#: compile cost. The figures are priors and the medians of a few steps, and a trace can turn out
#: unusable (it froze a read, it dropped a draw: the key runs eager and its cost is lost), as two
#: 30-step cells of the real-model suite did on bets of 1.12-1.13x (docs/real-models.md). With the
#: figures right, a key that stays eager under the margin takes at most 1.13x the time it would
#: compiled at the prior 2x speedup (1.3x as the speedup grows without bound).
BET_MARGIN = 1.3
#: MCMC: samples measured eager before looking ahead; how often to look.
MCMC_MEASURE_SAMPLES = 3
MCMC_CHECK_EVERY = 8
#: A key's compile is learned once it has run this many compiled steps (the first may be slow).
LEARN_AFTER = 8
#: A compiled key whose steady steps take longer than its eager ones by this factor runs eager for
#: the rest of the session; looked at once its compiled steps number one of :data:`STEP_DOWN_AT`
#: (the settling ones past). The climb bets on a speedup it has not measured for the key, and a
#: trace can be slower than the Python it replaced.
STEP_DOWN_RATIO = 1.1
STEP_DOWN_AT = (8, 32, 128)

# -- the whole step and inductor's kernels ----------------------------------------------------
#: Capturing the whole step, in steps of the tier below; a whole step's speedup over that tier, and
#: inductor's over the whole step on TorchScript; cold codegen seconds ~ a + b * capture seconds;
#: a whole potential evaluation's speedup over eager's and Pyro's; its capture in eager
#: evaluations. From docs/benchmarks.md: The default climb, The whole step, Captures. (The capture
#: was measured as 250 steps of Pyro's JIT; where eager's steps are below, the same count stands:
#: counted as JIT steps at the JIT's speedup, the climb captured sooner and lost on short cells of
#: the real-model suite: docs/real-models.md, plain %%pyrojit.)
PRIOR_CAPTURE_STEPS = 250.0
PRIOR_STEP_SPEEDUP = 1.7
PRIOR_INDUCTOR_SPEEDUP = 6.0
PRIOR_CODEGEN = (10.0, 8.0)
PRIOR_POTENTIAL_SPEEDUP = {"eager": 2.5, "pyro": 1.25}
PRIOR_POTENTIAL_CAPTURE_EVALS = 43.0
#: Steps in the low tiers before a signature's step time is trusted (as many as Pyro's keys take,
#: so that a run known to be long captures before Pyro traces), and on TorchScript before codegen.
MIN_LOW_STEPS = 3
MIN_STEP_STEPS = 3
#: Seconds a codegen put off until the cell ends waits before handing its graph over, so that the
#: cell's report is made and shown first.
AFTER_CELL_DELAY = 1.0
#: Seconds inductor's first load takes in a process that has not loaded it yet, its disk cache warm:
#: its import, its probe of the CPU's vector instructions (small compiles, each in a subprocess) and
#: the kernels' module, 2.6-3.3 s here. Its Python holds the interpreter meanwhile, so the run's
#: iterations wait as long (docs/benchmarks.md, The whole step: a cell in a new process).
PRIOR_FIRST_LOAD = 3.0
#: Seconds the first capture in a process spends importing torch's compiler stack (make_fx needs
#: inductor's config, which loads dynamo), 1.0-1.6 s here. An SVI cell has paid it (torch's
#: optimizers import it); an MCMC run on Pyro's JIT has not, and a short one would save less by
#: capturing (docs/benchmarks.md, The whole step: a cell in a new process).
PRIOR_STACK_LOAD = 1.0


class TiersAbove:
    """What the session has measured of the tiers above Pyro's JIT (the whole step, inductor's kernels,
    whole potentials), and the climb's decisions from it; :class:`AutoPolicy` adds Pyro's keys."""

    def __init__(self, horizon: int, prior_capture_steps: float,
                 prior_potential_capture_evals: float) -> None:
        self.horizon = horizon
        self.prior_capture_steps = prior_capture_steps
        self.prior_potential_capture_evals = prior_potential_capture_evals
        # captures in low steps, the tiers' speedups, cold codegens over captures, potential captures in
        # evaluations
        self._capture: list[float] = []
        self._step_speedup: list[float] = []
        self._inductor_speedup: list[float] = []
        self._codegen: list[float] = []
        self._potential_capture: list[float] = []
        #: how many times the session's figures changed: a decision that no later step of a cell can
        #: change holds while this stays (see :meth:`climb_to_step`)
        self.learned = 0
        #: why the whole step of this code cannot be captured, by memory key: a cell run again builds
        #: a new SVI of the same code, which would meet the same limit after the same capture's cost
        self._uncapturable: dict[str, str] = {}
        #: MCMC: what runs that stayed below the whole potential only for want of torch's compiler stack
        #: were expected to save by capturing: once it reaches the stack's load, a run captures (rent
        #: or buy: a session of short runs pays at most about twice what the best choice would)
        self.stack_rent = 0.0

    # -- what the session has learned of the tiers above Pyro's JIT -----------------------
    def capture_steps(self) -> float:
        return statistics.median([*self._capture, self.prior_capture_steps])

    def step_speedup(self) -> float:
        return statistics.median([*self._step_speedup, PRIOR_STEP_SPEEDUP])

    def inductor_speedup(self) -> float:
        return statistics.median([*self._inductor_speedup, PRIOR_INDUCTOR_SPEEDUP])

    def codegen_seconds(self, capture: float) -> float:
        """Expected cold codegen seconds for a graph whose capture took ``capture`` seconds."""
        a, b = PRIOR_CODEGEN
        return statistics.median([*(r * capture for r in self._codegen), a + b * capture])

    def _learn_tiers(self, book: TierBook) -> None:
        low, step, fast = book.low_step(), book.step_time("step"), book.step_time("inductor")
        if book.learned or low is None or book.capture_seconds is None:
            return
        book.learned = True
        self.learned += 1
        self._capture.append(book.capture_seconds / low)
        if step:
            self._step_speedup.append(low / step)
            if fast:
                self._inductor_speedup.append(step / fast)
        if book.codegen_seconds is not None and book.codegen_cache == "cold" and book.capture_seconds > 0:
            self._codegen.append(book.codegen_seconds / book.capture_seconds)

    # -- decisions: climbing above Pyro's JIT --------------------------------------------
    def climb_to_step(self, book: TierBook, function_calls: int, warm: bool) -> bool:
        """Whether this signature should capture its whole step now (``warm``: inductor's cache
        is known to hold its graph); sets ``book.why``."""
        if book.stays == (self.learned, warm):
            return False  # (its last look said so for the rest of the cell)
        if book.stepped_down or book.cannot_capture:  # for the session: its steps take the short way
            if book.cannot_capture:
                book.why = f"stayed on {book.tier}: the whole step cannot be captured ({book.cannot_capture})"
            book.stays = (self.learned, warm)
            return False
        low = book.low_step()
        if not low or book.steps["eager"] + book.steps["pyro"] < MIN_LOW_STEPS:
            return False  # (a step that takes no measurable time has nothing to save)
        cost = low * self.capture_steps()
        speedup = self.step_speedup() * (self.inductor_speedup() if warm else 1.0)
        future, whence = steps_to_follow(book, function_calls, self.horizon)
        # a call whose check of a value fails runs the graph and then eager's step: each costs a
        # low step more than its graph alone (a branch on a random draw: docs/real-models.md)
        failing, cost_each = book.failed_share(), book.graph_cost()
        gain = max(1 - (cost_each if cost_each is not None else 1 / speedup + failing), 0.0)
        saving = future * low * gain
        faster = "inductor's kernels (cached)" if warm else "the whole step"
        if failing:
            faster += f", its checks of values failing on {failing:.0%} of its graph's calls"
            if cost_each is not None:
                faster += f" (a call took {cost_each:.2f} of a step below)"
        cell = book.cell
        if cell is not None and max(cell.total - cell.done, 0) * low * gain < cost:
            # Saving and cost both scale with the step time, and no signature has more steps to
            # follow than the cell has left, which only shrinks: no later step of this cell captures,
            # unless the session learns other figures: the steps that follow take the short way
            # (docs/real-models.md, What the climb adds to a short cell).
            book.stays = (self.learned, warm)
        if saving >= cost:
            book.why = (f"captured after {plural(book.calls, 'step')}: the ~{future:.0f} steps expected "
                        f"({whence}) would save {seconds(saving)} on {faster}, more than the capture's "
                        f"expected {seconds(cost)}")
            return True
        if book.expected_steps is None and book.cell is None and book.low_seconds >= cost:
            # rent or buy: above the whole step lie inductor's kernels, whose steps cost next to
            # nothing, so the rent of staying below is about the whole time spent there
            book.why = (f"captured after {plural(book.calls, 'step')}, which took "
                        f"{seconds(book.low_seconds)}: the capture's expected cost ({seconds(cost)})")
            return True
        book.why = (f"stayed on {book.tier}: the ~{future:.0f} steps expected ({whence}) would save "
                    f"{seconds(saving)} on {faster}, under the capture's expected {seconds(cost)}")
        return False

    def cannot_capture(self, book: TierBook, why: str) -> None:
        """The signature's whole step cannot be captured: for it, and for the same code, in the session."""
        book.cannot_capture = why
        if book.memory_key:
            self._uncapturable[book.memory_key] = why

    def capture_refused(self, key: str) -> str:
        """Why the whole step of this code could not be captured in the session ("" if it could)."""
        return self._uncapturable.get(key, "") if key else ""

    def graph_pays(self, book: TierBook) -> bool:
        """Whether a signature's graph still beats the low tiers, its calls whose checks of values
        failed counted at their cost (the graph's call and eager's step): looked at once they number
        one of :data:`STEP_DOWN_AT`. When it does not, sets ``book.stepped_down`` (the low tiers for
        the session) and says why."""
        if book.stepped_down:
            return False
        measured = book.graph_times() if book.checks_failed in STEP_DOWN_AT else None
        cost_each = book.graph_cost()
        if measured is None or cost_each is None or cost_each <= STEP_DOWN_RATIO:
            return True
        share, passed, failed, low = measured
        calls = plural(book.graph_calls(), "call")
        book.stepped_down = (f"back to the low tiers after {calls} of its graph: its checks of values "
                             f"failed on {share:.0%} of them, each then run again eager ({seconds(failed)}; "
                             f"the others {seconds(passed)}), {seconds(cost_each * low)} a step against "
                             f"{seconds(low)} below")
        return False

    def start_codegen(self, book: TierBook, function_calls: int, warm: bool) -> CodegenStart:
        """When inductor's codegen should start, for a signature on ``step``: ``"now"``, ``"after
        the cell"`` or None (not yet: the whole step's time is not measured). Sets
        ``book.codegen_why``: a start says why; a put-off, unless an earlier look put it off.

        From inductor's disk cache it starts at once. Cold, it runs in a worker process, on a core
        the steps leave idle, but handing the graph over costs this process inductor's import the
        first time. So it starts at once when its kernels can serve this run (the steps expected to
        follow take longer on the whole step than the codegen is expected to), else when the cell
        ends, for the next run.
        """
        if warm:
            book.codegen_why = "its kernels came from inductor's disk cache"
            return "now"
        step = book.step_time("step")
        if step is None or book.steps["step"] < MIN_STEP_STEPS or book.capture_seconds is None:
            return None
        expected = self.codegen_seconds(book.capture_seconds)
        future, whence = steps_to_follow(book, function_calls, self.horizon)
        left = future * step
        if left >= expected:
            book.codegen_why = (f"inductor's codegen started at step {book.calls} in a worker process "
                                f"(expected {seconds(expected)}, against the ~{future:.0f} steps expected "
                                f"({whence}), {seconds(left)} on the whole step)")
            return "now"
        if not book.codegen_why:  # the look that put it off says why; later ones that agree add nothing
            book.codegen_why = (f"inductor's codegen starts in a worker process when the cell ends, for "
                                f"the next run: the ~{future:.0f} steps expected ({whence}) take "
                                f"{seconds(left)} on the whole step, less than its expected "
                                f"{seconds(expected)}")
        return "after the cell"

    def first_load_now(self, remaining_seconds: float) -> bool:
        """MCMC: whether inductor's first load in this process (its disk cache holding the graph)
        should start now, beside the run, rather than when it ends: only where the evaluations left
        take longer than the load, which would otherwise slow them more than its kernels save."""
        return remaining_seconds >= PRIOR_FIRST_LOAD

    def potential_codegen_now(self, capture_seconds: float, remaining_seconds: float) -> bool:
        """MCMC: whether a cold codegen of the captured potential should start now (its kernels
        can serve this run: the evaluations left take longer than it is expected to), rather
        than when the run ends, for the next one."""
        return remaining_seconds >= self.codegen_seconds(capture_seconds)

    def climb_potential(self, tier: str, per_eval: float, eager_per_eval: float, remaining: float,
                        pyro_net: float, stack_loaded: bool = True) -> tuple[bool, str, float]:
        """MCMC: whether to capture the potential and its gradient now, from ``tier`` (eager or
        pyro) whose evaluations take ``per_eval`` (a sample's time over its evaluations), with
        ``remaining`` evaluations expected; ``pyro_net`` is what compiling on Pyro's JIT instead is
        expected to net (the whole step must net more). Where torch's compiler stack is not loaded
        (``stack_loaded``), its first load counts too, less :attr:`stack_rent`. Returns the
        decision, why, and what staying forgoes where only the stack's load held it back (else 0)."""
        ratios = [*self._potential_capture, self.prior_potential_capture_evals]
        cost = eager_per_eval * statistics.median(ratios)
        speedup = PRIOR_POTENTIAL_SPEEDUP[tier]
        saving = remaining * per_eval * (1 - 1 / speedup)
        why = (f"the ~{remaining:.0f} evaluations still to come were expected to save {seconds(saving)} "
               f"on the whole potential and gradient, against its capture's {seconds(cost)}")
        net = saving - cost - max(pyro_net, 0.0)
        if stack_loaded or net <= 0:
            return net > 0, why, 0.0
        load = PRIOR_STACK_LOAD
        if net + self.stack_rent >= load:
            rent = f", less {seconds(self.stack_rent)} forgone by earlier runs" if self.stack_rent else ""
            return True, f"{why} and torch's compiler stack's first load (about {seconds(load)}{rent})", 0.0
        return False, why, net

    def pay_stack_rent(self, forgone: float) -> None:
        """An MCMC run stayed below the whole potential for want of the compiler stack, forgoing this."""
        self.stack_rent += max(forgone, 0.0)

    def learn_potential(self, capture_seconds: float, eager_per_eval: float) -> None:
        if eager_per_eval > 0:
            self._potential_capture.append(capture_seconds / eager_per_eval)


class AutoPolicy(TiersAbove):
    """The session's measurements of what compiling costs and gains on each tier, and every decision
    of the climb made from them (see the module's text).

    Parameters
    ----------
    horizon : int
        See :data:`HORIZON`.
    prior_compile_steps, prior_speedup : dict, optional
        See :data:`PRIOR_COMPILE_STEPS` and :data:`PRIOR_SPEEDUP`.
    memory : optional
        What earlier runs left (steps run, graphs in inductor's cache); by default the one beside
        inductor's cache, which the climbing compiler finds (:meth:`find_memory`); None for none.
    prior_capture_steps, prior_potential_capture_evals : float, optional
        See :data:`PRIOR_CAPTURE_STEPS` and :data:`PRIOR_POTENTIAL_CAPTURE_EVALS`.
    """

    def __init__(self, horizon: int = HORIZON, prior_compile_steps: dict[str, float] | None = None,
                 prior_speedup: dict[str, float] | None = None, memory: Memory | str | None = "default",
                 prior_capture_steps: float = PRIOR_CAPTURE_STEPS,
                 prior_potential_capture_evals: float = PRIOR_POTENTIAL_CAPTURE_EVALS) -> None:
        self.prior_compile_steps = {**PRIOR_COMPILE_STEPS, **(prior_compile_steps or {})}
        self.prior_speedup = {**PRIOR_SPEEDUP, **(prior_speedup or {})}
        super().__init__(horizon, prior_capture_steps, prior_potential_capture_evals)
        self._memory = memory
        self._find_memory: Callable[[], Memory | None] = lambda: None
        # the books: per compiled function, its keys'; per SVI, its signatures' (both held weakly)
        self._books: weakref.WeakKeyDictionary[Any, tuple[FunctionCalls, dict[Any, KeyBook]]] = (
            weakref.WeakKeyDictionary())
        self.books: weakref.WeakKeyDictionary[Any, dict[Any, TierBook]] = weakref.WeakKeyDictionary()
        # what was measured: compiles in eager steps and speedups (per kind of key)
        self._compile_steps: dict[str, list[float]] = {"svi": [], "potential": []}
        self._speedups: dict[str, list[float]] = {"svi": [], "potential": []}
        #: traces found unusable for what the code does, by :attr:`KeyBook.code`: why
        self.unusable: dict[str, str] = {}
        #: a trace of the same code costs and gains the same in eager steps, and the session's
        #: median is a poor guide to it: an enumerated HMM's trace costs many more of its steps than
        #: a small model's (docs/real-models.md). By :attr:`KeyBook.code`: (compile steps, speedup)
        self._by_code: dict[str, tuple[float, float]] = {}

    def book(self, fn: Any, key: Any, kind: Kind, owner: str, describe: str) -> KeyBook:
        """The book of ``key`` of compiled function ``fn`` (made on first use)."""
        function, books = self._books.setdefault(fn, (FunctionCalls(), {}))
        book = books.get(key)
        if book is None:
            book = books[key] = KeyBook(kind, owner, describe, function=function)
        return book

    # -- what the session has learned -----------------------------------------
    def compile_steps(self, kind: Kind, code: str = "") -> tuple[float, bool]:
        """Expected compile cost in eager steps of the key compiled (of ``code``: its own, once a
        trace of it was measured); True when measured."""
        known = self._by_code.get(code) if code else None
        if known is not None:
            return known[0], True
        measured = self._compile_steps[kind]
        return statistics.median([*measured, self.prior_compile_steps[kind]]), bool(measured)

    def speedup(self, kind: Kind, code: str = "") -> tuple[float, bool]:
        """Expected eager step time over compiled step time (of ``code``, as :meth:`compile_steps`);
        True when measured."""
        known = self._by_code.get(code) if code else None
        if known is not None:
            return known[1], True
        measured = self._speedups[kind]
        return statistics.median([*measured, self.prior_speedup[kind]]), bool(measured)

    def learn(self, book: KeyBook | TierBook) -> None:
        """Add a key's or signature's costs and speedups to what the session expects of the next."""
        if isinstance(book, TierBook):
            return self._learn_tiers(book)
        eager, compiled, cost = book.eager_step(), book.compiled_step(), book.compile_seconds()
        if book.learned or eager is None or compiled is None or cost is None or eager <= 0:
            return
        book.learned = True
        self.learned += 1
        self._compile_steps[book.kind].append(cost / eager)
        if compiled > 0:
            self._speedups[book.kind].append(eager / compiled)
            if book.code:
                self._by_code[book.code] = (cost / eager, eager / compiled)

    def expected_compile_seconds(self, book: KeyBook) -> float | None:
        eager = book.eager_step()
        return None if eager is None else eager * self.compile_steps(book.kind, book.code)[0]

    # -- decisions: Pyro's keys and potentials ------------------------------------------
    def decide_svi(self, book: KeyBook, function_calls: int,
                   cell: tuple[float, int] | None = None, left: int | None = None) -> bool:
        """Whether this key should compile now, its function having been called
        ``function_calls`` times so far (all keys); ``cell``: the calls this key is expected
        to take in the rest of the cell and the cell's total, when its loops say (then the
        look-ahead uses them, and rent-or-buy, a guard against not knowing, is off); ``left``: the
        cell's steps left in all, which no key has more of. Sets ``book.why``, and ``book.stays``
        when no later step of the cell can decide otherwise."""
        eager = book.eager_step()
        if eager is None or book.eager_calls < MIN_EAGER_STEPS:
            book.why = f"ran eager: it takes {MIN_EAGER_STEPS} eager steps to measure a key's step time"
            return False
        speedup, measured = self.speedup("svi", book.code)
        if measured and speedup < MIN_SPEEDUP:
            where = "for the same code before" if book.code in self._by_code else "in this session"
            book.why = f"stayed eager: compiled steps were only {speedup:.2f}x as fast as eager {where}"
            book.stays = self.learned
            return False
        steps = self.compile_steps("svi", book.code)[0]
        expected = eager * steps
        calls, spent = book.eager_calls, book.eager_seconds
        if cell is not None:
            future, whence = cell[0], f" (the cell's loops run {plural(cell[1], 'step')})"
        else:
            future, whence = calls * max(1.0, self.horizon / max(function_calls, 1)), ""
        saving = future * eager * (1 - 1 / speedup) if speedup > 1 else 0.0
        if saving >= BET_MARGIN * expected:
            book.why = (f"compiled after {plural(calls, 'eager step')}: the ~{future:.0f} calls expected "
                        f"to follow{whence} would save {seconds(saving)}, more than its expected compile "
                        f"cost ({seconds(expected)})")
            return True
        if cell is not None:
            if left is not None and left * (1 - 1 / speedup) < BET_MARGIN * steps:
                # (saving and cost both scale with the eager step; the steps left only shrink)
                book.stays = self.learned
            cost = f"its expected compile cost ({seconds(expected)})"
            short = f"under {cost}" if saving < expected else \
                f"too close to {cost} to bet on (it takes {BET_MARGIN:g}x)"
            book.why = (f"stayed eager: the ~{future:.0f} calls expected to follow{whence} would save "
                        f"{seconds(saving)}, {short}")
            return False
        if spent >= expected:
            book.why = (f"compiled after {plural(calls, 'eager step')}, which took {seconds(spent)}: "
                        f"its expected compile cost ({seconds(expected)})")
            return True
        book.why = (f"stayed eager: the ~{future:.0f} calls expected to follow would save {seconds(saving)} "
                    f"and its eager steps took {seconds(spent)}, both under its expected compile cost "
                    f"({seconds(expected)})")
        return False

    def step_down(self, book: KeyBook) -> bool:
        """Whether a compiled key runs eager from now on: its steady compiled steps, measured, took
        longer than its eager ones (:data:`STEP_DOWN_RATIO`). Sets ``book.why`` when it steps down."""
        if book.stepped_down:
            return True
        if book.compiled_calls not in STEP_DOWN_AT or not book.compiled:
            return False
        eager, compiled = book.eager_step(), book.compiled_step()
        if eager is None or compiled is None or compiled <= eager * STEP_DOWN_RATIO:
            return False
        book.stepped_down = True
        self.learn(book)  # (the next keys' decisions weigh this speedup too)
        book.why = (f"back to eager after {plural(book.compiled_calls, 'compiled step')}: they took "
                    f"{seconds(compiled)} each, eager's {seconds(eager)}")
        return True

    def decide_potential(self, book: KeyBook, samples_done: int, samples_total: int,
                         evaluations: int) -> bool:
        """Whether the potential should compile now, from the evaluations still to come."""
        eager = book.eager_step()
        if eager is None or samples_done < MCMC_MEASURE_SAMPLES:
            book.why = "runs eager first, to measure its evaluations"
            return False
        speedup, _ = self.speedup("potential")
        remaining = evaluations / samples_done * max(samples_total - samples_done, 0)
        saving = remaining * eager * (1 - 1 / speedup) if speedup > 1 else 0.0
        expected = eager * self.compile_steps("potential")[0]
        if saving > expected:
            book.why = (f"compiled after {samples_done} samples: the ~{remaining:.0f} evaluations "
                        f"still to come were expected to save {seconds(saving)}, more than compiling's "
                        f"{seconds(expected)}")
            return True
        book.why = (f"stayed eager: the ~{remaining:.0f} evaluations still to come were expected to save "
                    f"{seconds(saving)}, less than compiling's {seconds(expected)}")
        return False

    @property
    def memory(self) -> Memory | None:
        """What earlier runs left: the one given, else the one the climbing compiler found."""
        if self._memory == "default":
            return self._find_memory()
        return self._memory  # type: ignore[return-value]

    def find_memory(self, find: Callable[[], Memory | None]) -> None:
        """Where the memory lives when none was given: beside inductor's cache of the moment (tests
        move it), which the compiler that climbs knows and this module, importing no torch, does not."""
        self._find_memory = find

    # -- the report ----------------------------------------------------------------------
    def decision(self, tally: Tally | TierTally) -> AutoDecision:
        """One key's or signature's decision in one run, with what it saved or lost, for the report."""
        self.learn(tally.book)
        if isinstance(tally, TierTally):
            return _signature_decision(self, tally)
        return _key_decision(self, tally)

    def remember(self, tallies: list[TierTally]) -> None:
        """The run ended: each signature's step count, for the next run of the same cell."""
        if self.memory is None:
            return
        counts = {t.book.memory_key: (sum(t.steps.values()), t.book.digest, t.book.measured_checks())
                  for t in tallies if t.book.memory_key and sum(t.steps.values())}
        self.memory.ran(counts)


def steps_to_follow(book: TierBook, function_calls: int, horizon: int = HORIZON) -> tuple[float, str]:
    """Steps expected to follow for this signature, and where the figure comes from (``horizon``: see
    :data:`HORIZON`)."""
    mine = book.calls - book.run_start
    if book.cell is not None:  # the cell's own loops: this signature's share of what is left
        left = book.cell.left_for(mine)
        return left, f"the cell's loops run {plural(book.cell.total, 'step')}"
    if book.expected_steps is not None:
        left = max(book.expected_steps - mine, 0)
        return float(left), f"its last run took {book.expected_steps} steps"
    return book.calls * max(1.0, horizon / max(function_calls, 1)), "as many again as so far"


def _key_decision(policy: AutoPolicy, tally: Tally) -> AutoDecision:
    """One key's decision in one run, with what it saved or lost, for the report.

    What the key saved is estimated from the figures the report shows beside it: its
    median eager and compiled step times and its compile cost. Against always eager,
    each compiled step saved the difference and compiling cost its price (when it
    compiled in this cell); against always compiled, each eager step lost the
    difference and compiling was paid all the same (unless compiled in an earlier
    cell). The alternatives' totals are this cell's measured time plus those savings,
    so that a step's hiccup counts the same on both sides.
    """
    book = tally.book
    speedup, _ = policy.speedup(book.kind, book.code)
    eager, compiled = book.eager_step(), book.compiled_step()
    estimated = eager is None or compiled is None
    if eager is None and compiled is not None:
        eager = compiled * speedup
    if compiled is None and eager is not None:
        compiled = eager / speedup
    cost = book.compile_seconds()
    if cost is None and not tally.compiled_before:
        cost = policy.expected_compile_seconds(book)
        estimated = True
    gain = None if eager is None or compiled is None else eager - compiled
    paid = cost if tally.compiled_at is not None else 0.0  # compiling, in this cell
    always_pays = 0.0 if tally.compiled_before else cost  # compiling, always compiled
    saved_vs_eager = saved_vs_compiled = None
    if tally.compiled_steps == 0:  # it did run all eager
        saved_vs_eager = 0.0
    elif gain is not None and paid is not None:
        saved_vs_eager = tally.compiled_steps * gain - paid
    if tally.compiled_before and tally.eager_steps == 0:  # it did run all compiled
        saved_vs_compiled = 0.0
    elif gain is not None and paid is not None and always_pays is not None:
        saved_vs_compiled = always_pays - paid - tally.eager_steps * gain
    return AutoDecision(
        kind=book.kind, owner=book.owner, key=book.key, state=book.state,
        why="compiled in an earlier cell" if tally.compiled_before else book.why,
        eager_steps=tally.eager_steps, compiled_steps=tally.compiled_steps,
        compiled_at=tally.compiled_at, seconds=tally.seconds,
        eager_step_seconds=eager, compiled_step_seconds=compiled, compile_seconds=cost,
        always_eager_seconds=None if saved_vs_eager is None else tally.seconds + saved_vs_eager,
        always_compiled_seconds=None if saved_vs_compiled is None else tally.seconds + saved_vs_compiled,
        estimated=estimated, compiled_before=tally.compiled_before)


def _signature_decision(policy: AutoPolicy, tally: TierTally) -> AutoDecision:
    """One signature's tiers in one run, and estimates of what each single tier would have taken."""
    book = tally.book
    low = book.low_step()
    times = {t: book.step_time(t) for t in TIERS}
    step = times["step"] or (low / policy.step_speedup() if low else None)
    fast = times["inductor"] or (step / policy.inductor_speedup() if step else None)
    capture = book.capture_seconds if book.capture_seconds is not None else (
        low * policy.capture_steps() if low else None)
    codegen = book.codegen_seconds
    if codegen is None and capture is not None:
        codegen = 0.0 if policy.memory is not None and policy.memory.inductor_holds(book.digest) \
            else policy.codegen_seconds(capture)
    n = sum(tally.steps.values())
    versus: list[tuple[str, float]] = []
    built = None if capture is None else capture + (codegen or 0.0)
    for name, per, upfront in (("eager", times["eager"], 0.0), ("pyro", times["pyro"], 0.0),
                               ("step", step, capture), ("inductor", fast, built)):
        if per is not None and upfront is not None:
            versus.append((name, n * per + upfront))
    compiled = tally.steps["pyro"] + tally.steps["step"] + tally.steps["inductor"]
    return AutoDecision(
        kind="svi", owner=book.owner, key=book.key, state=book.tier, why=book.explained(),
        eager_steps=tally.steps["eager"], compiled_steps=compiled, compiled_at=None,
        seconds=tally.seconds, eager_step_seconds=times["eager"], compiled_step_seconds=(
            times[book.tier] if book.tier != "eager" else None),
        compile_seconds=book.capture_seconds, always_eager_seconds=dict(versus).get("eager"),
        always_compiled_seconds=dict(versus).get("pyro"), estimated=True,
        path=tuple(book.path), versus=tuple(versus))
