"""Capture one whole SVI step, ``(params, optimizer state, scalars, *args) -> loss terms``, as an aten graph.

``make_fx`` traces the step with the param store's own tensors, the optimizers' state tensors and
the step's tensor arguments as inputs, so every module, AutoGuide or ``pyro.param`` reads the very
tensor the graph takes. The graph computes the ELBO's surrogates (:mod:`.elbos`), their gradients
and each param's update (:mod:`.optim`), and writes the new values into its inputs. It returns the
numbers Pyro's float loss is computed from, and whether every guard held (:mod:`.reads`); if one
failed it writes the old values back, so the step can run eagerly instead. Tracing runs the model
for real, so the random state and the inputs' values are put back after it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from .. import patch
from ..compat import capture as compat
from ..guards import GuardBuilder, Guards, Source, World, outside_states, read_world, states_equal
from . import elbos, optim
from .errors import CannotCompile, NeedsEagerStep, Unguardable
from .reads import LossRecorder, ReadWatch, ValueRead, ValueReadPolicy
from .writes import WriteWatch, buffer_sources, written_roots


@dataclass
class Update:
    """One param's optimizer step inside the graph."""

    param: int                    # index into CapturedStep.params
    rule: optim.ParamUpdate
    state_inputs: tuple[int, ...]  # input positions of its state tensors, in rule.state_keys order
    offset: int                    # where its per-step numbers start in CapturedStep.numbers


@dataclass
class CapturedStep:
    """A captured SVI step and what it takes to call it."""

    graph: Any                                 # torch.fx.GraphModule
    example_inputs: list[Any]
    params: list[tuple[str, Any]]              # (name, unconstrained tensor), the graph's first inputs
    updates: list[Update]
    untouched: list[int]                       # params in the trace that no update touches
    numbers: Any                               # float64 tensor of the optimizers' per-step numbers
                                               # (written through .numpy() each step), or None
    arg_positions: list[int]                   # which positional args are graph inputs
    first_arg_input: int
    loss: Any                                  # values -> eager's float loss
    guards: int                                # value reads the graph itself checks every step
    warnings: tuple[Any, ...]                  # eager's warnings: Pyro's NaN and inf checks, as flags
    world: Guards                              # what it assumed of the world outside its inputs
    keyword_inputs: list[tuple[str, int]]      # (keyword, input position) of tensor keywords
    world_inputs: list[tuple[Any, int]]        # (Source, input position) of tensors read from outside
    state_inputs: int                          # inputs before this one are written by the step
    reads: tuple[ValueRead, ...]
    dice_masks: int
    random: bool                               # does the graph draw random numbers
    baked_tensors: tuple[str, ...]
    capture_seconds: float
    nan_warning: tuple[str, int] = ("", 0)     # where eager's warn_if_nan(loss) points
    rules: dict[int, optim.ParamUpdate] = field(default_factory=dict)  # every param's optimizer


def _cold_reason(svi: Any, elbo: Any) -> str | None:
    """What the first eager step still has to create before a capture, if anything (cheap checks)."""
    from pyro.infer import TraceEnum_ELBO
    from pyro.infer.autoguide import AutoGuide, AutoGuideList

    guides = [svi.guide]
    while guides:
        guide = guides.pop()
        if isinstance(guide, AutoGuideList):
            guides.extend(guide)
        elif isinstance(guide, AutoGuide) and getattr(guide, "prototype_trace", True) is None:
            return f"{type(guide).__name__} builds its prototype on the first step"
    guesses = isinstance(elbo, TraceEnum_ELBO) or (elbo.vectorize_particles and elbo.num_particles > 1)
    if guesses and math.isinf(elbo.max_plate_nesting):
        return f"{type(elbo).__name__} guesses max_plate_nesting on the first step"
    if not svi.optim.optim_objs:
        return "the optimizer creates its torch optimizers on the first step"
    return None


