"""A compiled SVI step: what it holds, and one call of it.

A :class:`CompiledStep` owns nothing the user cannot see. On each call it reads
the param store's tensors, each torch optimizer's state tensors and learning
rate, and the step's arguments, computes the optimizer's per-step numbers in
Python as torch does, runs the graph (which writes the new values into those
very tensors) and evaluates Pyro's float loss from the graph's outputs. What
it cannot run as captured, it runs with Pyro's own ``SVI.step``: a step whose
guards failed (see :mod:`.reads`), or any step after the world it was captured
in changed (a param replaced, an optimizer's settings changed): it then says
so in :attr:`CompiledStep.stale`, for the caller to compile again.
"""

from __future__ import annotations

import warnings
from typing import Any, Literal

from ..core import patch
from . import compat
from .backends import Background, Codegen, SwitchesToInductor
from .capture import CapturedStep
from .optim import ParamUpdate
from .reads import ValueRead


def step_key(args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    """What a compiled step is keyed on: Pyro's key (the number of positional arguments and
    the keyword values) plus the shape, dtype and device of each tensor argument."""
    import torch

    shapes = tuple((tuple(a.shape), a.dtype, a.device.type) if isinstance(a, torch.Tensor)
                   else ("value", type(a).__name__, a) for a in args)
    return compat.pyro_key(args, kwargs), shapes


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
    steps, eager_steps : int
        Calls run by the graph; calls run by Pyro's ``SVI.step`` instead.
    stale : str or None
        Why this compiled step no longer fits its SVI (its calls now run eagerly).
    """

    def __init__(self, svi: Any, key: Any, captured: CapturedStep, codegen: Codegen,
                 fallback: str | None = None, pending: Background | None = None) -> None:
        import pyro
        from pyro.infer import SVI

        self.svi = svi
        self.key = key
        self.backend = codegen.backend
        self.graph_nodes = len(captured.graph.graph.nodes)
        self.kernels = codegen.kernels
        self.capture_seconds = captured.capture_seconds
        self.codegen_seconds = codegen.seconds
        self.cache: Literal["cold", "warm"] | None = codegen.cache
        self.fallback = fallback
        self.value_reads: tuple[ValueRead, ...] = tuple(
            sorted(captured.reads, key=lambda r: r.origin != "user"))
        self.guards = captured.guards
        self.dice_masks = captured.dice_masks
        self.baked_tensors = captured.baked_tensors
        self.steps = 0
        self.eager_steps = 0
        self.guard_failures = 0
        self.stale: str | None = None
        self.captured = captured
        self._run = codegen.run
        self.as_captured = codegen.as_captured
        self._pending = pending
        self._store = pyro.get_param_store()
        self._eager = patch.unwrap(SVI.step)
        self._inputs = list(captured.example_inputs)
        self._views = [v.numpy() for v in captured.scalar_vectors]
        self._loss = captured.loss
        self._save_rng = captured.random and captured.guards > 0
        self._nan_site = captured.nan_warning
        self._bound = (svi.model, svi.guide, svi.loss_and_grads, svi.optim)
        untouched = [captured.params[i][1] for i in captured.untouched]
        self._untouched = [(p, p.grad is None) for p in untouched]
        inputs = captured.example_inputs
        # the layout each input had at capture: inductor's generated code relies on it
        self._layouts = [(t.shape, t.dtype, t.is_contiguous()) for t in inputs]
        self._updates = [(captured.params[u.param][1], u.rule, u.state_inputs, self._views[u.scalar_vector],
                          u.offset) for u in captured.updates]
        self._params = [(name, tensor, self._layouts[i]) for i, (name, tensor) in enumerate(captured.params)]
        first = captured.first_arg_input
        self._args = [(position, first + k, self._layouts[first + k])
                      for k, position in enumerate(captured.arg_positions)]
        stepped = {u.param for u in captured.updates}
        # torch does some bookkeeping in Python (ClippedAdam: its int step, its decayed lr)
        self._after = [(rule, i in stepped) for i, rule in captured.rules.items()
                       if type(rule).after_step is not ParamUpdate.after_step]

    # -- one step ---------------------------------------------------------------
    def __call__(self, *args: Any, **kwargs: Any) -> float:
        """One ``svi.step(*args, **kwargs)``: eager's float loss; params and optimizer state
        updated in place, as eager updates them."""
        import torch

        inputs = self._bind(args) if self.stale is None else None
        if inputs is None:
            self.eager_steps += 1
            return self._eager(self.svi, *args, **kwargs)
        run = self._run_now()
        rng = torch.get_rng_state() if self._save_rng else None
        grad = torch.is_grad_enabled()
        compat.set_grad_enabled(False)
        try:
            values = run(*inputs)[0].tolist()
        finally:
            compat.set_grad_enabled(grad)
        if values[-1] != 1.0:  # a guard failed: the graph wrote nothing back
            if rng is not None:
                torch.set_rng_state(rng)
            self.guard_failures += 1
            self.eager_steps += 1
            return self._eager(self.svi, *args, **kwargs)
        for rule, stepped in self._after:
            rule.after_step(rule.state() if stepped else None)
        self.steps += 1
        loss = self._loss(values)
        if loss != loss:  # pyro/infer/*_elbo.py: warn_if_nan(loss, "loss")
            warnings.warn_explicit("Encountered NaN: loss", UserWarning, *self._nan_site)
        return loss

    def _bind(self, args: tuple[Any, ...]) -> list[Any] | None:
        """The graph's inputs for this call, or None (and :attr:`stale` set) if they no longer fit."""
        svi = self.svi
        if (svi.model, svi.guide, svi.loss_and_grads, svi.optim) != self._bound:
            return self._went_stale("the SVI's model, guide, loss or optimizer was replaced")
        store = compat.store_tensors(self._store)
        for name, tensor, (shape, _, contiguous) in self._params:
            if tensor.shape != shape or tensor.is_contiguous() != contiguous or store.get(name) is not tensor:
                return self._went_stale(f"the param '{name}' was replaced, reshaped or removed")
        inputs = self._inputs
        layouts = self._layouts
        objs = svi.optim.optim_objs
        for param, rule, positions, view, offset in self._updates:
            if objs.get(param) is not rule.owner:
                return self._went_stale("the optimizer was replaced for a param")
            changed = rule.unchanged()
            if changed is not None:
                return self._went_stale(changed)
            state = rule.optimizer.state.get(param)
            try:
                for key, position in zip(rule.state_keys, positions, strict=True):
                    value = state[key]
                    shape, dtype, contiguous = layouts[position]
                    if value.shape != shape or value.dtype != dtype or value.is_contiguous() != contiguous:
                        return self._went_stale(f"the optimizer's '{key}' changed its shape or type")
                    inputs[position] = value
            except (KeyError, TypeError, AttributeError):
                return self._went_stale("an optimizer lost its state")
            for k, number in enumerate(rule.scalars(state)):
                view[offset + k] = number
        for param, no_grad in self._untouched:
            if (param.grad is None) != no_grad:
                return self._went_stale("a param the step does not differentiate gained a gradient")
        for position, slot, (shape, dtype, contiguous) in self._args:
            arg = args[position]
            if arg.shape != shape or arg.dtype != dtype or arg.is_contiguous() != contiguous:
                raise ValueError(f"this step was compiled for argument {position} of shape "
                                 f"{tuple(shape)} and {dtype}" + ("" if contiguous else ", not contiguous")
                                 + f", not {tuple(arg.shape)} and {arg.dtype}: look compiled steps up by "
                                 "step_key(args, kwargs)")
            inputs[slot] = arg
        return inputs

    def _went_stale(self, reason: str) -> list[Any] | None:
        self.stale = reason
        return None

    def __repr__(self) -> str:
        return (f"<CompiledStep {self.backend}: {self.graph_nodes} nodes, {self.steps} steps"
                + (f", stale: {self.stale}" if self.stale else "") + ">")
