"""A compiled SVI step: what it holds, and one call of it.

A :class:`CompiledStep` owns nothing the user cannot see. Each call checks that the world it was
captured in still holds (:mod:`pyro_jitmagic.guards`), then runs the graph on the param store's
tensors, the optimizers' state and the step's arguments. The graph writes the new values into
those very tensors, and Pyro's float loss is evaluated from its outputs. A call it cannot run as
captured (a failed guard, a changed read, a gradient waiting in ``.grad``, a changed SVI) it
declines with a :class:`Declined` saying why, for the caller to run eagerly or compile again.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .. import patch
from ..compat import capture as compat
from ..compat import jit as jit_compat
from ..guards import Change, Finding, Sentinel, agree
from ..guards.checks import Constants
from .backends import Background, Codegen, SwitchesToInductor
from .capture import CapturedStep
from .optim import ParamUpdate
from .reads import ValueRead


def layout(tensor: Any) -> tuple[Any, ...]:
    """What a compiled step assumes of an input tensor: its shape, dtype, strides and device."""
    return tensor.shape, tensor.dtype, tensor.stride(), tensor.device


def step_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a compiled step is keyed on; cheap, as it runs on every step.

    The key holds the number of positional arguments, and each tensor's shape, dtype, strides and
    device (a positional argument's or a keyword's), which its graph is built for. Every other value
    is keyed by itself, as the graph holds it as a constant; as in Pyro's key, lists, dicts and
    ``argparse.Namespace`` go by value, other unhashable objects by identity. A numpy array goes by
    its shape (no graph takes one)."""
    tensor = _tensor_class()
    described = tuple([(a.shape, a.dtype, a.stride(), a.device) if isinstance(a, tensor) else _value(a)
                       for a in args])  # (a list first: a generator costs more on every step)
    if not kwargs:
        return len(args), (), described
    laid = {k: ("tensor", v.shape, v.dtype, v.stride(), v.device) if isinstance(v, tensor) else v
            for k, v in kwargs.items()}
    try:
        key = jit_compat.fast_key((), laid)
        hash(key)
    except TypeError:
        key = jit_compat.hashed_key((), laid)
    return len(args), key[1], described


@functools.cache
def _tensor_class() -> Any:
    import torch  # (once: the key is read on every step)

    return torch.Tensor