def check_svi(svi: Any) -> tuple[Any, elbos.LossFn]:
    """(the ELBO, its loss function); CannotCompile unless this SVI's loss and optimizer are ones
    the capture writes."""
    from pyro.infer import SVI

    if type(svi) is not SVI:
        raise CannotCompile(f"{type(svi).__name__} is not pyro.infer.SVI")
    # SVI keeps the ELBO's bound methods (pyro/infer/svi.py): loss_and_grads is what step() calls
    elbo = getattr(svi.loss_and_grads, "__self__", svi.loss_and_grads)
    loss_fn = elbos.loss_function(elbo)
    if getattr(svi.loss_and_grads, "__func__", None) is not getattr(type(elbo), "loss_and_grads", None):
        raise CannotCompile("this SVI was given its own loss_and_grads")
    optim.check_pyro_optim(svi.optim)
    return elbo, loss_fn


def _discover(svi: Any, elbo: Any, loss_fn: elbos.LossFn, args: tuple[Any, ...],
              kwargs: dict[str, Any], world: World, writes: WriteWatch) -> list[Any]:
    """The params one step touches, as SVI.step finds them (an eager run, undone: what it wrote in
    place, ``writes`` keeps and has put back); Unguardable when the run drew from a random stream
    outside torch."""
    import torch
    from pyro import poutine

    rng, outside = torch.get_rng_state(), outside_states(world)
    patches = patch.PatchSet()
    try:
        _forbid_store_writes(patches)
        with poutine.block(), poutine.trace(param_only=True) as capture, torch.no_grad(), writes:
            loss_fn(elbo, svi.model, svi.guide, args, kwargs, LossRecorder())
    except CannotCompile:
        raise
    except Exception as exc:  # the model's own error (a validation error): eager's step raises it
        raise NeedsEagerStep(f"the step raised {type(exc).__name__}: eager's step raises it too") from exc
    finally:
        patches.restore()
        torch.set_rng_state(rng)
        writes.put_back()  # (a global or a BatchNorm's statistics: only eager's steps change them)
        drew = not states_equal(outside, outside_states(world))
        restore_outside_states(outside, world)
    if drew:
        raise Unguardable(_outside_draw_reason(world))
    found = {_unconstrained(site["value"]): name for name, site in capture.trace.nodes.items()}
    return sorted(((name, p) for p, name in found.items()), key=lambda item: item[0])


def _written_buffers(writes: WriteWatch, world: World) -> list[tuple[Source, Any]]:
    """The buffers of the model's and guide's modules that the step writes in place (a BatchNorm's
    running statistics), with where each is fetched from: inputs of the graph."""
    sources = buffer_sources(world.modules)
    return [(sources[id(t)], t) for t in writes.written if id(t) in sources]


def _unconstrained(value: Any) -> Any:
    """The store tensor behind a param site's value (pyro/params/param_store.py sets the weakref)."""
    return value.unconstrained()


def _nan_warning_site(elbo: Any) -> tuple[str, int]:
    """Where eager's ``warn_if_nan(loss, "loss")`` in ``loss_and_grads`` is (file, line)."""
    import inspect

    fn = type(elbo).loss_and_grads
    code = fn.__code__
    try:
        lines, first = inspect.getsourcelines(fn)
    except (OSError, TypeError):
        return code.co_filename, code.co_firstlineno
    for offset, line in enumerate(lines):
        if "warn_if_nan(" in line:
            return code.co_filename, first + offset
    return code.co_filename, code.co_firstlineno


def _outside_draw_reason(world: World) -> str:
    where = "; ".join(str(d) for d in world.draws) or "somewhere in the model or guide"
    return (f"the step draws random numbers outside torch ({where}): a compiled graph would repeat "
            "its first draws on every step; draw with torch (torch.randint, torch.randperm) to compile it")


def restore_outside_states(states: list[Any], world: World) -> None:
    """Put numpy's and Python's streams, and the generators ``world`` holds, back as they were."""
    import random
    import sys

    random.setstate(states[0])
    numpy = sys.modules.get("numpy")
    rest = states[1:]
    if numpy is not None:
        numpy.random.set_state(rest[0])
        rest = rest[1:]
    for generator, state in zip(world.generators, rest, strict=True):
        if hasattr(generator, "bit_generator"):
            generator.bit_generator.state = state
        elif hasattr(generator, "set_state"):
            generator.set_state(state)
        else:
            generator.setstate(state)


