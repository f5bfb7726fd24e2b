"""A compiled SVI step: what it holds, and one call of it.

A :class:`CompiledStep` owns nothing the user cannot see. Each call checks that the world it was
captured in still holds (:mod:`pyro_jitmagic.guards`), then runs the graph on the param store's
tensors, the optimizers' state and the step's arguments. The graph writes the new values into
those very tensors, and Pyro's float loss is evaluated from its outputs. A call it cannot run as
captured (a failed guard, a changed read, a gradient waiting in ``.grad``, a changed SVI) it
declines with a :class:`Declined` saying why, for the caller to run eagerly or compile again.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import patch
from ..compat import capture as compat
from ..compat import jit as jit_compat
from ..guards import Change, Finding, Sentinel, agree
from .backends import Background, Codegen, SwitchesToInductor
from .capture import CapturedStep
from .keys import layout
from .optim import ParamUpdate
from .reads import ValueRead
from .short_way import ShortWay, binder, call_check, getter, grads_check, short_way
from .writes import written_roots


@dataclass(frozen=True)
class Declined:
    """A call the compiled step did not run (it changed nothing), and why.

    ``transient``: about this call only (a gradient waiting in ``.grad``, a value read whose answer
    differs this time): the next call may run compiled. Otherwise the step no longer fits the world:
    ``changes`` are the guards that failed, ``finding`` the sentinel's check that failed, ``stale``
    set when the SVI itself changed (a param replaced) and the step can never run again.
    """

    why: str
    transient: bool = False
    value_check: bool = False  # transient: a check of a value the graph read failed (it ran, for nothing)
    changes: tuple[Change, ...] = ()
    finding: Finding | None = None
    stale: bool = False


class CompiledStep(SwitchesToInductor):
    """One SVI step, captured whole and compiled; call it as ``svi.step``.

    Attributes
    ----------
    backend : {"step", "inductor"}
        What runs the graph now: TorchScript, or inductor's C++ kernels.
    as_captured : bool
        The graph runs as captured, TorchScript unbuilt, while inductor loads its kernels from
        its disk cache (a large graph: see :data:`~.backends.AS_CAPTURED_NODES`).
    graph_nodes : int
        Nodes of the captured aten graph.
    kernels : int or None
        Kernels inductor generated (None for ``step``).
    capture_seconds, codegen_seconds : float
        Capturing the graph; building the backend (0 until background codegen is done).
    cache : {"cold", "warm"} or None
        Whether inductor compiled afresh or from its on-disk cache.
    fallback : str or None
        Why the step runs on ``step`` although ``inductor`` was asked for.
    value_reads : tuple of ValueRead
        Every value read the capture met (the user's first); ``risky`` ones are baked in.
    guards : int
        Reads the graph checks on every step.
    world : Guards
        What the step assumed of the world outside its inputs, checked before every call.
    steps, eager_steps : int
        Calls run by the graph; calls run by Pyro's ``SVI.step`` instead.
    sentinel : Sentinel
        When its calls are checked against eager's loss, and how many were.
    stale : str or None
        Why this compiled step no longer fits its SVI (its calls now run eagerly).
    """

    def __init__(self, svi: Any, key: Any, captured: CapturedStep, codegen: Codegen,
                 fallback: str | None = None, pending: Background | None = None,
                 eager_loss: Callable[[tuple[Any, ...], dict[str, Any]], float] | None = None) -> None:
        import pyro
        import torch
        from pyro.infer import SVI

        self.svi = svi
        self.key = key
        self._built(captured, codegen, fallback)
        self.value_reads: tuple[ValueRead, ...] = tuple(
            sorted(captured.reads, key=lambda r: r.origin != "user"))
        self.guards = captured.guards
        self.world = captured.world
        self.dice_masks = captured.dice_masks
        self.baked_tensors = captured.baked_tensors
        self.steps = 0
        self.eager_steps = 0
        self.guard_failures = 0
        #: the short way's call whose check of a value failed: ``(args, kwargs, Declined)``. The long
        #: way takes the same call next, and declines it as such without running the graph again
        self.failed_check: tuple[tuple[Any, ...], dict[str, Any], Declined] | None = None
        self.stale: str | None = None
        self.sentinel = Sentinel()
        self.as_captured = codegen.as_captured
        self._pending = pending
        self._store = pyro.get_param_store()
        self._eager = patch.unwrap(SVI.step)
        self._eager_loss = eager_loss
        self._inputs = list(captured.example_inputs)
        self._loss = captured.loss
        # (Pyro's NaN and inf checks are flags, which need no eager run and so no random state)
        self._save_rng = captured.random and captured.guards > 0
        self._warnings = captured.warnings
        #: the values after the loss's terms: whether all warnings' flags hold, and the guards'
        self._flags = 2 if captured.warnings else 1
        self._nan_site = captured.nan_warning
        self._bound = (svi.model, svi.guide, svi.loss, svi.optim)
        untouched = [captured.params[i][1] for i in captured.untouched]
        self._untouched = [(p, p.grad is None) for p in untouched]
        inputs = captured.example_inputs
        # the layout each input had at capture: inductor's generated code relies on it
        self._layouts = [layout(t) for t in inputs]
        # (each with a view of the optimizers' per-step numbers, which the binding writes)
        self._updates = [(captured.params[u.param][1], u.rule, u.state_inputs, captured.numbers.numpy(),
                          u.offset) for u in captured.updates]
        self._param_layouts = [(name, tensor, self._layouts[i])
                               for i, (name, tensor) in enumerate(captured.params)]
        self._grads = [(tensor, tensor.grad, _version(tensor.grad)) for _, tensor in captured.params]
        self._grads_hold = grads_check(self._grads)
        first = captured.first_arg_input
        self._args = [(position, first + k, self._layouts[first + k])
                      for k, position in enumerate(captured.arg_positions)]
        self._keywords = [(key, slot, self._layouts[slot]) for key, slot in captured.keyword_inputs]
        self._outside = [(source, getter(source), slot, self._layouts[slot])
                         for source, slot in captured.world_inputs]
        self._written = _written_inputs(captured.graph)
        self._eps = float(torch.finfo(inputs[0].dtype).eps) if inputs and inputs[0].is_floating_point() \
            else float(torch.finfo(torch.float32).eps)
        stepped = {u.param for u in captured.updates}
        # torch does some bookkeeping in Python (ClippedAdam: its int step, its decayed lr)
        self._after = [(rule, i in stepped) for i, rule in captured.rules.items()
                       if type(rule).after_step is not ParamUpdate.after_step]
        # (torch's functions held, not looked up on every step)
        self._rng_state, self._grad_mode = torch.default_generator.get_state, torch.is_grad_enabled
        self._set_grad = compat.grad_mode_setter()
        self._bound_now = binder(self)
        self._same_call = call_check(self)
        self._direct_due = True  # inductor's kernels are called directly after their first call
        self._short_way: tuple[Callable[..., Any], Any, Any, ShortWay] | None = None  # (run, site, grads, it)

    # -- one step ---------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> float:
        """One ``svi.step(*args, **kwargs)``: eager's float loss; params and optimizer state
        updated in place, as eager updates them (a declined call runs Pyro's own ``SVI.step``)."""
        loss = self.run(*args, **kwargs)
        if type(loss) is float:
            return loss
        self.eager_steps += 1
        result = self._eager(self.svi, *args, **kwargs)
        self.eager_ran()
        return result

    def run(self, *args: Any, **kwargs: Any) -> float | Declined:
        """One step on the graph: eager's float loss, or :class:`Declined` (nothing changed)."""
        failed, self.failed_check = self.failed_check, None
        if failed is not None and _same_arguments(failed, args, kwargs):
            return failed[2]  # (its graph, the same inputs and random state, would fail again)
        if self.stale is not None:
            return Declined(self.stale, stale=True)
        if not self.world.holds():
            changes = tuple(self.world.changes())
            return Declined("; ".join(map(str, changes)) or "a guard failed", changes=changes)
        if not self._bound_now(args, kwargs):  # (then the checks one by one, saying what failed)
            bound = _bind(self, args, kwargs)
            if isinstance(bound, Declined):
                return bound
        run = self._run_now()
        check = self.sentinel.due()
        if check and self._pending is not None and self._pending.busy.is_set():
            check = False  # inductor's Python runs in this process now
            self.sentinel.postpone()
        loss = self._graph_step(run, args, kwargs, check)
        if type(loss) is not float:
            return loss
        if self.steps == 1 and self._pending is not None:
            self._pending.start()  # inductor's codegen, after the first call and its check
        elif self._direct_due and self.backend == "inductor":
            self._direct_due = False
            # (every call's values are read into floats at once: the graph's outputs are held over)
            self._run = compat.direct_call(run, self._written, read_at_once=True) or run
        return loss

    def short_way(self, call_site: Any = None) -> ShortWay | None:
        """The short way of this step's calls while it is settled (:attr:`settled`), else None: one
        generated function (:func:`~.short_way.short_way`) that returns a call's float loss as
        :meth:`run` would, or None, having changed nothing, when ``run`` must take the call (the
        ``call_site``'s check or a guard that fails, another signature, the sentinel's check due,
        an in-graph guard that failed)."""
        if not self.settled:
            return None
        made = self._short_way
        # (it checks each param's .grad against the tensors last looked at, inline)
        if made is None or made[0] is not self._run or made[1] is not call_site or made[2] is not self._grads:
            made = self._short_way = (self._run, call_site, self._grads, short_way(self, call_site))
        return made[3]

    @property
    def settled(self) -> bool:
        """Whether the step runs the way it will from now on (its backend built and switched to, its
        graph called directly): :meth:`short_way` may run it."""
        return (self._same_call is not None and self.steps > 0 and self._pending is None
                and not self.as_captured and self.stale is None
                and not (self._direct_due and self.backend == "inductor"))

    def _graph_step(self, run: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any],
                    check: bool) -> float | Declined:
        """The graph's call on the bound inputs, checked against eager when ``check``: the float loss,
        or why not (it then wrote nothing back, and the random state is as it was)."""
        inputs = self._inputs
        rng = self._rng_state() if self._save_rng or check else None
        eager = self._eager_check(args, kwargs, rng) if check else None
        grad = self._grad_mode()
        self._set_grad(False)
        try:
            outputs = run(*inputs)
            values = outputs[0].tolist()
        finally:
            self._set_grad(grad)
        if values[-1] != 1.0:
            return self._guard_failed(rng)
        if self._flags > 1 and values[-2] != 1.0:
            self._warn(outputs[1])
        loss = self._loss(values)
        if eager is not None:
            # (the check's cost: eager's call and the comparison, not the graph's call, which the
            # step makes checked or not: at a first call, TorchScript's profiling run)
            compared = time.perf_counter()
            declined = self._compare(loss, values, eager, rng)
            self.sentinel.seconds += eager[3] + time.perf_counter() - compared
            if declined is not None:
                return declined
        for rule, stepped in self._after:
            rule.after_step(rule.state() if stepped else None)
        self.steps += 1
        if loss != loss:
            self._warn_nan()
        return loss

    def _guard_failed(self, rng: Any) -> Declined:
        """An in-graph guard failed: the graph wrote nothing back; the random state goes back to
        ``rng`` (where it was kept), and the call is declined for this time."""
        if rng is not None:
            _set_rng_state(rng)
        self.guard_failures += 1
        return Declined("a value the step reads changed from the one it was compiled for", transient=True,
                        value_check=True)

    def _warn(self, flags: Any) -> None:
        """Eager's warnings from Pyro's NaN and inf checks that found something (``flags``: the
        graph's, False where one did), in eager's order."""
        for holds, warning in zip(flags.tolist(), self._warnings, strict=True):
            if not holds:
                warning()

    def _warn_nan(self) -> None:
        """Eager's warning for a NaN loss, where eager's points (pyro/infer/*_elbo.py: warn_if_nan)."""
        warnings.warn_explicit("Encountered NaN: loss", UserWarning, *self._nan_site)

    def eager_ran(self) -> None:
        """The caller ran a step of this SVI eagerly: eager's ``zero_grads`` left fresh zeros in each
        param's ``.grad``, which the next compiled step takes as no gradient waiting."""
        self._no_gradient_waiting()

    def _no_gradient_waiting(self) -> bool:
        """Whether every param's ``.grad`` holds no gradient (None or zeros: another step, eager's or
        Pyro's JIT's, left fresh zeros); the tensors it holds now are the ones later calls compare
        with, so that this is looked at again only when one changes."""
        fresh, clear = [], True
        for tensor, grad, version in self._grads:
            now = tensor.grad
            if now is not grad or (now is not None and _version(now) != version):
                if now is None or not bool(now.any()):
                    grad, version = now, _version(now)
                else:
                    clear = False
            fresh.append((tensor, grad, version))
        self._grads, self._grads_hold = fresh, grads_check(fresh)
        return clear

    # -- the sentinel -------------------------------------------------------------
    def _eager_check(self, args: tuple[Any, ...], kwargs: dict[str, Any], rng: Any) -> tuple[Any, ...] | None:
        """Eager's loss for this call from the same params and random state, the random state it
        leaves, and a copy of what the graph will write (to put back should they disagree)."""
        import pyro
        import torch

        if self._eager_loss is None:
            return None
        start = time.perf_counter()
        saved = [(i, self._inputs[i].clone()) for i in self._written]
        try:
            # (without Pyro's validation, a quarter of an eager loss here: what it checks, the graph
            # checks on every call, and it changes no value)
            with torch.no_grad(), warnings.catch_warnings(), pyro.validation_enabled(False):
                warnings.simplefilter("ignore")
                eager: Any = self._eager_loss(args, kwargs)
        except Exception as exc:  # eager raises (a validation error): the compiled step must not run
            eager = exc
        after = torch.get_rng_state()
        torch.set_rng_state(rng)
        _put_back(self._inputs, saved)  # (a model that changes a global in place changed it once)
        return eager, after, saved, time.perf_counter() - start

    def _compare(self, loss: float, values: list[float], check: tuple[Any, ...], rng: Any) -> Declined | None:
        """None when the compiled call agrees with eager; else it is undone and declined."""
        import math

        import torch

        eager, after, saved, _ = check
        scale = math.fsum(abs(v) for v in values[:-self._flags])
        same_draws = torch.equal(torch.get_rng_state(), after)
        if not isinstance(eager, Exception) and agree(loss, float(eager), scale, self._eps) and same_draws:
            return None
        _put_back(self._inputs, saved)
        torch.set_rng_state(rng)
        finding = Finding(self.sentinel.calls, loss, float(eager) if not isinstance(eager, Exception)
                          else math.nan, raised=_raised(eager),
                          draws=not same_draws and not isinstance(eager, Exception))
        return Declined(str(finding), finding=finding)

    # -- binding (the checks one by one: :func:`_bind`) --------------------------------
    def _went_stale(self, reason: str) -> Declined:
        """This step can never run again (its SVI changed): why, declined."""
        self.stale = reason
        return Declined(reason, stale=True)

    def __repr__(self) -> str:
        return (f"<CompiledStep {self.backend}: {self.graph_nodes} nodes, {self.steps} steps"
                + (f", stale: {self.stale}" if self.stale else "") + ">")


def _bind(step: CompiledStep, args: tuple[Any, ...], kwargs: dict[str, Any]) -> list[Any] | Declined:
    """``step``'s graph inputs for this call, or why it cannot run (stale: its ``stale`` set): the checks
    of the generated binding (:func:`~.short_way.binder`) one by one, run when it fails, to say which."""
    svi = step.svi
    if (svi.model, svi.guide, svi.loss, svi.optim) != step._bound:
        return step._went_stale("the SVI's model, guide, loss or optimizer was replaced")
    store = compat.store_tensors(step._store)
    for name, tensor, (shape, _, stride, _) in step._param_layouts:
        if tensor.shape != shape or tensor.stride() != stride or store.get(name) is not tensor:
            return step._went_stale(f"the param '{name}' was replaced, reshaped or removed")
    inputs = step._inputs
    layouts = step._layouts
    objs = svi.optim.optim_objs
    for param, rule, positions, view, offset in step._updates:
        if objs.get(param) is not rule.owner:
            return step._went_stale("the optimizer was replaced for a param")
        changed = rule.unchanged()
        if changed is not None:
            return step._went_stale(changed)
        state = rule.optimizer.state.get(param)
        try:
            for key, position in zip(rule.state_keys, positions, strict=True):
                value = state[key]
                shape, dtype, stride, _ = layouts[position]
                if value.shape != shape or value.dtype != dtype or value.stride() != stride:
                    return step._went_stale(f"the optimizer's '{key}' changed its shape or type")
                inputs[position] = value
        except (KeyError, TypeError, AttributeError):
            return step._went_stale("an optimizer lost its state")
        for k, number in enumerate(rule.scalars(state)):
            view[offset + k] = number
    for param, no_grad in step._untouched:
        if (param.grad is None) != no_grad:
            return step._went_stale("a param the step does not differentiate gained a gradient")
    if not step._grads_hold() and not step._no_gradient_waiting():
        return Declined("a gradient was waiting in .grad (a backward() before the step), which "
                        "eager's step adds to its own", transient=True)
    for position, slot, (shape, dtype, stride, _) in step._args:
        arg = args[position]
        # (its device is in the key it was looked up by: only what a caller's own key may miss)
        if arg.shape != shape or arg.dtype != dtype or arg.stride() != stride:
            raise ValueError(f"this step was compiled for argument {position} of shape "
                             f"{tuple(shape)} and {dtype}, strides {stride}, not "
                             f"{tuple(arg.shape)} and {arg.dtype}, strides {arg.stride()}: look "
                             "compiled steps up by step_key(args, kwargs)")
        inputs[slot] = arg
    for key, slot, expected in step._keywords:
        value = kwargs[key]
        if layout(value) != expected:
            raise ValueError(f"this step was compiled for the keyword '{key}' laid out as {expected}: "
                             "look compiled steps up by step_key(args, kwargs)")
        inputs[slot] = value
    return _bind_outside(step._outside, inputs)


def _bind_outside(outside: list[Any], inputs: list[Any]) -> list[Any] | Declined:
    """The tensors the model reads from globals and closures, fetched afresh: a minibatch held in a
    global runs compiled with this step's data."""
    import torch

    for source, fetch, slot, expected in outside:
        try:
            value = fetch()
        except Exception:
            value = None
        if not isinstance(value, torch.Tensor) or layout(value) != expected:
            after = "gone" if value is None else (
                f"a tensor of shape {tuple(value.shape)}, strides {value.stride()}"
                if isinstance(value, torch.Tensor) else type(value).__name__)
            change = Change(source.describe(), f"a tensor of shape {tuple(expected[0])}", after)
            return Declined(str(change), changes=(change,))
        inputs[slot] = value
    return inputs




def _set_rng_state(state: Any) -> None:
    import torch

    torch.set_rng_state(state)


def bare_call(step: CompiledStep) -> Callable[[], Any]:
    """``step``'s graph called alone, as its :meth:`~CompiledStep.run` calls it, on the inputs bound
    for its last call (grad mode off around it is the caller's): a step without the work around
    its graph (``bench/bench_backends.py`` times it beside the step). It writes params and
    optimizer state as a step does."""
    run, inputs = step._run, list(step._inputs)
    return lambda: run(*inputs)


def _put_back(inputs: list[Any], saved: list[tuple[int, Any]]) -> None:
    import torch

    with torch.no_grad():
        for i, value in saved:
            inputs[i].copy_(value)


def _version(tensor: Any) -> int:
    return -1 if tensor is None else jit_compat.tensor_version(tensor)


def _raised(eager: Any) -> str:
    if not isinstance(eager, Exception):
        return ""
    first = str(eager).splitlines()[0] if str(eager) else ""
    return f"{type(eager).__name__}: {first}" if first else type(eager).__name__


def _written_inputs(graph: Any) -> list[int]:
    """Which inputs the graph writes in place (put back when the sentinel undoes a call)."""
    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    index = {node: i for i, node in enumerate(placeholders)}
    return sorted({index[value] for _, value in written_roots(graph) if value in index})


def _same_arguments(failed: tuple[tuple[Any, ...], dict[str, Any], Declined], args: tuple[Any, ...],
                    kwargs: dict[str, Any]) -> bool:
    """Whether a call's arguments are the very objects of the short way's call that failed."""
    before, before_kwargs, _ = failed
    return (len(before) == len(args) and all(a is b for a, b in zip(before, args, strict=True))
            and before_kwargs.keys() == kwargs.keys() and all(before_kwargs[k] is kwargs[k] for k in kwargs))
