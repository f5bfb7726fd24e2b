"""A compiled SVI step's work around its graph, written out as generated code.

A warm compiled step's graph runs in a few microseconds, and the work around it on every call (the
world's guards, the call's signature, binding the live tensors, grad mode, the graph's call, the
float loss) cost more than the graph itself while it was methods, loops and lookups
(docs/benchmarks.md, The step around the graph). So that work is written out once per compiled step
as straight-line code over bound constants (:class:`~..guards.checks.Constants`):

- :func:`binder`: one function that binds a call's inputs and says whether every check of the
  long way's binding (``step._bind``) holds;
- :func:`short_way`: one function that runs a whole settled step, checks and binding included.

Both check what the long way checks, or more, and decline (False, None) having changed nothing
observable where the long way must take the call, to say what failed, decline or compile again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..compat import capture as compat
from ..compat import jit as jit_compat
from ..guards.checks import Constants
from .keys import layout, layout_test, signature_check, tensor_class

#: ``short_way(args, kwargs)``: a step's float loss, or None where the long way must run the call.
ShortWay = Callable[[tuple[Any, ...], dict[str, Any]], "float | None"]


class _Source:
    """Lines of a generated function's body over bound constants; a test that does not hold returns
    ``fail`` from the function."""

    def __init__(self, fail: str) -> None:
        self.constants = Constants()
        self.bind = self.constants.bind
        self.fail = fail
        self.lines: list[str] = []
        #: the tensors taken so far: (name in the code, an example of the layout, the layout expected)
        self.checked: list[tuple[str, Any, tuple[Any, ...]]] = []

    def line(self, text: str) -> None:
        self.lines.append(text)

    def holds(self, test: str) -> None:
        self.lines.append(f"if not ({test}): return {self.fail}")

    def function(self, name: str, head: list[str], tail: list[str], label: str) -> Any:
        """``def name(args, kwargs)`` of ``head``, then this body guarded (an exception in a check
        returns ``fail``), then ``tail``, compiled over the constants."""
        body = ["    try:", *(f"        {line}" for line in self.lines), "    except Exception:",
                f"        return {self.fail}"]
        source = "\n".join([f"def {name}(args, kwargs):", *(f"    {line}" for line in head), *body,
                            *(f"    {line}" for line in tail)])
        namespace = self.constants.namespace
        exec(compile(source, label, "exec"), namespace)  # our own code over bound constants
        return namespace[name]


def binder(step: Any) -> Callable[[tuple[Any, ...], dict[str, Any]], bool]:
    """One function of a call's arguments that binds ``step``'s graph inputs as its ``_bind`` does and
    returns True where every check of ``_bind`` holds; else False, the inputs half bound, for
    ``_bind`` to run and say which failed. It checks the same things or more (identity where
    ``_bind`` compares; a tensor's class, device and ``requires_grad`` besides its layout)."""
    source = _Source("False")
    _binding(step, source)
    return source.function("bound", [], ["return True"], "<pyro_jitmagic binding>")


def short_way(step: Any, call_site: Any = None) -> ShortWay:
    """One function that runs a settled step (:attr:`~.step.CompiledStep.settled`) as its ``run``
    would, with the sentinel's check not due: the call site's check (a
    :class:`~..guards.checks.CallSite`, where given), the world's guards, the call's signature, the
    binding (:func:`binder`'s lines, inline), then the graph's call with grad mode off (where it
    matters: :func:`~..compat.capture.pooled`), the in-graph
    guards' flag, eager's warnings from Pyro's NaN and inf checks, the float loss, torch's
    bookkeeping after a step and the NaN warning. None, having changed nothing, where ``run`` must
    take the call: a check fails, the sentinel's check falls due, or an in-graph guard failed (the
    random state is then put back)."""
    source = _Source("None")
    bind = source.bind
    same_call = call_check(step)
    assert same_call is not None, "a settled step has a signature check"
    if call_site is not None:
        source.holds(call_site.test(bind))
    source.holds(f"{bind(step.world.holds)}() and {bind(same_call)}(args, kwargs)")
    _binding(step, source)
    source.holds(f"{bind(step.sentinel.unchecked)}()")
    this, set_grad = bind(step), bind(step._set_grad)
    call = [f"out = {bind(step._run)}(*{bind(step._inputs)})", "v = out[0].tolist()"]
    if not getattr(step._run, "grad_mode_free", False):  # (else the same with grad mode on: 0.3 us)
        call = [f"grad = {bind(step._grad_mode)}()", f"{set_grad}(False)", "try:",
                *(f"    {c}" for c in call), "finally:", f"    {set_grad}(grad)"]
    tail = [f"rng = {bind(step._rng_state)}()" if step._save_rng else "rng = None",
            *call,
            "if v[-1] != 1.0:",
            f"    {this}.failed_check = (args, kwargs, {this}._guard_failed(rng))",
            "    return None",
            *([f"if v[-2] != 1.0: {this}._warn(out[1])"] if step._flags > 1 else []),
            f"loss = {step._loss.source(bind)}"]
    for rule, stepped in step._after:
        tail.append(f"{bind(rule)}.after_step({f'{bind(rule)}.state()' if stepped else 'None'})")
    tail += [f"{this}.steps += 1", "if loss != loss:", f"    {this}._warn_nan()", "return loss"]
    return source.function("short_way", [], tail, "<pyro_jitmagic short way>")


def _binding(step: Any, source: _Source) -> None:
    """The binding's lines: the SVI's parts, the param store's tensors, the optimizers and their
    state, Adam's per-step numbers, the arguments and the tensors read from outside, each bound
    into the graph's inputs and checked; every tensor's layout in one call where torch has it
    (:func:`~..compat.capture.tensor_check`)."""
    bind, holds, line = source.bind, source.holds, source.line
    inputs = bind(step._inputs)

    def take(expression: str, slot: int, expected: tuple[Any, ...]) -> None:
        name = f"v{len(source.checked)}"
        line(f"{name} = {expression}")
        line(f"{inputs}[{slot}] = {name}")
        source.checked.append((name, step.captured.example_inputs[slot], expected))

    line(f"S = {bind(step.svi)}")
    holds(" and ".join(f"S.{attr} is {bind(obj)}"
                       for attr, obj in zip(("model", "guide", "loss", "optim"), step._bound, strict=True)))
    line(f"p = {bind(compat.store_tensors)}({bind(step._store)})")
    for name, tensor, expected in step._param_layouts:
        holds(f"p.get({bind(name)}) is {bind(tensor)}")
        source.checked.append((bind(tensor), tensor, expected))
    line("objs = S.optim.optim_objs")
    _optimizers(step, source)
    for param, rule, positions, view, offset in step._updates:
        holds(rule.unchanged_test(bind))
        if len(rule.optimizer.state) == 1:
            # (Pyro's optimizer of one param: its one entry, found with no tensor's hash, a Python
            # call; another entry makes the unpacking raise, and the long way take the call)
            line(f"(k, st), = {bind(rule.optimizer)}.state.items()")
            holds(f"k is {bind(param)}")
        else:
            line(f"st = {bind(rule.optimizer)}.state.get({bind(param)})")
        for key, position in zip(rule.state_keys, positions, strict=True):
            take(f"st[{bind(key)}]", position, step._layouts[position])
        for scalar in rule.scalar_lines("st", bind(view), offset, bind):
            line(scalar)
    for param, no_grad in step._untouched:
        holds(f"{bind(param)}.grad is {'' if no_grad else 'not '}None")
    holds(f"{bind(step)}._grads_hold()")
    for position, slot, expected in step._args:
        take(f"args[{position}]", slot, expected)
    for key, slot, expected in step._keywords:
        take(f"kwargs[{bind(key)}]", slot, expected)
    for _, fetch, slot, expected in step._outside:
        take(f"{bind(fetch)}()", slot, expected)
    _check_layouts(source, outside=len(source.checked) - len(step._outside))


def _optimizers(step: Any, source: _Source) -> None:
    """The test that each stepped param's optimizer is the one captured: Pyro's dict of them compared
    whole with a copy, which hashes no tensor (a tensor's hash is a Python call), else param by
    param (another param's optimizer came or went)."""
    bind = source.bind
    one_by_one = " and ".join(f"objs.get({bind(param)}) is {bind(rule.owner)}"
                              for param, rule, _, _, _ in step._updates)
    if not one_by_one:
        return
    # (a dict's == finds each key by its stored hash and identity, and compares the optimizers,
    # which have no == of their own, by identity)
    copy = dict(step.svi.optim.optim_objs)
    if all(copy.get(param) is rule.owner for param, rule, _, _, _ in step._updates):
        source.holds(f"objs == {bind(copy)} or ({one_by_one})")
    else:
        source.holds(one_by_one)


def call_check(step: Any) -> Callable[[tuple[Any, ...], dict[str, Any]], bool] | None:
    """:func:`~.keys.signature_check` of ``step``'s key, less the tensors its binding checks."""
    return signature_check(step.key, bound=frozenset(position for position, _, _ in step._args),
                           taken=frozenset(key for key, _, _ in step._keywords))


def _check_layouts(source: _Source, outside: int) -> None:
    """The tests that the tensors taken (those from ``outside`` on: fetched from globals, maybe not
    tensors) have the layouts the graph expects: one call of torch's check made from examples of
    exactly those layouts, else one test each."""
    checked, bind = source.checked, source.bind
    examples = [example for _, example, _ in checked]
    check = None
    if all(isinstance(e, tensor_class()) and layout(e) == expected for _, e, expected in checked):
        check = compat.tensor_check(examples)
    if check is not None:
        source.holds(f"{bind(check)}({', '.join(name for name, _, _ in checked)})")
        return
    for i, (name, _, expected) in enumerate(checked):
        if i >= outside:
            source.holds(f"isinstance({name}, {bind(tensor_class())})")
        source.holds(layout_test(name, expected, bind))


def grads_check(grads: list[tuple[Any, Any, int]]) -> Callable[[], bool]:
    """One function that says whether every param's ``.grad`` is the tensor it held when last looked
    at, unchanged (a backward() changes it in place, or replaces it)."""
    constants: dict[str, Any] = {}
    checks = []
    for i, (tensor, grad, version) in enumerate(grads):
        constants[f"P{i}"], constants[f"G{i}"] = tensor, grad
        checks.append(f"P{i}.grad is G{i}" if grad is None
                      else f"(P{i}.grad is G{i} and G{i}.{jit_compat.VERSION_ATTR} == {version})")
    return eval(f"lambda: {' and '.join(checks) or 'True'}", constants)  # our own expression


def getter(source: Any) -> Callable[[], Any]:
    """A fast function that fetches ``source``'s value (one expression over bound constants)."""
    constants = Constants()
    expression = source.expression(constants.bind)
    return eval(f"lambda: {expression}", constants.namespace)  # our own expression over bound constants
