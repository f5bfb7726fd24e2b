"""Value reads while capturing: every one is seen, none is silent.

When Python reads a traced tensor's value (``if loc > 0:``, ``int(n)``), the graph would bake that
value in. :class:`ReadWatch` sees each read. A boolean or integer read becomes a guard the graph
computes; a step whose guards fail is undone inside the graph and run eagerly, so Pyro's own checks
warn or raise as eager does. Pyro's NaN and infinity checks (``warn_if_nan``, ``warn_if_inf``) read
a value only to warn: where asked, each becomes a flag the graph computes, and a step whose flag
fails keeps its results and gives eager's warning, with no eager run. A floating-point read cannot
be guarded: it stops the capture, or in the user's code may be baked in and reported as risky.
Pyro's float loss is never read: a :class:`LossRecorder` replays its arithmetic on the graph's
outputs, exact to the last bit.
"""

from __future__ import annotations

import linecache
import os
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

from ..compat import capture as compat
from .errors import CannotCompile, Unguardable

ValueReadPolicy = Literal["error", "bake"]


@dataclass(frozen=True)
class ValueRead:
    """A tensor value read while capturing.

    Attributes
    ----------
    origin : {"user", "pyro"}
        ``"user"`` for a read in the user's code, ``"pyro"`` for Pyro's or torch's own
        (a NaN check, distribution validation).
    handling : {"guarded", "warned", "baked"}
        ``"guarded"``: the graph checks the value every step and runs a step whose
        value differs eagerly; ``"warned"``: Pyro's check for a NaN or infinity, which
        the graph computes every step, giving eager's warning when it fails;
        ``"baked"``: the capture-time value is a constant in the graph, which computes a
        wrong step if it changes (risky).
    what : str
        How the value was read: ``"bool(tensor)"``, ``"tensor.item()"``...
    where : str
        ``file:line`` of the read (the user's line for user reads).
    filename, lineno, source
        The user's line the read happened under, when there is one.
    """

    origin: Literal["user", "pyro"]
    handling: Literal["guarded", "warned", "baked"]
    what: str
    where: str
    filename: str = ""
    lineno: int = 0
    source: str = ""

    @property
    def risky(self) -> bool:
        return self.handling == "baked"

    def __str__(self) -> str:
        text = f"{self.what} at {self.where}"
        if self.source:
            text += f": {self.source}"
        if self.handling == "guarded":
            return text + " (checked every step; a step where it differs runs eagerly)"
        if self.handling == "warned":
            return text + " (checked every step; a step where it fails gives eager's warning)"
        return text + " (baked in at its capture-time value: the compiled step may be wrong)"


def _dirs() -> tuple[str, str, str]:
    import pyro
    import torch

    ours = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return (os.path.dirname(torch.__file__) + os.sep, os.path.dirname(pyro.__file__) + os.sep,
            ours + os.sep)