def _refuse_arrays(args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
    """A numpy array argument: the model turns it into a tensor, which a graph would hold as its first
    value; no tier can take it as an input."""
    import sys

    numpy = sys.modules.get("numpy")
    if numpy is None:
        return
    for where, value in [*((f"argument {i}", a) for i, a in enumerate(args)),
                         *((f"keyword '{k}'", v) for k, v in kwargs.items())]:
        if isinstance(value, numpy.ndarray):
            raise Unguardable(f"{where} is a numpy array, which a compiled graph would hold as its first "
                              "value; pass torch.as_tensor(x) to compile the step")


@dataclass
class _Inputs:
    """The graph's inputs in order: params, optimizer state tensors, scalars vectors, tensor args,
    tensor keywords, tensors read from outside the step (globals, closures)."""

    tensors: list[Any]
    rules: list[tuple[int, optim.ParamUpdate]]
    updates: list[Update]
    numbers: Any
    first_scalars: int
    arg_positions: list[int]
    first_arg: int
    keywords: list[tuple[str, int]] = field(default_factory=list)
    world: list[tuple[Any, int]] = field(default_factory=list)
    aliases: list[Any] = field(default_factory=list)  # reads of tensors that are inputs already
    written: list[int] = field(default_factory=list)  # inputs the model writes (a BatchNorm's statistics)


def _lay_out(svi: Any, params: list[tuple[str, Any]], args: tuple[Any, ...], kwargs: dict[str, Any],
             world: World, writes: WriteWatch) -> _Inputs:
    """Where each param, optimizer state tensor, per-step number, tensor argument, tensor read
    from outside and module buffer the step writes (``writes`` saw it) enters the graph."""
    import torch

    tensors: list[Any] = [p for _, p in params]
    rules = [(index, optim.plan(svi.optim, p, name)) for index, (name, p) in enumerate(params)]
    updates: list[Update] = []
    length = 0
    for index, rule in rules:
        state = rule.state()
        if state is None:
            continue  # never stepped: eager would not step it either unless it gets a gradient
        positions = []
        for key in rule.state_keys:
            positions.append(len(tensors))
            tensors.append(state[key])
        updates.append(Update(index, rule, tuple(positions), length))
        length += rule.n_scalars
    # the per-step numbers as Python holds them, doubles: each rule casts them where torch does
    numbers = torch.zeros(max(length, 1), dtype=torch.float64)
    for update in updates:
        values = update.rule.scalars(update.rule.state())
        numbers[update.offset:update.offset + len(values)] = torch.tensor(values, dtype=torch.float64)
    first_scalars = len(tensors)
    if updates:
        tensors.append(numbers)
    arg_positions = [i for i, a in enumerate(args) if isinstance(a, torch.Tensor)]
    first_arg = len(tensors)
    tensors.extend(args[i] for i in arg_positions)
    keywords = []
    for key, value in sorted(kwargs.items()):
        if isinstance(value, torch.Tensor):
            keywords.append((key, len(tensors)))
            tensors.append(value)
    taken = {id(t) for t in tensors}
    outside, aliases = [], []
    for read in world.tensors():
        if id(read.value) in taken:
            aliases.append(read)  # (the same tensor as an input: guarded to stay the same object)
            continue
        if read.value.requires_grad:
            raise CannotCompile(f"the loss reads {read.describe()}, a tensor that requires grad and is no "
                                "param: eager's backward() fills its .grad, which a whole step does not")
        taken.add(id(read.value))
        outside.append((read.source, len(tensors)))
        tensors.append(read.value)
    for source, buffer in _written_buffers(writes, world):
        if id(buffer) not in taken:  # (fetched afresh from its module on each step, as a global is)
            taken.add(id(buffer))
            outside.append((source, len(tensors)))
            tensors.append(buffer)
    # (a buffer, a global counter, an argument the model changes in place)
    slots = {id(t): i for i, t in enumerate(tensors)}
    written = [slots[id(t)] for t in writes.written if id(t) in slots]
    return _Inputs(tensors, rules, updates, numbers if updates else None, first_scalars, arg_positions,
                   first_arg, keywords, outside, aliases, written)


def capture_svi_step(svi: Any, args: tuple[Any, ...], kwargs: dict[str, Any],
                     value_reads: ValueReadPolicy = "error", elbo: Any = None,
                     locate: Callable[[str, int], str] | None = None) -> CapturedStep:
    """Capture ``svi.step(*args, **kwargs)`` whole, computing ``elbo``'s loss (by default the SVI's
    own: the user's ELBO when the SVI runs on a companion of Pyro's JIT); ``locate`` names the
    user's lines. Raises CannotCompile, NeedsEagerStep or Unguardable."""
    start = time.perf_counter()
    own, _ = check_svi(svi)
    elbo = own if elbo is None else elbo
    loss_fn = elbos.loss_function(elbo)
    cold = _cold_reason(svi, elbo)
    if cold is not None:
        raise NeedsEagerStep(cold)
    _refuse_arrays(args, kwargs)
    world = read_world([svi.model, svi.guide], locate)
    writes = WriteWatch()
    try:
        return _capture(svi, elbo, loss_fn, args, kwargs, world, writes, value_reads, start)
    finally:
        writes.put_back()  # (what the trace wrote, outside the graph's inputs, too)


def _capture(svi: Any, elbo: Any, loss_fn: elbos.LossFn, args: tuple[Any, ...], kwargs: dict[str, Any],
             world: World, writes: WriteWatch, value_reads: ValueReadPolicy, start: float) -> CapturedStep:
    import pyro

    params = _discover(svi, elbo, loss_fn, args, kwargs, world, writes)
    if not params:
        raise CannotCompile("the step has no params to optimize")
    hooked = [name for name, p in params if compat.gradient_hooks(p)]
    if hooked:
        raise CannotCompile(f"the param '{hooked[0]}' has a gradient hook, which eager's backward() runs "
                            "on every step and a graph would run once")
    waiting = [name for name, p in params if p.grad is not None and bool(p.grad.any())]
    if waiting:
        raise NeedsEagerStep(f"a gradient is waiting in .grad of '{waiting[0]}' (a backward() before the "
                             "step), which eager's step adds to its own")
    layout = _lay_out(svi, params, args, kwargs, world, writes)
    recorder = LossRecorder()
    step = _WholeStep(svi, elbo, loss_fn, args, kwargs, params, layout, recorder, value_reads)
    store_keys = set(pyro.get_param_store().keys())
    graph = _trace(step, layout.tensors, recorder, world)
    if set(pyro.get_param_store().keys()) != store_keys:
        raise NeedsEagerStep("the step creates params on its first run")
    _plain_reductions(graph)
    simplify(graph)
    prune(graph)
    keep_draws(graph)
    _check_constants(graph)
    watch = step.watch
    # a param the step touches but whose optimizer never stepped it: eager does not step it either
    untouched = sorted(set(step.untouched))
    return CapturedStep(
        graph=graph, example_inputs=layout.tensors, params=params,
        updates=[u for u in layout.updates if u.param not in untouched], untouched=untouched,
        numbers=layout.numbers, arg_positions=layout.arg_positions,
        first_arg_input=layout.first_arg, loss=recorder.evaluator(step.loss), guards=len(watch.guards),
        warnings=tuple(warning for _, warning in watch.warnings),
        reads=tuple(watch.reads), dice_masks=watch.dice_masks, random=_draws_random(graph),
        baked_tensors=_baked(graph), capture_seconds=time.perf_counter() - start,
        nan_warning=_nan_warning_site(elbo), rules=dict(layout.rules),
        world=_world_guards(world, layout, params, elbo), keyword_inputs=layout.keywords,
        world_inputs=layout.world, state_inputs=layout.first_scalars)


def _world_guards(world: World, layout: _Inputs, params: list[tuple[str, Any]], elbo: Any) -> Guards:
    """What the step assumed outside its inputs: the world's values (its tensors are inputs), the
    modes it ran in, the ELBO's settings, which params require grad."""
    from ..compat.jit import COMPILED_ATTRS

    builder = GuardBuilder()
    builder.world(world, inputs=[id(layout.tensors[slot]) for _, slot in layout.world])
    for read in layout.aliases:
        fetch = read.source.expression(builder.bind)
        builder.add(read.describe(), f"(({fetch}) is {builder.bind(read.value)})", "the same tensor as an "
                    "input of the step", lambda: "another tensor")
    builder.modes()
    builder.settings(type(elbo).__name__, elbo, skip=COMPILED_ATTRS)
    for name, tensor in params:
        flag = tensor.requires_grad
        builder.add(f"param '{name}'.requires_grad", f"({builder.bind(tensor)}.requires_grad is {flag})",
                    str(flag), partial(_requires_grad, tensor))
    return builder.build()


def _requires_grad(tensor: Any) -> str:
    return str(tensor.requires_grad)


def _trace(step: Any, inputs: list[Any], recorder: LossRecorder, world: World) -> Any:
    """``step`` traced by make_fx on ``inputs``; the random states and every input's values put back."""
    import torch

    saved = [t.detach().clone() for t in inputs]
    outside = outside_states(world)
    try:
        graph = trace_restoring(step, inputs, lambda patches: _patch_pyro(patches, recorder), "the step")
    finally:
        with torch.no_grad():
            for tensor, value in zip(inputs, saved, strict=True):
                tensor.copy_(value)
        drew = not states_equal(outside, outside_states(world))
        restore_outside_states(outside, world)
    if drew:
        raise Unguardable(_outside_draw_reason(world))
    return graph


def trace_restoring(fn: Any, inputs: list[Any], install: Any, what: str) -> Any:
    """``fn`` traced by make_fx on ``inputs`` with ``install(patches)``'s patches in place; the
    patches and the random state put back whatever happens; a failure that is not already a
    CannotCompile becomes one, naming ``what`` was captured."""
    import torch

    rng = torch.get_rng_state()
    patches = patch.PatchSet()
    try:
        install(patches)
        return compat.make_fx(fn)(*inputs)
    except CannotCompile:
        raise
    except Exception as exc:
        raise CannotCompile(f"capturing {what} failed: {type(exc).__name__}: {exc}") from exc
    finally:
        patches.restore()
        torch.set_rng_state(rng)


class _WholeStep:
    """The function make_fx traces: ``(*inputs) -> (loss terms and guard,)``, writing each param's and
    optimizer state's new value into its input. After tracing, ``loss``, ``watch`` and ``untouched``
    say what the trace saw."""

    def __init__(self, svi: Any, elbo: Any, loss_fn: elbos.LossFn, args: tuple[Any, ...],
                 kwargs: dict[str, Any], params: list[tuple[str, Any]], layout: _Inputs,
                 recorder: LossRecorder, value_reads: ValueReadPolicy) -> None:
        self.svi, self.elbo, self.loss_fn, self.args, self.kwargs = svi, elbo, loss_fn, args, kwargs
        self.params, self.layout, self.recorder, self.value_reads = params, layout, recorder, value_reads
        self.grad_is_none = [p.grad is None for _, p in params]
        self.by_param = {u.param: u for u in layout.updates}
        self.untouched: list[int] = []
        self.loss: Any = None
        self.watch: Any = None

    def __call__(self, *flat: Any) -> Any:
        import torch

        # what the model writes in place (a BatchNorm's statistics) as it was: a failed guard puts it back
        kept = [(i, flat[i].clone()) for i in self.layout.written]
        ok, grads = self._loss_and_grads(flat)
        # the values: the loss's terms, then whether all warnings' flags hold, then the guards'; the
        # flags themselves a second output, read only where one fails. (One stack of scalars, which
        # inductor's kernel writes whole: a cat of vectors is written through views made on every
        # call; a flag in the stack would be a node more for TorchScript's interpreter, each step)
        terms = [t.reshape(()).to(torch.float64) for t in self.recorder.tensors]
        flags = torch.stack([holds for holds, _ in self.watch.warnings]) if self.watch.warnings else None
        if flags is not None:
            terms.append(flags.all().to(torch.float64))
        terms.append(ok.to(torch.float64) if ok is not None else torch.ones((), dtype=torch.float64))
        with torch.no_grad():
            for i, grad in enumerate(grads):
                self._update(flat, i, grad, ok)
            if ok is not None:
                for i, old in kept:
                    flat[i].copy_(torch.where(ok, flat[i], old))
        return (torch.stack(terms),) if flags is None else (torch.stack(terms), flags)

    def _loss_and_grads(self, flat: tuple[Any, ...]) -> tuple[Any, list[Any]]:
        import torch
        from pyro import poutine

        layout, params = self.layout, self.params
        call_args = list(self.args)
        for position, value in zip(layout.arg_positions, flat[layout.first_arg:], strict=False):
            call_args[position] = value
        call_kwargs = dict(self.kwargs)
        for key, slot in layout.keywords:
            call_kwargs[key] = flat[slot]
        with ReadWatch(self.value_reads, _WholeStep._loss_and_grads.__code__, warnings_apart=True) as watch:
            with poutine.block(), poutine.trace(param_only=True) as trace:
                self.loss, surrogates = self.loss_fn(self.elbo, self.svi.model, self.svi.guide,
                                                     tuple(call_args), call_kwargs, self.recorder)
            seen = {_unconstrained(site["value"]) for site in trace.trace.nodes.values()}
            if seen != {p for _, p in params}:
                raise CannotCompile("the step touched other params than a step before it: the model's "
                                    "params depend on values rather than on the arguments")
            wanted = [i for i in range(len(params)) if flat[i].requires_grad]
            grads: list[Any] = [None] * len(params)
            for surrogate in surrogates:
                found = torch.autograd.grad(surrogate, [flat[i] for i in wanted], allow_unused=True)
                for i, g in zip(wanted, found, strict=True):
                    if g is not None:
                        grads[i] = g if grads[i] is None else grads[i] + g
        self.watch = watch
        return (torch.stack(watch.guards).all() if watch.guards else None), grads

    def _update(self, flat: tuple[Any, ...], i: int, grad: Any, ok: Any) -> None:
        """Param ``i``'s optimizer update, written into its inputs (unless a guard failed)."""
        import torch

        if grad is None and not self.grad_is_none[i]:
            grad = torch.zeros_like(flat[i])  # p.grad holds zeros since zero_grads: eager steps it
        update = self.by_param.get(i)
        if grad is None:
            self.untouched.append(i)
            return
        if update is None:
            raise NeedsEagerStep(f"the optimizer for '{self.params[i][0]}' has no state yet")
        state = dict(zip(update.rule.state_keys, (flat[j] for j in update.state_inputs), strict=True))
        vector = flat[self.layout.first_scalars]
        scalars = [vector[update.offset + k] for k in range(update.rule.n_scalars)]
        if not update.rule.numbers_in_double:
            scalars = [number.to(flat[i].dtype) for number in scalars]  # (as torch casts a Python float)
        new = update.rule.update(flat[i], grad, state, scalars)
        for key, value in new.items():
            target = flat[i] if key == "param" else state[key]
            target.copy_(value if ok is None else torch.where(ok, value, target))


def _patch_pyro(patches: patch.PatchSet, recorder: LossRecorder) -> None:
    """Pyro's reads that the capture handles itself (see :mod:`.reads`)."""
    for module in compat.loss_item_modules():
        patches.set(module, "torch_item", recorder.item)
    patch_reads(patches)


def patch_reads(patches: patch.PatchSet) -> None:
    """Dice's mask, param store writes, and ``tolist()``/``numpy()`` of traced tensors, while capturing."""
    import torch

    def masked_fulldot(fulldot: Any, prob: Any, cost: Any) -> Any:
        # Dice's masked_select, with a static shape: terms where prob == 0 add exactly nothing
        return fulldot(prob, torch.where(prob > 0, cost, torch.zeros((), dtype=cost.dtype)))

    compat.mask_dice(patches, masked_fulldot)
    _forbid_store_writes(patches)
    for method in ("tolist", "numpy"):
        original = getattr(torch.Tensor, method)
        patches.set(torch.Tensor, method, _bulk_read(original, method))


def _forbid_store_writes(patches: patch.PatchSet) -> None:
    from pyro.params.param_store import ParamStoreDict

    def no_store_writes(store: Any, name: str, value: Any) -> None:
        if name not in store:  # a param made on this call's first run: that run is eager's
            raise NeedsEagerStep(f"the step creates the param '{name}' on its first run")
        raise CannotCompile(f"the loss writes the param store ('{name}') while it runs (TraceGraph_ELBO's "
                            "decaying-average baseline does): run it with Pyro's JIT or eagerly")

    patches.set(ParamStoreDict, "__setitem__", no_store_writes)


def _bulk_read(original: Any, method: str) -> Any:
    def read(self: Any, *args: Any, **kwargs: Any) -> Any:
        if compat.is_traced(self):
            for mode in compat.current_dispatch_modes():
                watch = getattr(mode, "watch", None)
                if watch is not None:
                    value = watch.bulk_read(self, f"tensor.{method}()")
                    if method == "numpy":
                        import numpy as np

                        return np.asarray(value)
                    return value
        return original(self, *args, **kwargs)

    return read


def prune(graph: Any) -> None:
    """Drop what the step does not use, keeping every op that has an effect: writes, random draws
    (an unused draw still moves the random stream, as eager's does), and checks that return
    nothing but raise (``_linalg_check_errors`` of a Cholesky factor)."""
    import torch

    seeded = torch.Tag.nondeterministic_seeded

    def has_effect(node: Any) -> bool:
        schema = compat.aten_op(node.target) if node.op == "call_function" else None
        return node.is_impure() or (schema is not None and (not schema.returns or seeded in node.target.tags))

    graph.graph.eliminate_dead_code(is_impure_node=has_effect)
    graph.recompile()


def keep_draws(graph: Any) -> None:
    """Return every random draw nothing uses, after the step's own outputs, so that no backend drops
    it: ``pyro.param("loc", torch.randn(8))`` draws on every call in eager Pyro, and so must the
    compiled step, or the random stream after it parts from eager's."""
    import torch

    seeded = torch.Tag.nondeterministic_seeded
    unused = [node for node in graph.graph.nodes if node.op == "call_function" and not node.users
              and compat.aten_op(node.target) is not None and seeded in node.target.tags]
    if not unused:
        return
    output = next(node for node in graph.graph.nodes if node.op == "output")
    output.args = ((*output.args[0], *unused),)
    graph.recompile()


def simplify(graph: Any) -> None:
    """Drop the ops that change nothing at run time, which TorchScript would interpret one by one:
    ``detach`` (nothing is differentiated at run time), a ``view``, ``reshape`` or ``expand`` to
    the shape the tensor has, ``ne(b, 0)`` of a bool, ``mul(x, 1)``; then one node for each op
    repeated on the same inputs (:func:`merge_repeats`)."""
    import torch

    aten = torch.ops.aten

    def shape(node: Any) -> Any:
        value = getattr(node, "meta", {}).get("val")
        return tuple(value.shape) if isinstance(value, torch.Tensor) else None

    def dtype(node: Any) -> Any:
        value = getattr(node, "meta", {}).get("val")
        return value.dtype if isinstance(value, torch.Tensor) else None

    for node in list(graph.graph.nodes):
        if node.op != "call_function" or not node.args or not isinstance(node.args[0], torch.fx.Node):
            continue
        source, target = node.args[0], node.target
        same = False
        if target is aten.detach.default:
            same = True
        elif target in (aten.view.default, aten.reshape.default, aten._unsafe_view.default,
                        aten.expand.default):
            same = shape(source) is not None and shape(source) == shape(node) and dtype(source) == dtype(node)
        elif target is aten.ne.Scalar:
            same = node.args[1] == 0 and dtype(source) == torch.bool and shape(source) == shape(node)
        elif target is aten.mul.Tensor:
            same = (not isinstance(node.args[1], torch.fx.Node) and node.args[1] == 1
                    and dtype(source) == dtype(node) and shape(source) == shape(node))
        if same:
            node.replace_all_uses_with(source)
    merge_repeats(graph)


def merge_repeats(graph: Any) -> None:
    """One node for each op repeated on the same inputs: TorchScript interprets every node, and Pyro
    checks one value in several places, and a gradient takes the same negation twice (the simple
    SVI's graph, merged, has 284 nodes: docs/benchmarks.md, The whole step). Call :func:`prune` after
    it, to drop the repeats. (Inductor merges them in its kernels itself; given them merged, it
    builds the simple SVI's step as two kernels, the table's "2 kernels". Merging on a copy for
    TorchScript alone added a deepcopy and a recompile to every compile.)

    Only ops that compute a new tensor from their inputs merge: not a draw, not an op that writes,
    not a view, nor a tensor that something writes later; and two ops merge only where no op writes
    anything between them, so both read the same values."""
    import operator

    import torch

    seeded = torch.Tag.nondeterministic_seeded
    written: set[Any] = set()  # nodes whose tensors an op writes (through views too)
    for node in graph.graph.nodes:
        schema = compat.aten_op(node.target) if node.op == "call_function" else None
        for arg, value in zip(schema.arguments if schema else (), node.args, strict=False):
            while isinstance(value, torch.fx.Node) and arg.alias_info is not None and arg.alias_info.is_write:
                written.add(value)
                base = compat.aten_op(value.target) if value.op == "call_function" else None
                value = value.args[0] if base is not None and _returns_view(base) and value.args else None
    seen: dict[Any, Any] = {}
    writes = 0  # ops that wrote so far: two ops merge only between the same writes
    for node in list(graph.graph.nodes):
        schema = compat.aten_op(node.target) if node.op == "call_function" else None
        if schema is not None and schema.is_mutable:
            writes += 1
            continue
        plain = schema is not None and schema.returns and seeded not in node.target.tags \
            and not _returns_view(schema) and not schema.name.startswith(("aten::empty", "aten::new_empty"))
        if node in written or not (plain or node.target is operator.getitem) or node.is_impure():
            continue
        key = (node.target, _key(node.args), _key(node.kwargs), writes)
        try:
            first = seen.setdefault(key, node)
        except TypeError:  # (an argument with no hash: a slice)
            continue
        if first is not node:
            node.replace_all_uses_with(first)


def _returns_view(schema: Any) -> bool:
    return any(r.alias_info is not None for r in schema.returns)


def _key(value: Any) -> Any:
    """A hashable form of an op's arguments that tells apart what compares equal in Python and is
    not the same argument (1, 1.0 and True; 0.0 and -0.0)."""
    if isinstance(value, (list, tuple)):
        return (type(value), tuple(map(_key, value)))
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    if isinstance(value, (bool, int, float, complex)):
        return (type(value), repr(value))
    return value


def _plain_reductions(graph: Any) -> None:
    """Reductions as inductor fuses them best, with the same results.

    ``_is_all_true``/``_is_any_true`` (torch.distributions' validation) are ``all``/``any`` on bool
    tensors; and ``all``/``any`` of a 0-d tensor (Pyro's NaN checks of each ``log_prob_sum``) is
    ``x != 0``, pointwise, which fuses with its neighbours instead of being a kernel of its own.
    """
    import torch

    aten = torch.ops.aten
    plain = {aten._is_all_true.default: aten.all.default, aten._is_any_true.default: aten.any.default}
    for node in graph.graph.nodes:
        if node.op != "call_function":
            continue
        if node.target in plain:
            node.target = plain[node.target]
        if node.target in (aten.all.default, aten.any.default):
            value = getattr(node.args[0], "meta", {}).get("val")
            if isinstance(value, torch.Tensor) and value.dim() == 0:
                node.target = aten.ne.Scalar
                node.args = (node.args[0], 0)


def _check_constants(graph: Any) -> None:
    """CannotCompile if the graph writes into a tensor that is not one of its inputs."""
    for target, value in written_roots(graph):
        if value.op == "get_attr":
            raise CannotCompile(
                f"the step changes in place a tensor that is neither a param, an argument, a global nor a "
                f"buffer of a module it runs ({target}): a graph would lose those changes; read it by name "
                "(not through getattr) to compile the step")


def _draws_random(graph: Any) -> bool:
    import torch

    seeded = torch.Tag.nondeterministic_seeded
    return any(node.op == "call_function" and compat.aten_op(node.target) is not None
               and seeded in node.target.tags for node in graph.graph.nodes)


def _baked(graph: Any) -> tuple[str, ...]:
    """Tensors from outside the step's arguments that the graph holds as constants."""
    import torch

    baked = []
    for node in graph.graph.nodes:
        if node.op != "get_attr":
            continue
        if all(user.target is torch.ops.aten.lift_fresh_copy.default for user in node.users):
            continue  # a torch.tensor(...) made afresh on every step
        value = getattr(graph, node.target)
        if isinstance(value, torch.Tensor) and value.numel() > 1:
            baked.append(f"{tuple(value.shape)} {str(value.dtype).replace('torch.', '')}")
    return tuple(baked)