def _value(value: Any) -> Any:
    try:
        hash(value)
    except TypeError:
        shape = getattr(value, "shape", None)
        if shape is not None:  # a numpy array: it runs eager, whatever its values
            return "array", tuple(shape), str(getattr(value, "dtype", ""))
        return "value", id(value)  # by identity, as Pyro keys other objects
    return "value", value


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
        self.stale: str | None = None
        self.sentinel = Sentinel()
        self.as_captured = codegen.as_captured
        self._pending = pending
        self._store = pyro.get_param_store()
        self._eager = patch.unwrap(SVI.step)
        self._eager_loss = eager_loss
        self._inputs = list(captured.example_inputs)
        self._views = [v.numpy() for v in captured.scalar_vectors]
        self._loss = captured.loss
        self._save_rng = captured.random and captured.guards > 0
        self._nan_site = captured.nan_warning
        self._bound = (svi.model, svi.guide, svi.loss, svi.optim)
        untouched = [captured.params[i][1] for i in captured.untouched]
        self._untouched = [(p, p.grad is None) for p in untouched]
        inputs = captured.example_inputs
        # the layout each input had at capture: inductor's generated code relies on it
        self._layouts = [layout(t) for t in inputs]
        self._updates = [(captured.params[u.param][1], u.rule, u.state_inputs, self._views[u.scalar_vector],
                          u.offset) for u in captured.updates]
        self._param_layouts = [(name, tensor, self._layouts[i])
                               for i, (name, tensor) in enumerate(captured.params)]
        self._grads = [(tensor, tensor.grad, _version(tensor.grad)) for _, tensor in captured.params]
        self._grads_hold = _grads_check(self._grads)
        first = captured.first_arg_input
        self._args = [(position, first + k, self._layouts[first + k])
                      for k, position in enumerate(captured.arg_positions)]
        self._keywords = [(key, slot, self._layouts[slot]) for key, slot in captured.keyword_inputs]
        self._outside = [(source, _getter(source), slot, self._layouts[slot])
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
        self._bound_now = _binder(self)
        self._same_call = _call_check(self)
        self._direct_due = True  # inductor's kernels are called directly after their first call

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
            self._run = compat.direct_call(run, self._written) or run
        return loss

    def express(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> float | None:
        """One step the short way, once the step is settled (:attr:`settled`): its float loss, or
        None, having changed nothing, when :meth:`run` must take this call (a guard that fails,
        another signature, the sentinel's check due, an in-graph guard that failed)."""
        if not (self._same_call is not None and self.world.holds() and self._same_call(args, kwargs)
                and self._bound_now(args, kwargs) and self.sentinel.unchecked()):
            return None
        loss = self._graph_step(self._run, args, kwargs, False)
        return loss if type(loss) is float else None

    @property
    def settled(self) -> bool:
        """Whether the step runs the way it will from now on (its backend built and switched to, its
        graph called directly): :meth:`express` may run it."""
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
        checked = time.perf_counter() if check else 0.0
        grad = self._grad_mode()
        self._set_grad(False)
        try:
            values = run(*inputs)[0].tolist()
        finally:
            self._set_grad(grad)
        if values[-1] != 1.0:  # a guard failed: the graph wrote nothing back
            if rng is not None:
                _set_rng_state(rng)
            self.guard_failures += 1
            return Declined("a value the step reads changed from the one it was compiled for", transient=True)
        loss = self._loss(values)
        if eager is not None:
            declined = self._compare(loss, values, eager, rng)
            self.sentinel.seconds += eager[3] + time.perf_counter() - checked
            if declined is not None:
                return declined
        for rule, stepped in self._after:
            rule.after_step(rule.state() if stepped else None)
        self.steps += 1
        if loss != loss:  # pyro/infer/*_elbo.py: warn_if_nan(loss, "loss")
            warnings.warn_explicit("Encountered NaN: loss", UserWarning, *self._nan_site)
        return loss

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
        self._grads, self._grads_hold = fresh, _grads_check(fresh)
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
        scale = math.fsum(abs(v) for v in values[:-1])
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
    of the generated binding (:func:`_binder`) one by one, run when it fails, to say which."""
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


def _binder(step: CompiledStep) -> Callable[[tuple[Any, ...], dict[str, Any]], bool]:
    """One function of a call's arguments that binds the graph's inputs as
    :meth:`CompiledStep._bind` does and returns True where every check of ``_bind`` holds; else
    False, the inputs half bound, for ``_bind`` to run and say which failed. It checks the same
    things or more (identity where ``_bind`` compares; a tensor's class, device and
    ``requires_grad`` besides its layout), as straight-line code over bound constants, every
    tensor's layout in one call where torch has it (:func:`~..compat.capture.tensor_check`):
    ``_bind``'s loops, unpacking and lookups were most of the binding's time (docs/benchmarks.md,
    The step around the graph, has what is left).
    """
    constants = Constants()
    bind = constants.bind
    checked: list[tuple[str, Any, tuple[Any, ...]]] = []  # (name in the code, example, its layout)

    def holds(test: str) -> None:
        lines.append(f"        if not ({test}): return False")

    def take(expression: str, slot: int, expected: tuple[Any, ...]) -> None:
        name = f"v{len(checked)}"
        lines.extend([f"        {name} = {expression}", f"        {inputs}[{slot}] = {name}"])
        checked.append((name, step.captured.example_inputs[slot], expected))

    svi, inputs = bind(step.svi), bind(step._inputs)
    lines = [f"        S = {svi}"]
    holds(" and ".join(f"S.{attr} is {bind(obj)}"
                       for attr, obj in zip(("model", "guide", "loss", "optim"), step._bound, strict=True)))
    lines.append(f"        p = {bind(compat.store_tensors)}({bind(step._store)})")
    for name, tensor, expected in step._param_layouts:
        holds(f"p.get({bind(name)}) is {bind(tensor)}")
        checked.append((bind(tensor), tensor, expected))
    lines.append("        objs = S.optim.optim_objs")
    for param, rule, positions, view, offset in step._updates:
        r, t = bind(rule), bind(param)
        holds(f"objs.get({t}) is {bind(rule.owner)} and {rule.unchanged_test(bind)}")
        lines.append(f"        st = {r}.optimizer.state.get({t})")
        for key, position in zip(rule.state_keys, positions, strict=True):
            take(f"st[{bind(key)}]", position, step._layouts[position])
        lines.extend(f"        {line}" for line in rule.scalar_lines("st", bind(view), offset, bind))
    for param, no_grad in step._untouched:
        holds(f"{bind(param)}.grad is {'' if no_grad else 'not '}None")
    holds(f"{bind(step)}._grads_hold()")
    for position, slot, expected in step._args:
        take(f"args[{position}]", slot, expected)
    for key, slot, expected in step._keywords:
        take(f"kwargs[{bind(key)}]", slot, expected)
    for _, fetch, slot, expected in step._outside:
        take(f"{bind(fetch)}()", slot, expected)
    _check_layouts(checked, holds, bind, outside=len(checked) - len(step._outside))
    source = "\n".join(["def bound(args, kwargs):", "    try:", *lines, "    except Exception:",
                        "        return False", "    return True"])
    namespace = constants.namespace
    exec(compile(source, "<pyro_jitmagic binding>", "exec"), namespace)  # our own code over bound constants
    return namespace["bound"]


#: The values a call may pass beside its tensors for :meth:`CompiledStep.express` to run it: its
#: check compares them by type and value (others run the long way, looked up by their key).
_PLAIN_VALUES = (int, float, bool, str, type(None))


def _call_check(step: CompiledStep) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    """:func:`signature_check` of ``step``'s key, less the tensors its binding checks."""
    return signature_check(step.key, bound=frozenset(position for position, _, _ in step._args),
                           taken=frozenset(key for key, _, _ in step._keywords))


def signature_check(key: Any, bound: frozenset[int] = frozenset(), taken: frozenset[str] = frozenset()
                    ) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    """One function of a call's arguments: True where :func:`step_key` would find ``key`` for the
    call, as straight-line checks over bound constants: the number of arguments, the keywords'
    names, each tensor's class and layout, and the plain values (ints, floats, strings) a graph
    holds as constants, without building the key's tuples on every step (the climb's eager short
    way checks every step's signature: docs/real-models.md, What the climb adds to a short cell).
    The tensors of positions ``bound``
    and keywords ``taken`` are left out (a compiled step's binding checks them). None where the
    key holds other values (the caller then reads the key)."""
    # (made once a signature: the climb asks again after every long-way step; by the values' types
    # too, as keys that hold 3 and 3.0 are equal and the check tells them apart)
    try:
        _, keywords, described = key
        types = (tuple(type(kind[1]) for kind in described if isinstance(kind, tuple) and len(kind) == 2),
                 tuple(type(value) for _, value in keywords))
        return _signature_check(key, types, bound, taken)
    except (TypeError, ValueError):  # (a key of Pyro's own for values it could not hash)
        return None


@functools.lru_cache(maxsize=256)
def _signature_check(key: Any, types: Any, bound: frozenset[int], taken: frozenset[str]
                     ) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    import torch

    constants = Constants()
    bind = constants.bind
    tests: list[str] = []

    def plain(expression: str, value: Any) -> bool:
        if type(value) not in _PLAIN_VALUES:
            return False
        tests.append(f"type({expression}) is {bind(type(value))} and {expression} == {bind(value)}")
        return True

    def tensor(expression: str, expected: tuple[Any, ...]) -> None:
        tests.append(f"isinstance({expression}, {bind(_tensor_class())})")
        tests.append(_layout_test(expression, expected, bind))

    count, keywords, described = key
    tests.append(f"len(args) == {int(count)}")
    for position, kind in enumerate(described):
        if position in bound:
            continue
        if isinstance(kind, tuple) and len(kind) == 4 and isinstance(kind[0], torch.Size):
            tensor(f"args[{position}]", kind)
        elif not (isinstance(kind, tuple) and len(kind) == 2 and kind[0] == "value"
                  and plain(f"args[{position}]", kind[1])):
            return None
    tests.append(f"len(kwargs) == {len(keywords)}")
    try:
        for name, value in keywords:
            is_tensor = isinstance(value, tuple) and len(value) == 5 and value[0] == "tensor"
            if not isinstance(name, str):
                return None
            if is_tensor:
                if name not in taken:
                    tensor(f"kwargs.get({bind(name)})", value[1:])
            elif not plain(f"kwargs.get({bind(name)})", value):
                return None
    except (TypeError, ValueError):  # (a key of Pyro's own for values it could not hash)
        return None
    return eval(f"lambda args, kwargs: {' and '.join(tests)}", constants.namespace)  # our own expression


def _check_layouts(checked: list[tuple[str, Any, tuple[Any, ...]]], holds: Callable[[str], None],
                   bind: Callable[[Any], str], outside: int) -> None:
    """The tests that the tensors ``checked`` (those from ``outside`` on: fetched from globals, maybe
    not tensors) have the layouts ``_bind`` expects: one call of torch's check made from examples of
    exactly those layouts, else one test each."""
    examples = [example for _, example, _ in checked]
    check = None
    if all(isinstance(e, _tensor_class()) and layout(e) == expected for _, e, expected in checked):
        check = compat.tensor_check(examples)
    if check is not None:
        holds(f"{bind(check)}({', '.join(name for name, _, _ in checked)})")
        return
    for i, (name, _, expected) in enumerate(checked):
        if i >= outside:
            holds(f"isinstance({name}, {bind(_tensor_class())})")
        holds(_layout_test(name, expected, bind))


def _layout_test(name: str, expected: tuple[Any, ...], bind: Callable[[Any], str]) -> str:
    """An expression: the tensor ``name`` has the shape, dtype and strides of ``expected`` (its device
    too, where the layout expected has one; ``_bind`` checks the device of keywords and globals)."""
    shape, dtype, stride, device = expected
    return (f"{name}.shape == {bind(shape)} and {name}.dtype is {bind(dtype)} "
            f"and {name}.stride() == {bind(stride)} and {name}.device == {bind(device)}")


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


def _grads_check(grads: list[tuple[Any, Any, int]]) -> Callable[[], bool]:
    """One function that says whether every param's ``.grad`` is the tensor it held when last looked
    at, unchanged (a backward() changes it in place, or replaces it)."""
    constants: dict[str, Any] = {}
    checks = []
    for i, (tensor, grad, version) in enumerate(grads):
        constants[f"P{i}"], constants[f"G{i}"] = tensor, grad
        checks.append(f"P{i}.grad is G{i}" if grad is None
                      else f"(P{i}.grad is G{i} and G{i}.{jit_compat.VERSION_ATTR} == {version})")
    return eval(f"lambda: {' and '.join(checks) or 'True'}", constants)  # our own expression


def _raised(eager: Any) -> str:
    if not isinstance(eager, Exception):
        return ""
    first = str(eager).splitlines()[0] if str(eager) else ""
    return f"{type(eager).__name__}: {first}" if first else type(eager).__name__


def _getter(source: Any) -> Callable[[], Any]:
    """A fast function that fetches ``source``'s value (one expression over bound constants)."""
    constants = Constants()
    expression = source.expression(constants.bind)
    return eval(f"lambda: {expression}", constants.namespace)  # our own expression over bound constants


def _written_inputs(graph: Any) -> list[int]:
    """Which inputs the graph writes in place (put back when the sentinel undoes a call)."""
    import torch

    placeholders = [n for n in graph.graph.nodes if n.op == "placeholder"]
    index = {node: i for i, node in enumerate(placeholders)}
    written = set()
    for node in graph.graph.nodes:
        schema = compat.aten_op(node.target) if node.op == "call_function" else None
        if schema is None or not schema.is_mutable:
            continue
        for argument, value in zip(schema.arguments, node.args, strict=False):
            if argument.alias_info is not None and argument.alias_info.is_write \
                    and isinstance(value, torch.fx.Node) and value in index:
                written.add(index[value])
    return sorted(written)