class ReadWatch:
    """A dispatch mode, entered inside the captured function, that sees every value read.

    Parameters
    ----------
    policy : {"error", "bake"}
        What a floating-point read in the user's code does.
    stop_code : code object
        The captured function's code: frames from there up are the capture's caller,
        not the user's model.
    warnings_apart : bool
        Whether Pyro's NaN and infinity checks become :attr:`warnings` rather than guards.
    """

    def __init__(self, policy: ValueReadPolicy, stop_code: Any, warnings_apart: bool = False) -> None:
        self.policy = policy
        self.stop_code = stop_code
        self.guards: list[Any] = []     # traced bool tensors, each True when a read repeats
        #: (traced bool tensor, True while Pyro's check finds nothing; eager's warning, a function)
        self.warnings: list[tuple[Any, Callable[[], None]]] = []
        self.reads: list[ValueRead] = []
        self._warnings_apart = warnings_apart
        self._checking: tuple[Any, int] | None = None  # (Pyro's check's frame, reads in it so far)
        self.dice_masks = 0
        self._torch_dir, self._pyro_dir, self._our_dir = _dirs()
        self._dice_code = compat.dice_code()
        self._mode = _make_mode(self)

    def __enter__(self) -> ReadWatch:
        self._mode.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._checking = None  # (its frame holds traced tensors)
        self._mode.__exit__(*exc)

    # -- where a read happened --------------------------------------------------
    def _locate(self) -> tuple[Any, Any]:
        """(the innermost frame outside torch's internals, the innermost user frame)."""
        origin = user = None
        frame: Any = sys._getframe(1)
        this = os.path.abspath(__file__)
        while frame is not None and frame.f_code is not self.stop_code:
            name = frame.f_code.co_filename
            if origin is None and not name.startswith(self._torch_dir) and name != this:
                origin = frame
            if user is None and not name.startswith((self._torch_dir, self._pyro_dir, self._our_dir)) \
                    and not name.startswith("<frozen"):
                user = frame
                break
            frame = frame.f_back
        return origin, user

    def _record(self, what: str, handling: Literal["guarded", "warned", "baked"],
                library: bool = False) -> tuple[ValueRead, Any]:
        origin, user = self._locate()
        library = library or origin is None or origin is not user
        if library and origin is not None:
            name = origin.f_code.co_filename
            for base in (self._pyro_dir, self._torch_dir, self._our_dir):
                if name.startswith(base):
                    name = os.path.join(os.path.basename(base.rstrip(os.sep)), name[len(base):])
                    break
            where = f"{name}:{origin.f_lineno} ({origin.f_code.co_name})"
        elif user is not None:
            where = f"{os.path.basename(user.f_code.co_filename)}:{user.f_lineno}"
        else:
            where = "?"
        filename = user.f_code.co_filename if user is not None else ""
        lineno = user.f_lineno if user is not None else 0
        source = linecache.getline(filename, lineno).strip() if filename else ""
        read = ValueRead(origin="pyro" if library else "user", handling=handling, what=what, where=where,
                         filename=filename, lineno=lineno, source=source)
        return read, origin

    # -- the reads --------------------------------------------------------------
    def scalar_read(self, func: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        import torch

        with compat.outside_capture():
            value = func(*args, **kwargs)
        origin, _ = self._locate()
        if origin is not None and origin.f_code is self._dice_code:
            # Dice's ``if not mask.all()``: the static-shape sum in _fulldot keeps the mask
            self.dice_masks += 1
            return True
        aten = torch.ops.aten
        tensor = args[0]
        if func is aten.is_nonzero.default:
            what, truth = "bool(tensor)", (tensor != 0).reshape(())
            holds = truth if value else torch.logical_not(truth)
        elif func is aten.equal.default:
            if args[0].shape != args[1].shape:
                return value  # decided by shapes, which the key fixes
            truth = (args[0] == args[1]).all()
            what, holds = "torch.equal(a, b)", truth if value else torch.logical_not(truth)
        elif func is aten._local_scalar_dense.default and tensor.dtype == torch.bool:
            truth = tensor.reshape(())
            what, holds = "bool(tensor)", truth if value else torch.logical_not(truth)
        elif func is aten._local_scalar_dense.default and not tensor.dtype.is_floating_point \
                and not tensor.dtype.is_complex:
            what, holds = "int(tensor)", tensor.reshape(()) == value
        elif func is aten._local_scalar_dense.default:
            return self._float_read("float(tensor)", value)
        else:
            read, _ = self._record(str(func), "baked")
            raise CannotCompile(f"{func} reads a traced tensor's values at {read.where}"
                                + (f" ({read.source})" if read.source else "")
                                + ", which a graph cannot hold")
        warning = self._pyro_warning(origin) if self._warnings_apart else None
        if warning is not None and value is False:
            read, _ = self._record(what, "warned", library=True)
            self.warnings.append((holds, warning))
            self.reads.append(read)
        else:
            self._guard(holds, what)
        return value

    def _pyro_warning(self, origin: Any) -> Callable[[], None] | None:
        """Eager's warning for this read, where ``origin`` is Pyro's NaN or infinity check (the read
        warns where it is True; each of its reads is counted, whatever it found)."""
        if origin is None:
            return None
        frame, index = self._checking if self._checking is not None else (None, 0)
        index = index + 1 if frame is origin else 0
        self._checking = (origin, index)
        return compat.pyro_warning(origin, index)

    def bulk_read(self, tensor: Any, what: str) -> Any:
        """``tensor.tolist()`` / ``.numpy()`` of a traced tensor: guarded when it holds integers."""
        with compat.outside_capture():
            value = tensor.detach().tolist()
        if tensor.dtype.is_floating_point or tensor.dtype.is_complex:
            return self._float_read(what, value)
        self._guard((tensor == tensor.new_tensor(value)).all(), what)
        return value

    def _guard(self, holds: Any, what: str, library: bool = False) -> None:
        read, _ = self._record(what, "guarded", library)
        self.guards.append(holds)
        self.reads.append(read)

    def _float_read(self, what: str, value: Any) -> Any:
        read, _ = self._record(what, "baked")
        if read.origin == "pyro":
            raise CannotCompile(
                f"{read.where} turns a traced tensor into a Python number ({what}), which changes every "
                "step and cannot be checked in a graph")
        if self.policy == "error":  # Pyro's JIT would bake it too: the step runs eager
            raise Unguardable(
                f"your code turns a traced tensor into a Python number ({what}) at {read.where}"
                + (f": {read.source}" if read.source else "")
                + "; the compiled step would keep its first value. Compute with the tensor instead")
        self.reads.append(read)
        return value


def _static_index(func: Any, args: Any) -> bool:
    """``x[i]`` with integer index tensors: tagged dynamic (a bool mask would be) but its shape is static."""
    import torch

    if func is not torch.ops.aten.index.Tensor:
        return False
    return all(i is None or not (i.dtype == torch.bool or i.dtype == torch.uint8) for i in args[1])


def _make_mode(watch: ReadWatch) -> Any:
    import torch

    base = compat.dispatch_mode_base()
    aten = torch.ops.aten
    reads = (aten.is_nonzero.default,)
    check_errors = aten._linalg_check_errors.default
    dependent = torch.Tag.data_dependent_output
    dynamic = torch.Tag.dynamic_output_shape

    class _Mode(base):  # type: ignore[misc, valid-type]
        def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
            kwargs = kwargs or {}
            if func is check_errors:
                # linalg's error check (a Cholesky factor of a matrix that is not positive definite)
                # raises and returns nothing: a guard instead, and the step that fails it runs eager,
                # which raises. Left in the graph, it would be an op with effects, which inductor's
                # disk cache refuses: every run's codegen would start again (docs/real-models.md)
                watch._guard((args[0] == 0).all(), "linalg error check", library=True)
                return None
            tags = func.tags
            if func in reads or dependent in tags or (dynamic in tags and not _static_index(func, args)):
                traced = any(isinstance(a, torch.Tensor) and compat.is_traced(a) for a in args)
                if traced:
                    if dynamic in tags:
                        read, _ = watch._record(str(func), "baked")
                        raise CannotCompile(
                            f"{func} at {read.where} gives a result whose shape depends on tensor "
                            "values, which a compiled graph cannot hold")
                    return watch.scalar_read(func, args, kwargs)
            return func(*args, **kwargs)

    mode = _Mode()
    mode.watch = watch  # found by the tolist()/numpy() stand-ins during capture
    return mode


class LossFloat:
    """A Python float Pyro computes from tensor values, kept as an expression.

    ``torch_item(t)`` returns one of these while capturing; Pyro's arithmetic on
    it (``elbo + x``, ``-elbo``, ``loss / n``) builds the expression, which the
    compiled step evaluates on the graph's outputs in the same order, so the
    float is bit for bit the one eager computes.
    """

    __slots__ = ("code", "recorder")

    def __init__(self, code: str, recorder: LossRecorder) -> None:
        self.code = code
        self.recorder = recorder

    def _operand(self, other: Any) -> str | None:
        if isinstance(other, LossFloat):
            return other.code
        if isinstance(other, (int, float)) and not isinstance(other, bool):
            return self.recorder.constant(other)
        return None

    def _binary(self, other: Any, op: str, reflected: bool = False) -> Any:
        code = self._operand(other)
        if code is None:
            return NotImplemented
        return LossFloat(f"({code} {op} {self.code})" if reflected else f"({self.code} {op} {code})",
                         self.recorder)

    def __add__(self, other: Any) -> Any:
        return self._binary(other, "+")

    def __radd__(self, other: Any) -> Any:
        return self._binary(other, "+", reflected=True)

    def __sub__(self, other: Any) -> Any:
        return self._binary(other, "-")

    def __rsub__(self, other: Any) -> Any:
        return self._binary(other, "-", reflected=True)

    def __mul__(self, other: Any) -> Any:
        return self._binary(other, "*")

    def __rmul__(self, other: Any) -> Any:
        return self._binary(other, "*", reflected=True)

    def __truediv__(self, other: Any) -> Any:
        return self._binary(other, "/")

    def __rtruediv__(self, other: Any) -> Any:
        return self._binary(other, "/", reflected=True)

    def __neg__(self) -> LossFloat:
        return LossFloat(f"(-{self.code})", self.recorder)


class LossRecorder:
    """Stands in for Pyro's ``torch_item`` while capturing (see :class:`LossFloat`)."""

    def __init__(self) -> None:
        self.tensors: list[Any] = []
        self.constants: list[Any] = []

    def item(self, x: Any) -> Any:
        import torch

        if isinstance(x, torch.Tensor):
            self.tensors.append(x.detach())
            return LossFloat(f"v[{len(self.tensors) - 1}]", self)
        return x

    def constant(self, value: Any) -> str:
        self.constants.append(value)
        return f"c[{len(self.constants) - 1}]"

    def evaluator(self, loss: Any) -> LossExpression:
        """A function of the recorded tensors' values (as ``item()`` gives them) to the loss."""
        if not isinstance(loss, LossFloat):
            return LossExpression("c[0]", [float(loss)])
        return LossExpression(loss.code, list(self.constants))


class LossExpression:
    """Pyro's float loss as an expression of the graph's output values ``v`` and constants ``c``:
    called on the values, or written into a compiled step's generated code (:meth:`source`)."""

    def __init__(self, code: str, constants: list[Any]) -> None:
        self.code = code
        self.constants = constants
        self._fn = eval(f"lambda v, c: {code}")  # built from our own tokens only

    def __call__(self, values: list[float]) -> float:
        return self._fn(values, self.constants)

    def source(self, bind: Callable[[Any], str]) -> str:
        """The expression over values named ``v``, its constants named by ``bind``."""
        return re.sub(r"\bc\[(\d+)\]", lambda m: bind(self.constants[int(m.group(1))]), self.code)
