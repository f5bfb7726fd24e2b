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
The short way, made again whenever what it looked at changes, also reads no dict again that is
unchanged since it was made (its version: :func:`~..compat.capture.dict_version`), and checks every
input's layout in one call over the inputs list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
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
        self._indent = ""

    def line(self, text: str) -> None:
        self.lines.append(self._indent + text)

    def holds(self, test: str) -> None:
        self.line(f"if not ({test}): return {self.fail}")

    def take(self, step: Any, expression: str, slot: int, expected: tuple[Any, ...]) -> None:
        """Bind ``expression``'s value into ``step``'s graph input ``slot``, to be checked for the
        layout ``expected``."""
        name = f"v{len(self.checked)}"
        self.line(f"{name} = {expression}")
        self.line(f"{self.bind(step._inputs)}[{slot}] = {name}")
        self.checked.append((name, step.captured.example_inputs[slot], expected))

    @contextmanager
    def block(self, header: str) -> Iterator[None]:
        """``header`` (an ``if ...:`` or ``else:``), then the lines written inside, indented."""
        self.line(header)
        outer, self._indent = self._indent, self._indent + "    "
        try:
            yield
        finally:
            self._indent = outer

    def adopt(self, constants: dict[str, Any]) -> None:
        """Other generated code's constants, for its expressions inline here (their names' prefix is
        not this code's)."""
        namespace = self.constants.namespace
        assert not any(name in namespace for name in constants), "constants of one prefix twice"
        namespace.update(constants)

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
    unchanged = _unchanged_from_now(bind)
    world = step.world
    source.adopt(world.constants)
    never: Unchanged = lambda d, reached=None: None  # noqa: E731  (no versions: every check, every call)
    source.holds(world.inline(unchanged or never))
    source.adopt(same_call.constants)  # type: ignore[attr-defined]
    source.holds(same_call.expression)  # type: ignore[attr-defined]
    _binding(step, source, short=unchanged or never)
    # (the sentinel's count of a call that runs unchecked: where this one is due a check, nothing is
    # counted, and the long way calls its due())
    sentinel = bind(step.sentinel)
    source.line(f"calls = {sentinel}.calls + 1")
    source.holds(f"calls < {sentinel}.next_check")
    source.line(f"{sentinel}.calls = calls")
    this, set_grad = bind(step), bind(step._set_grad)
    returns = getattr(step._run, "returns", None)
    # (the same held tensor every call, where the graph's outputs are held over: its NumPy view's
    # tolist skips a tensor's dispatch)
    values = f"{bind(returns[0].detach().numpy())}.tolist()" if returns is not None else "out[0].tolist()"
    call = [f"out = {bind(step._run)}(*{bind(step._inputs)})", f"v = {values}"]
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


def _binding(step: Any, source: _Source, short: Unchanged | None = None) -> None:
    """The binding's lines: the SVI's parts, the param store's tensors, the optimizers and their
    state, Adam's per-step numbers, the arguments and the tensors read from outside, each bound
    into the graph's inputs and checked; every tensor's layout in one call where torch has it
    (:func:`~..compat.capture.tensor_check`).

    ``short``, for the short way (made again whenever what it looked at changes, where the binder
    lasts the step's life): ``short(d)`` is an expression that holds while dict ``d`` is unchanged
    from now, or None. Where it has one, a dict the binding reads (the SVI's attributes, the param
    store, an optimizer's param group and state) that is unchanged from now is not read again: it
    holds what it held when every check held, which the graph's inputs hold still. Each param's
    ``.grad`` is checked inline, against the tensors last looked at."""
    bind, holds = source.bind, source.holds
    # (every input's layout in one call over the inputs list: the short way may then take a
    # tensor from a dict unchanged without naming it)
    whole = _whole_check(step) if short is not None else None
    unchanged = short if whole is not None else None
    _svi_and_store(step, source, unchanged)
    _optimizers(step, source)
    for update in step._updates:
        _update(step, source, update, unchanged)
    for param, no_grad in step._untouched:
        holds(f"{bind(param)}.grad is {'' if no_grad else 'not '}None")
    holds(grads_test(step._grads, bind) if short is not None else f"{bind(step)}._grads_hold()")
    for position, slot, expected in step._args:
        source.take(step, f"args[{position}]", slot, expected)
    for key, slot, expected in step._keywords:
        source.take(step, f"kwargs[{bind(key)}]", slot, expected)
    for _, fetch, slot, expected in step._outside:
        source.take(step, f"{bind(fetch)}()", slot, expected)
    if whole is not None:
        holds(f"{bind(whole)}(*{bind(step._inputs)})")
    else:
        _check_layouts(source, outside=len(source.checked) - len(step._outside))


def _svi_and_store(step: Any, source: _Source, unchanged: Unchanged | None) -> None:
    """The lines that check the SVI's parts and the param store's tensors (``S``, ``p``, ``objs``)."""
    bind, holds, line = source.bind, source.holds, source.line
    svi, parts = step.svi, ("model", "guide", "loss", "optim")
    line(f"S = {bind(svi)}")
    same = " and ".join(f"S.{attr} is {bind(obj)}" for attr, obj in zip(parts, step._bound, strict=True))
    now = all(getattr(svi, attr) is obj for attr, obj in zip(parts, step._bound, strict=True))
    attributes = vars(svi) if now and hasattr(svi, "__dict__") else None
    holds(_or_unchanged(unchanged, attributes, "S.__dict__", same))
    line(f"p = {bind(compat.store_tensors)}({bind(step._store)})")
    store = compat.store_tensors(step._store)
    params = " and ".join(f"p.get({bind(name)}) is {bind(tensor)}" for name, tensor, _ in step._param_layouts)
    if params:
        now = all(store.get(name) is tensor for name, tensor, _ in step._param_layouts)
        holds(_or_unchanged(unchanged, store if now else None, "p", params))
    for _, tensor, expected in step._param_layouts:
        source.checked.append((bind(tensor), tensor, expected))
    line("objs = S.optim.optim_objs")


