"""The torch optimizers of ``pyro.optim``, written as tensor math for the captured step.

Each :class:`ParamUpdate` reads one param's torch optimizer and computes the update of torch's
single-tensor CPU code (``_single_tensor_adam`` and siblings), op for op. The learning rate enters
the graph each step as a tensor of Python's double, so a scheduler never recompiles. The numbers
torch computes in Python from it and the step count (Adam's and Adagrad's bias corrections and step
size) are computed in the graph, in double, from the step tensor the graph itself counts: the same
IEEE operations as Python's, with no ``.item()`` on every step (docs/benchmarks.md, The step around
the graph). Hyperparameters are constants; state tensors are inputs written in place, so
``svi.optim.get_state()`` holds what eager would. Ops follow ATen's order, so ``step`` reproduces
eager's values; only ``add_(grad, alpha=-lr)`` under a scheduler may differ in the last bit, on
tensors of 16 elements or more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from ..compat import capture as compat
from ..guards.checks import immutable
from .errors import CannotCompile, NeedsEagerStep


class ParamUpdate:
    """One parameter's optimizer step as tensor math (a subclass per algorithm).

    Attributes
    ----------
    state_keys : tuple of str
        The optimizer's state tensors for this param, passed to and written by the graph.
    n_scalars : int
        How many per-step numbers :meth:`scalars` computes.
    """

    state_keys: tuple[str, ...] = ()
    n_scalars = 0
    #: whether :meth:`update` takes its numbers as Python's doubles (it casts them itself, where
    #: torch does), or cast to the param's dtype, as torch casts a Python float it is given
    numbers_in_double = False
    #: whether its per-step numbers (:meth:`scalars`) are computed from its param group alone: while
    #: the group is unchanged, they are too
    numbers_from_group = False
    #: the param_group keys whose values are constants of the graph
    constant_keys: tuple[str, ...] = ()

    def __init__(self, owner: Any, optimizer: Any, param: Any, dynamic_lr: bool) -> None:
        self.owner = owner  # what PyroOptim holds: the optimizer, or the LR scheduler around it
        self.optimizer = optimizer
        self.param = param
        self.group = optimizer.param_groups[0]
        self.dynamic_lr = dynamic_lr
        self.constants = self._constants()

    def _constants(self) -> tuple[Any, ...]:
        keys = self.constant_keys if self.dynamic_lr else (*self.constant_keys, "lr")
        self._keys = tuple(k for k in keys if k in self.group)
        return tuple(map(self.group.__getitem__, self._keys))

    @property
    def name(self) -> str:
        return type(self.optimizer).__name__

    def unchanged(self) -> str | None:
        """None, or what changed since capture that the graph holds as a constant."""
        group = self.group
        if self.optimizer.param_groups[0] is not group or tuple(map(group.get, self._keys)) != self.constants:
            return f"the {self.name} hyperparameters changed"
        return None

    def unchanged_test(self, bind: Callable[[Any], str],
                       unchanged: Callable[[dict[str, Any]], str | None] | None = None) -> str:
        """An expression that holds where :meth:`unchanged` finds nothing changed (a key gone raises),
        for the compiled step's binding (:func:`~.short_way.binder`), which runs it on every step
        without a method call (docs/benchmarks.md, The step around the graph). ``unchanged(d)``, where
        given: an expression that holds while dict ``d`` is unchanged from now (or None); while the
        param group is, the values are not compared (where nothing changed now, and none of them can
        change in place)."""
        group = bind(self.group)
        values = "".join(f"{group}[{bind(key)}], " for key in self._keys)
        same = f"({values}) == {bind(self.constants)}"
        skip = (unchanged(self.group) if unchanged is not None and self.unchanged() is None
                and all(map(immutable, self.constants)) else None)
        same = f"({skip} or {same})" if skip else same
        return f"{bind(self.optimizer)}.param_groups[0] is {group} and {same}"

    def state(self) -> dict[str, Any] | None:
        """The state tensors by key, or None while the optimizer has none (before its first step)."""
        state = self.optimizer.state.get(self.param)
        if not state or any(key not in state for key in self.state_keys):
            return None
        return state

    def scalars(self, state: Any) -> list[float]:
        """This step's numbers, computed as torch computes them (in Python, in double)."""
        return []

    def scalar_lines(self, state: str, view: str, offset: int, bind: Callable[[Any], str]) -> list[str]:
        """Python lines that write :meth:`scalars` into ``view`` from ``offset``, for the compiled
        step's binding (:func:`~.short_way.binder`): ``state`` names the state dict, ``bind`` makes a
        constant's name. A subclass may write them without the call and the list."""
        if not self.n_scalars:
            return []
        return [f"for k, x in enumerate({bind(self)}.scalars({state})): {view}[{offset} + k] = x"]

    def update(self, param: Any, grad: Any, state: dict[str, Any], s: Any) -> dict[str, Any]:
        """New values of ``param`` and of each state tensor (traced)."""
        raise NotImplementedError

    def after_step(self, state: Any) -> None:
        """Bookkeeping that torch does in Python after a step (ClippedAdam's int step and decayed
        lr); ``state`` is None when the param had no gradient and was not stepped."""


class AdamUpdate(ParamUpdate):
    # torch/optim/adam.py, _single_tensor_adam, the non-capturable branch
    constant_keys = ("betas", "eps", "weight_decay", "amsgrad", "maximize", "decoupled_weight_decay")
    numbers_from_group = True  # (the learning rate)
    n_scalars = 1  # the learning rate
    numbers_in_double = True

    def __init__(self, owner: Any, optimizer: Any, param: Any, dynamic_lr: bool) -> None:
        super().__init__(owner, optimizer, param, dynamic_lr=True)
        group = self.group
        self.beta1, self.beta2 = group["betas"]
        self.decoupled = bool(group.get("decoupled_weight_decay", False))
        self.amsgrad = bool(group["amsgrad"])
        self.state_keys = ("step", "exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if self.amsgrad else ())

    def scalars(self, state: Any) -> list[float]:
        return [self.group["lr"]]

    def scalar_lines(self, state: str, view: str, offset: int, bind: Callable[[Any], str]) -> list[str]:
        return [f"{view}[{offset}] = {bind(self.group)}['lr']"]  # scalars(), without a call and a list

    def update(self, param: Any, grad: Any, state: dict[str, Any], s: Any) -> dict[str, Any]:
        import torch

        group = self.group
        step = state["step"] + 1  # step_t += 1, in the step tensor's own dtype
        # torch's numbers from step_t.item() and lr in Python's double, then cast where torch casts
        n, lr = step.to(torch.float64), s[0]
        step_size = lr / (1 - self.beta1 ** n)
        bias_correction2_sqrt = ((1 - self.beta2 ** n) ** 0.5).to(param.dtype)
        if group["maximize"]:
            grad = -grad
        weight_decay = group["weight_decay"]
        if weight_decay != 0:
            if self.decoupled:
                param = param * (1 - lr * weight_decay).to(param.dtype)
            else:
                grad = grad.add(param, alpha=weight_decay)
        exp_avg = state["exp_avg"].lerp(grad, 1 - self.beta1)
        exp_avg_sq = state["exp_avg_sq"].mul(self.beta2).addcmul(grad, grad, value=1 - self.beta2)
        new = {"step": step, "exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq}
        if self.amsgrad:
            biggest = torch.maximum(state["max_exp_avg_sq"], exp_avg_sq)
            new["max_exp_avg_sq"] = biggest
            denom = (biggest.sqrt() / bias_correction2_sqrt).add(group["eps"])
        else:
            denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add(group["eps"])
        # addcdiv(exp_avg, denom, value=-step_size)
        new["param"] = param + ((-step_size).to(param.dtype) * exp_avg) / denom
        return new


class SGDUpdate(ParamUpdate):
    # torch/optim/sgd.py, _single_tensor_sgd
    constant_keys = ("momentum", "dampening", "weight_decay", "nesterov", "maximize")
    numbers_from_group = True  # (the learning rate)

    def __init__(self, owner: Any, optimizer: Any, param: Any, dynamic_lr: bool) -> None:
        super().__init__(owner, optimizer, param, dynamic_lr)
        self.state_keys = ("momentum_buffer",) if self.group["momentum"] != 0 else ()
        self.n_scalars = 1 if dynamic_lr else 0

    def state(self) -> dict[str, Any] | None:
        if not self.state_keys:
            return {}
        return super().state()

    def scalars(self, state: Any) -> list[float]:
        return _negative_lr(self)

    def update(self, param: Any, grad: Any, state: dict[str, Any], s: Any) -> dict[str, Any]:
        group = self.group
        grad = _ascent_and_decay(group, param, grad)
        new = {}
        momentum = group["momentum"]
        if momentum != 0:
            buf = state["momentum_buffer"].mul(momentum).add(grad, alpha=1 - group["dampening"])
            new["momentum_buffer"] = buf
            grad = grad.add(buf, alpha=momentum) if group["nesterov"] else buf
        new["param"] = _add_scaled(param, grad, group["lr"], s, self.dynamic_lr)
        return new


def _ascent_and_decay(group: dict[str, Any], param: Any, grad: Any) -> Any:
    """The gradient as torch's SGD, RMSprop and Adagrad first turn it: negated with ``maximize``,
    plus ``weight_decay * param``."""
    if group["maximize"]:
        grad = -grad
    if group["weight_decay"] != 0:
        grad = grad.add(param, alpha=group["weight_decay"])
    return grad


def _negative_lr(rule: ParamUpdate) -> list[float]:
    """``[-lr]`` when the rate is a graph input (a scheduler may change it), else nothing."""
    return [-rule.group["lr"]] if rule.dynamic_lr else []


def _add_scaled(param: Any, update: Any, lr: float, s: Any, dynamic_lr: bool) -> Any:
    """``param.add_(update, alpha=-lr)``."""
    if dynamic_lr:
        return param + s[0] * update
    return param.add(update, alpha=-lr)


class RMSpropUpdate(ParamUpdate):
    # torch/optim/rmsprop.py, _single_tensor_rmsprop
    constant_keys = ("alpha", "eps", "weight_decay", "momentum", "centered", "maximize")
    numbers_from_group = True  # (the learning rate)

    def __init__(self, owner: Any, optimizer: Any, param: Any, dynamic_lr: bool) -> None:
        group = optimizer.param_groups[0]
        # with momentum torch adds with alpha=-lr (a fused multiply-add, see the module's doc)
        super().__init__(owner, optimizer, param, dynamic_lr or group["momentum"] <= 0)
        keys = ["step", "square_avg"]
        if group["momentum"] > 0:
            keys.append("momentum_buffer")
        if group["centered"]:
            keys.append("grad_avg")
        self.state_keys = tuple(keys)
        self.n_scalars = 1 if self.dynamic_lr else 0

    def scalars(self, state: Any) -> list[float]:
        return _negative_lr(self)

    def update(self, param: Any, grad: Any, state: dict[str, Any], s: Any) -> dict[str, Any]:
        group = self.group
        grad = _ascent_and_decay(group, param, grad)
        alpha = group["alpha"]
        square_avg = state["square_avg"].mul(alpha).addcmul(grad, grad, value=1 - alpha)
        new = {"step": state["step"] + 1, "square_avg": square_avg}
        if group["centered"]:
            grad_avg = state["grad_avg"].lerp(grad, 1 - alpha)
            new["grad_avg"] = grad_avg
            avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt()
        else:
            avg = square_avg.sqrt()
        avg = avg.add(group["eps"])
        if group["momentum"] > 0:
            buf = state["momentum_buffer"].mul(group["momentum"]).addcdiv(grad, avg)
            new["momentum_buffer"] = buf
            new["param"] = _add_scaled(param, buf, group["lr"], s, self.dynamic_lr)
        else:
            new["param"] = param + (s[0] * grad) / avg  # addcdiv(grad, avg, value=-lr)
        return new


class AdagradUpdate(ParamUpdate):
    # torch/optim/adagrad.py, _single_tensor_adagrad (dense gradients)
    constant_keys = ("lr_decay", "eps", "weight_decay", "maximize")
    numbers_from_group = True  # (the learning rate)
    state_keys = ("step", "sum")
    n_scalars = 1  # the learning rate
    numbers_in_double = True

    def __init__(self, owner: Any, optimizer: Any, param: Any, dynamic_lr: bool) -> None:
        super().__init__(owner, optimizer, param, dynamic_lr=True)

    def scalars(self, state: Any) -> list[float]:
        return [self.group["lr"]]

    def update(self, param: Any, grad: Any, state: dict[str, Any], s: Any) -> dict[str, Any]:
        import torch

        group = self.group
        grad = _ascent_and_decay(group, param, grad)
        step = state["step"] + 1
        # (torch's clr, from step_t.item() and lr in Python's double)
        clr = s[0] / (1 + (step.to(torch.float64) - 1) * group["lr_decay"])
        state_sum = state["sum"].addcmul(grad, grad, value=1)
        std = state_sum.sqrt().add(group["eps"])
        return {"step": step, "sum": state_sum,
                "param": param + ((-clr).to(param.dtype) * grad) / std}  # addcdiv(grad, std, value=-clr)


class ClippedAdamUpdate(ParamUpdate):
    # pyro/optim/clipped_adam.py, ClippedAdam.step: its step count is a Python int and it
    # decays lr in its param group on every step, both kept outside the graph
    constant_keys = ("betas", "eps", "weight_decay", "clip_norm", "lrd", "centered_variance")
    state_keys = ("exp_avg", "exp_avg_sq")
    n_scalars = 1

    def __init__(self, owner: Any, optimizer: Any, param: Any, dynamic_lr: bool) -> None:
        super().__init__(owner, optimizer, param, dynamic_lr=True)

    def state(self) -> dict[str, Any] | None:
        state = super().state()
        return state if state is not None and "step" in state else None

    def scalars(self, state: Any) -> list[float]:
        group = self.group
        beta1, beta2 = group["betas"]
        lr = group["lr"] * group["lrd"]
        step = state["step"] + 1
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        return [-(lr * math.sqrt(bias_correction2) / bias_correction1)]

    def update(self, param: Any, grad: Any, state: dict[str, Any], s: Any) -> dict[str, Any]:
        group = self.group
        beta1, beta2 = group["betas"]
        grad = grad.clamp(-group["clip_norm"], group["clip_norm"])
        if group["weight_decay"] != 0:
            grad = grad.add(param, alpha=group["weight_decay"])
        exp_avg = state["exp_avg"].mul(beta1).add(grad, alpha=1 - beta1)
        grad_var = (grad - exp_avg) if group["centered_variance"] else grad
        exp_avg_sq = state["exp_avg_sq"].mul(beta2).addcmul(grad_var, grad_var, value=1 - beta2)
        denom = exp_avg_sq.sqrt().add(group["eps"])
        return {"exp_avg": exp_avg, "exp_avg_sq": exp_avg_sq,
                "param": param + (s[0] * exp_avg) / denom}  # addcdiv(exp_avg, denom, value=-step_size)

    def after_step(self, state: Any) -> None:
        self.group["lr"] *= self.group["lrd"]
        if state is not None:
            state["step"] += 1


def _classes() -> dict[type, type[ParamUpdate]]:
    import torch
    from pyro.optim.clipped_adam import ClippedAdam

    return {torch.optim.Adam: AdamUpdate, torch.optim.AdamW: AdamUpdate, torch.optim.SGD: SGDUpdate,
            torch.optim.RMSprop: RMSpropUpdate, torch.optim.Adagrad: AdagradUpdate,
            ClippedAdam: ClippedAdamUpdate}


SUPPORTED = "Adam, AdamW, SGD, RMSprop, Adagrad and ClippedAdam"


def check_pyro_optim(optim: Any) -> None:
    """CannotCompile unless ``optim`` is a ``pyro.optim`` wrapper whose steps the capture can write."""
    from pyro.optim.optim import PyroOptim

    if not isinstance(optim, PyroOptim):
        raise CannotCompile(f"the optimizer is a {type(optim).__name__}, not a pyro.optim wrapper of "
                            f"torch's {SUPPORTED}")
    if optim.pt_clip_args:
        raise CannotCompile("the optimizer clips gradients (clip_args), which the captured step does "
                            "not write: use ClippedAdam, or run it with Pyro's JIT")
    if compat.pending_optim_state(optim):
        raise NeedsEagerStep("the optimizer holds state from set_state() that its next eager step loads")


def plan(optim: Any, param: Any, name: str) -> ParamUpdate:
    """The update ``optim`` (a PyroOptim) makes to ``param`` on a step, as a :class:`ParamUpdate`."""
    import torch

    owner = optim.optim_objs.get(param)
    if owner is None:
        raise NeedsEagerStep(f"the optimizer has no torch optimizer for '{name}' yet")
    scheduled = hasattr(owner, "optimizer")  # pyro/optim/optim.py, is_scheduler
    optimizer = owner.optimizer if scheduled else owner
    cls = _classes().get(type(optimizer))
    if cls is None:
        raise CannotCompile(f"'{name}' is optimized by {type(optimizer).__name__}; the whole step writes "
                            f"torch's {SUPPORTED} (subclasses are not)")
    if compat.step_hooks(optimizer) or not compat.step_is_plain(optimizer):
        raise CannotCompile(f"the {type(optimizer).__name__} for '{name}' has step hooks or a replaced "
                            "step(), which a captured step would skip")
    if len(optimizer.param_groups) != 1 or len(optimizer.param_groups[0]["params"]) != 1:
        raise CannotCompile(f"the {type(optimizer).__name__} for '{name}' holds other params too")
    group = optimizer.param_groups[0]
    for flag in ("foreach", "fused", "capturable", "differentiable"):
        if group.get(flag):
            raise CannotCompile(f"the {type(optimizer).__name__} for '{name}' has {flag}=True; the whole "
                                "step writes torch's default single-tensor update on CPU")
    numbers = [group.get("lr"), *group.get("betas", ())]
    if any(isinstance(x, torch.Tensor) for x in numbers):
        raise CannotCompile(f"the {type(optimizer).__name__} for '{name}' has a tensor lr or betas")
    if param.dtype not in (torch.float32, torch.float64) or param.device.type != "cpu":
        raise CannotCompile(f"'{name}' is {param.dtype} on {param.device}; the whole step compiles "
                            "float32 and float64 params on CPU")
    return cls(owner, optimizer, param, dynamic_lr=scheduled)