def _update(step: Any, source: _Source, update: Any, unchanged: Unchanged | None) -> None:
    """One param's optimizer: its hyperparameters checked, its state tensors bound (``st``), its
    per-step numbers written."""
    param, rule, positions, view, offset = update
    bind, holds, line = source.bind, source.holds, source.line
    optimizer = bind(rule.optimizer)
    numbers = rule.scalar_lines("st", bind(view), offset, bind)
    group = _group_now(rule, view, offset) if unchanged is not None and rule.numbers_from_group else None
    skip = unchanged(group) if unchanged is not None and group is not None else None
    if skip:
        # (the group unchanged, so are its hyperparameters and the numbers written from it)
        holds(f"{optimizer}.param_groups[0] is {bind(group)}")
        with source.block(f"if not ({skip}):"):
            holds(rule.unchanged_test(bind))
            for number in numbers:
                line(number)
        numbers = []
    else:
        holds(rule.unchanged_test(bind, unchanged))

    def fetch() -> None:
        if len(rule.optimizer.state) == 1:
            # (Pyro's optimizer of one param: its one entry, found with no tensor's hash, a Python
            # call; another entry makes the unpacking raise, and the long way take the call)
            line(f"(k, st), = {optimizer}.state.items()")
            holds(f"k is {bind(param)}")
        else:
            line(f"st = {optimizer}.state.get({bind(param)})")
        for key, position in zip(rule.state_keys, positions, strict=True):
            source.take(step, f"st[{bind(key)}]", position, step._layouts[position])

    state = _state_now(step, rule, param, positions) if unchanged is not None else None
    states = unchanged(rule.optimizer.state, f"{optimizer}.state") if unchanged and state else None
    this = unchanged(state) if unchanged and state else None
    if states and this:
        # (the optimizer's dict of states unchanged, it holds the same dict for the param)
        with source.block(f"if {states} and {this}:"):
            line(f"st = {bind(state)}")
        with source.block("else:"):
            fetch()
    else:
        fetch()
    for number in numbers:
        line(number)


#: ``unchanged(d, reached=None)``: an expression that holds while dict ``d`` is unchanged from now,
#: or None; ``reached``, where given, the expression that reaches the dict afresh on every call (the
#: version of another dict found there is another: the test fails), else ``d`` itself, bound
Unchanged = Callable[..., "str | None"]


def _unchanged_from_now(bind: Callable[[Any], str]) -> Unchanged | None:
    """:data:`Unchanged` over a dict's version (:func:`~..compat.capture.dict_version`); None where
    there are no versions."""
    version = compat.dict_version()
    if version is None:
        return None

    def unchanged(d: dict[str, Any], reached: str | None = None) -> str | None:
        if not isinstance(d, dict):
            return None
        return f"{bind(version)}({reached or bind(d)}) == {version(d)}"

    return unchanged


def _or_unchanged(unchanged: Unchanged | None, d: dict[str, Any] | None, reached: str, test: str) -> str:
    """``test``, skipped while the dict ``reached`` finds, ``d`` now (None: none to skip by), is
    unchanged from now."""
    skip = unchanged(d, reached) if unchanged is not None and d is not None else None
    return f"{skip} or ({test})" if skip else test


def _group_now(rule: Any, view: Any, offset: int) -> dict[str, Any] | None:
    """``rule``'s param group, where nothing in it changed since capture and its per-step numbers
    are written now (then, while it is unchanged, they are still)."""
    if rule.unchanged() is not None or rule.optimizer.param_groups[0] is not rule.group:
        return None
    numbers = rule.scalars(None)
    return rule.group if list(view[offset:offset + len(numbers)]) == numbers else None


def _state_now(step: Any, rule: Any, param: Any, positions: Any) -> dict[str, Any] | None:
    """``param``'s optimizer state, where the graph's inputs hold its tensors now (then, while
    neither it nor the optimizer's dict of states changes, they hold them still)."""
    state = rule.optimizer.state.get(param)
    if not isinstance(state, dict):
        return None
    inputs, keys = step._inputs, rule.state_keys
    held = all(inputs[slot] is state.get(key) for key, slot in zip(keys, positions, strict=True))
    return state if held else None


def _whole_check(step: Any) -> Any:
    """One call of torch's check of every graph input's layout, each as the graph expects it, or None
    (an input is not a tensor of its expected layout now, or torch has no such check)."""
    inputs = list(step._inputs)
    if not all(isinstance(t, tensor_class()) and layout(t) == expected
               for t, expected in zip(inputs, step._layouts, strict=True)):
        return None
    return compat.tensor_check(inputs)


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
    constants = Constants()
    return eval(f"lambda: {grads_test(grads, constants.bind)}", constants.namespace)  # our own expression


def grads_test(grads: list[tuple[Any, Any, int]], bind: Callable[[Any], str]) -> str:
    """:func:`grads_check`'s test, as one expression over constants named by ``bind``."""
    checks = []
    for tensor, grad, version in grads:
        param, now = bind(tensor), bind(grad)
        checks.append(f"{param}.grad is {now}" if grad is None
                      else f"({param}.grad is {now} and {now}.{jit_compat.VERSION_ATTR} == {version})")
    return " and ".join(checks) or "True"


def getter(source: Any) -> Callable[[], Any]:
    """A fast function that fetches ``source``'s value (one expression over bound constants)."""
    constants = Constants()
    expression = source.expression(constants.bind)
    return eval(f"lambda: {expression}", constants.namespace)  # our own expression over bound constants
