"""The private names the whole step uses: in make_fx, inductor, Pyro's ELBOs and its param store.

They say how make_fx tracks tensors, how inductor finds its C++ compiler and counts its kernels
and cache hits, which of Pyro's helpers compute a particle's loss, and where the param store and
``PyroOptim`` keep their tensors. Each is listed in :data:`pyro_jitmagic.compat.PRIVATE_NAMES`,
so an upgrade that moves one fails ``tests/test_compat.py`` naming it, not a capture somewhere
deep.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from typing import Any

from ..patch import ORIGINAL_ATTR, PatchSet

# -- capture ------------------------------------------------------------------

def make_fx(fn: Any) -> Any:
    """``fn`` traced in "real" mode (on the tensors it is called with), with one fake mode for
    every node's metadata (:func:`_one_fake_mode`)."""
    from torch.fx.experimental.proxy_tensor import make_fx as _make_fx

    traced = _make_fx(fn, tracing_mode="real")

    def trace(*inputs: Any) -> Any:
        with _one_fake_mode():
            return traced(*inputs)

    return trace


@contextmanager
def _one_fake_mode() -> Iterator[None]:
    """Describe every traced value with one fake mode, made directly, on this thread.

    In "real" mode, make_fx records each node's shape, strides and dtype as a fake tensor
    (``node.meta["val"]``). With no fake mode active, it builds a new ``FakeTensorMode`` for
    every node, each taking a snapshot of the Python stack, then dispatches an ``empty_strided``
    through it. On the tutorial's HMM that was most of a capture (docs/benchmarks.md, Captures).
    Here one mode serves the whole capture, and each value is a meta tensor of the same layout
    wrapped as a fake one: the same graph and the same recorded values.
    """
    import torch
    from torch._guards import detect_fake_mode
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode
    from torch.fx.experimental import proxy_tensor

    original = proxy_tensor.extract_val
    shared = FakeTensorMode(allow_fallback_kernels=True)
    thread = threading.get_ident()
    # the meta tensor is made below the capture's modes (the tracer, the read watch): a made
    # tensor, not a traced op
    below_modes = torch._C.DispatchKeySet(torch._C.DispatchKey.Python) | torch._C.DispatchKeySet(
        torch._C.DispatchKey.PythonTLSSnapshot)

    def extract_val(val: Any, include_real: bool = False) -> Any:
        if (type(val) is torch.Tensor and threading.get_ident() == thread and not val.is_sparse
                and detect_fake_mode(val) is None):
            with torch._C._ExcludeDispatchKeyGuard(below_modes):
                meta = torch.empty_strided(val.shape, val.stride(), dtype=val.dtype, device="meta")
            return FakeTensor(shared, meta, val.device)
        return original(val, include_real)

    patches = PatchSet()
    try:
        patches.set(proxy_tensor, "extract_val", extract_val)
        yield
    finally:
        patches.restore()


def fake_values() -> Any:
    """``fake(shape, stride, dtype, device)``: a fake tensor of that layout, all of one fake mode,
    made directly as :func:`_one_fake_mode` makes a traced node's (a graph rebuilt from its
    description gets the same metadata as a traced one)."""
    import torch
    from torch._subclasses.fake_tensor import FakeTensor, FakeTensorMode

    shared = FakeTensorMode(allow_fallback_kernels=True)

    def fake(shape: tuple[int, ...], stride: tuple[int, ...], dtype: Any, device: Any) -> Any:
        return FakeTensor(shared, torch.empty_strided(shape, stride, dtype=dtype, device="meta"), device)

    return fake


def is_traced(tensor: Any) -> bool:
    """Whether ``tensor`` is tracked by the active capture (a read of it bakes a value)."""
    from torch.fx.experimental.proxy_tensor import get_proxy_mode, has_proxy_slot

    mode = get_proxy_mode()
    return mode is not None and has_proxy_slot(tensor, mode.tracer)


def dispatch_mode_base() -> type:
    from torch.utils._python_dispatch import TorchDispatchMode

    return TorchDispatchMode


def current_dispatch_modes() -> list[Any]:
    """The dispatch modes active now, innermost last (a capture's read watch among them)."""
    from torch.utils._python_dispatch import _get_current_dispatch_mode_stack

    return _get_current_dispatch_mode_stack()


def aten_op(target: Any) -> Any:
    """``target``'s schema when it is an aten operator overload, else None."""
    import torch

    return target._schema if isinstance(target, torch._ops.OpOverload) else None


def set_grad_enabled(enabled: bool) -> None:
    """torch's grad mode switched without a context manager's cost (it runs on every step)."""
    import torch

    torch._C._set_grad_enabled(enabled)


def grad_mode_setter() -> Any:
    """torch's function that switches grad mode, held by a caller that switches it on every step."""
    import torch

    return torch._C._set_grad_enabled


def tensor_check(examples: list[Any]) -> Any:
    """One call that says whether the tensors it is given, in order, each have the class, dtype,
    device, shape, strides and ``requires_grad`` of ``examples`` (dynamo's ``TensorGuards``, which
    checks a compiled frame's tensors in C++); None where torch has no such check."""
    try:
        from torch._C._dynamo.guards import TensorGuards

        # (per tensor, its sizes and strides, each fixed: torch's stub types them per dimension)
        sizes: Any = [list(t.shape) for t in examples]
        strides: Any = [list(t.stride()) for t in examples]
        guards = TensorGuards(*examples, dynamic_dims_sizes=sizes, dynamic_dims_strides=strides)
        if guards.check(*examples) is not True:
            return None
    except Exception:  # (another torch: the caller checks each tensor itself)
        return None
    return guards.check


@functools.lru_cache(maxsize=1)
def dict_version() -> Any:
    """A function of a dict that returns its version: a number that changes whenever the dict is
    changed (a key set to another object, added or deleted) and that no other dict shares (dynamo's
    ``dict_version``: CPython's own tag before 3.12, a dict watcher's count after). None where torch
    has none, or it does not behave so here."""
    try:
        from torch._C._dynamo.guards import dict_version as version

        probe: dict[str, Any] = {"a": 1}
        before, other = version(probe), version({"a": 1})
        probe["a"] = 2
        if not (isinstance(before, int) and version(probe) != before and other != before):
            return None
    except Exception:  # (another torch, another Python)
        return None
    return version


def outside_capture() -> Any:
    """A context in which torch ops run plainly, untraced."""
    from torch.utils._python_dispatch import _disable_current_modes

    return _disable_current_modes()


# -- Pyro's internals -----------------------------------------------------------

def store_tensors(store: Any) -> dict[str, Any]:
    """The param store's unconstrained tensors by name (the objects optimizers step)."""
    return store._params


def pending_optim_state(optim: Any) -> dict[str, Any]:
    return optim._state_waiting_to_be_consumed


def get_traces(elbo: Any, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
    return elbo._get_traces(model, guide, args, kwargs)


def particle_loss(elbo: Any, model_trace: Any, guide_trace: Any) -> Any:
    return elbo._differentiable_loss_particle(model_trace, guide_trace)


def graph_loss(elbo: Any, model: Any, guide: Any, args: Any, kwargs: Any) -> Any:
    return elbo._loss_and_surrogate_loss(model, guide, args, kwargs)


def dice_elbo(model_trace: Any, guide_trace: Any) -> Any:
    from pyro.infer.traceenum_elbo import _compute_dice_elbo

    return _compute_dice_elbo(model_trace, guide_trace)


def loss_item_modules() -> tuple[Any, ...]:
    """The ELBO modules whose ``torch_item`` turns the loss into a Python float."""
    import pyro.infer.trace_elbo
    import pyro.infer.trace_mean_field_elbo
    import pyro.infer.tracegraph_elbo

    return (pyro.infer.trace_elbo, pyro.infer.trace_mean_field_elbo, pyro.infer.tracegraph_elbo)


def dice_module() -> Any:
    """pyro.infer.util: Dice reads ``mask.all()`` (line 316 in 1.9.2) and then calls ``_fulldot``."""
    import pyro.infer.util

    return pyro.infer.util


def mask_dice(patches: Any, masked: Any) -> None:
    """Through ``patches``, make Dice's dot product ``masked(fulldot, prob, cost)``."""
    module = dice_module()
    fulldot = module._fulldot
    patches.set(module, "_fulldot", lambda prob, cost: masked(fulldot, prob, cost))


def dice_code() -> Any:
    from pyro.infer.util import Dice

    return Dice.compute_expectation.__code__


def pyro_warning(frame: Any, index: int) -> Any:
    """Where ``frame`` is Pyro's ``warn_if_nan`` or ``warn_if_inf`` (pyro/util.py), which read a
    value only to warn: a function that gives eager's warning for its read number ``index`` in that
    call (``warn_if_inf`` reads for +inf, then -inf, each unless allowed), through Pyro's own
    function on a stand-in number (the same text, category, file and line); else None."""
    import math
    from functools import partial

    import pyro.util

    code = frame.f_code
    if code is not pyro.util.warn_if_nan.__code__ and code is not pyro.util.warn_if_inf.__code__:
        return None  # (and no other frame's locals are read)
    names = frame.f_locals
    try:
        msg, filename, lineno = names["msg"], names["filename"], names["lineno"]
    except KeyError:
        return None
    if not (isinstance(msg, str) and isinstance(filename, str) and isinstance(lineno, int)):
        return None
    where = {"filename": filename, "lineno": lineno}
    if code is pyro.util.warn_if_nan.__code__:
        return partial(pyro.util.warn_if_nan, math.nan, msg, **where)
    if "allow_posinf" not in names:
        return None
    if index == 0 and not names["allow_posinf"]:
        return partial(pyro.util.warn_if_inf, math.inf, msg, False, True, **where)
    return partial(pyro.util.warn_if_inf, -math.inf, msg, True, False, **where)


def eager_potential(potential_fn: Any) -> Any:
    """The eager potential of a model behind ``potential_fn`` (Pyro's ``_PEMaker``), or
    ``potential_fn`` itself when it is the user's own."""
    bound = getattr(potential_fn, "func", potential_fn)  # partial(maker._potential_fn_jit, ...)
    maker = getattr(bound, "__self__", None)
    if maker is not None and hasattr(maker, "get_potential_fn") and hasattr(maker, "_potential_fn"):
        return maker._potential_fn
    return potential_fn


def potential_parts(potential_fn: Any) -> tuple[Any, Any, Any, Any, Any, Any] | None:
    """What Pyro built the potential behind ``potential_fn`` from (its ``_PEMaker``): the user's
    model, the handlers ``initialize_model`` put around it (``poutine.enum(config_enumerate(model))``)
    as plain settings, the model's args and kwargs, the transforms and the trace's log-density
    evaluator; None for a potential of the user's own, or handlers other than those."""
    bound = getattr(potential_fn, "func", potential_fn)  # partial(maker._potential_fn_jit, ...)
    maker = getattr(bound, "__self__", None)
    if maker is None or not hasattr(maker, "get_potential_fn") or not hasattr(maker, "trace_prob_evaluator"):
        return None
    unwrapped = _inside_handlers(maker.model)
    if unwrapped is None:
        return None
    model, handlers = unwrapped
    return model, handlers, maker.model_args, maker.model_kwargs, maker.transforms, maker.trace_prob_evaluator


def _inside_handlers(fn: Any) -> tuple[Any, tuple[Any, ...]] | None:
    """The callable inside ``poutine.enum`` and ``poutine.infer_config`` handlers, and each one's
    settings (the enum's first dimension; the config function, a partial, and its plain values);
    None for another handler, or a config function that holds more."""
    import functools

    from pyro.poutine.enum_messenger import EnumMessenger
    from pyro.poutine.infer_config_messenger import InferConfigMessenger
    from pyro.poutine.messenger import _bound_partial, _context_wrap

    handlers: list[Any] = []
    while True:
        inner = fn.func if isinstance(fn, _bound_partial) else fn
        if not (isinstance(inner, functools.partial) and inner.func is _context_wrap) or len(inner.args) != 2:
            return fn, tuple(handlers)
        messenger, fn = inner.args
        if type(messenger) is EnumMessenger:
            handlers.append(("enum", messenger.first_available_dim))
        elif type(messenger) is InferConfigMessenger:
            config = messenger.config_fn  # config_enumerate's: a partial of plain values
            if not isinstance(config, functools.partial):
                return None
            values = (*config.args, *config.keywords.values())
            if not all(type(v) in (int, float, bool, str, type(None)) for v in values):
                return None
            keywords = tuple(sorted(config.keywords.items()))
            handlers.append(("infer_config", config.func, config.args, keywords))
        else:
            return None


def potential_grad_owners() -> tuple[Any, ...]:
    """Modules that call ``potential_grad`` by a name of their own."""
    import pyro.infer.mcmc.hmc
    import pyro.infer.mcmc.nuts
    import pyro.infer.mcmc.util
    import pyro.ops.integrator

    return (pyro.ops.integrator, pyro.infer.mcmc.hmc, pyro.infer.mcmc.nuts, pyro.infer.mcmc.util)


# -- torch optimizers -----------------------------------------------------------

def step_hooks(optimizer: Any) -> int:
    """How many step hooks would run around ``optimizer.step()`` (global and its own)."""
    from torch.optim import optimizer as module

    return (len(module._global_optimizer_pre_hooks) + len(module._global_optimizer_post_hooks)
            + len(optimizer._optimizer_step_pre_hooks) + len(optimizer._optimizer_step_post_hooks))


def step_is_plain(optimizer: Any) -> bool:
    """Whether ``optimizer.step`` is its class's, or that wrapped by an LR scheduler's step counter."""
    own = vars(optimizer).get("step")
    return own is None or getattr(own, "_wrapped_by_lr_sched", False)


# -- inductor -------------------------------------------------------------------

def inductor_cache_dir() -> str:
    """The folder of inductor's on-disk cache: TORCHINDUCTOR_CACHE_DIR, or inductor's default.

    Torch's own ``cache_dir()`` (torch/_inductor/runtime/cache_dir_utils.py) imports inductor,
    which takes seconds, and sets TORCHINDUCTOR_CACHE_DIR as it goes; this follows the same
    rule (``default_cache_dir``, checked against torch 2.13 by a test) without either.
    """
    import os

    folder = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    return os.path.abspath(folder) if folder is not None else _default_cache_dir()


@functools.lru_cache(maxsize=1)
def _default_cache_dir() -> str:
    """Inductor's default folder, found once (the climb asks every cell, and without $USER
    ``getuser`` reads the password file)."""
    import getpass
    import os
    import re
    import tempfile

    try:
        user = getpass.getuser()
    except (KeyError, ModuleNotFoundError, OSError):
        getuid = getattr(os, "getuid", None)
        user = f"uid_{getuid()}" if callable(getuid) else "unknown_user"
    return os.path.abspath(os.path.join(tempfile.gettempdir(),
                                        "torchinductor_" + re.sub(r'[\\/:*?"<>|]', "_", user)))


def cxx_compiler() -> tuple[str | None, str]:
    """(the C++ compiler inductor would use, or None; the names it searched).

    Until inductor's code cache is imported, on Linux, the search is done here as inductor does it
    (torch/_inductor/cpp_builder.py, ``get_cpp_compiler``): the first of ``config.cpp.cxx`` (``$CXX``,
    else ``g++``) that answers ``--version``. Inductor's own search imports its code cache, 0.1 s
    (a second or more before its config), and ``--auto`` asks on the cell's thread.
    """
    import os
    import sys

    loaded: Any = sys.modules.get("torch._inductor.config")
    fast = ("torch._inductor.codecache" not in sys.modules and sys.platform == "linux"
            and not os.getenv("TORCH_INDUCTOR_INSTALL_GXX")
            and (loaded is None or not (loaded.is_fbcode() or loaded.aot_inductor.cross_target_platform)))
    if fast:
        cxx = (None, os.environ.get("CXX", "g++")) if loaded is None else loaded.cpp.cxx
        names = [c for c in (cxx if isinstance(cxx, (list, tuple)) else (cxx,)) if c is not None]
        return next((c for c in names if _answers(c)), None), ", ".join(names)
    from torch._inductor import config, cpp_builder, exc

    searched = ", ".join(str(c) for c in config.cpp.cxx if c is not None)
    try:
        return cpp_builder.get_cpp_compiler(), searched
    except exc.InvalidCxxCompiler:
        return None, searched


@functools.lru_cache(maxsize=8)
def _answers(compiler: str) -> bool:
    """Whether ``compiler --version`` runs, as inductor checks a compiler (once a process, as
    inductor's own search is cached)."""
    import subprocess

    try:
        subprocess.check_output([compiler, "--version"], stderr=subprocess.DEVNULL)
    except (subprocess.SubprocessError, OSError):
        return False
    return True


def compiler_stack_loaded() -> bool:
    """Whether this process has imported what every capture needs first: ``make_fx`` imports
    inductor's config (torch/fx/experimental/proxy_tensor.py), which loads dynamo, about a second
    (docs/benchmarks.md). torch's optimizers import it too, so an SVI cell has; Pyro's JIT does not."""
    import sys

    return "torch._inductor.config" in sys.modules


def load_compiler_stack() -> float:
    """Import what :func:`compiler_stack_loaded` names; the seconds it took (0 where it was loaded)."""
    if compiler_stack_loaded():
        return 0.0
    import time

    start = time.perf_counter()
    import torch._inductor.config  # noqa: F401

    return time.perf_counter() - start


def inductor_loaded() -> bool:
    """Whether this process has loaded inductor's runtime, which every kernel module it writes
    imports (a first load costs seconds even from a warm disk cache: docs/benchmarks.md). A torch
    that moves the module reads as "not loaded": the first load is then only put off."""
    import sys

    return "torch._inductor.select_algorithm" in sys.modules


def inductor_compile(gm: Any, example_inputs: list[Any]) -> Any:
    """Compile ``gm`` with inductor, random draws through ATen's generator as eager draws them.

    The example inputs are handed over as fake tensors of a mode with a (static) shape
    environment: without one inductor bypasses its on-disk FX graph cache ("No shape env").
    """
    import torch._inductor
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx.experimental.symbolic_shapes import ShapeEnv

    mode = FakeTensorMode(shape_env=ShapeEnv(), static_shapes=True, allow_non_fake_inputs=True)
    fakes = [mode.from_tensor(t, static_shapes=True) if isinstance(t, torch.Tensor) else t
             for t in example_inputs]
    # no size and alignment asserts in the generated code: the compiled step checks each input's
    # shape, dtype and contiguity itself before every call, and they would check it again
    options = {"fallback_random": True, "size_asserts": False, "alignment_asserts": False}
    # one compile at a time: the patches below are process-wide (and two compiles would only
    # share the same cores)
    with _ONE_COMPILE, _one_d_tiles(), _global_rng_left_alone(), _anomaly_left_alone():
        return torch._inductor.compile(gm, fakes, options=options)


_ONE_COMPILE = threading.Lock()


@contextmanager
def _global_rng_left_alone() -> Iterator[None]:
    """Keep a compile from setting the global random generator back, on this thread only.

    Inductor and AOTAutograd wrap a compile in ``preserve_rng_state()``: they copy the CPU (and
    CUDA) generator's state on entry and set it back on exit. On the thread that draws, that is
    harmless. From a compile in the background it rewinds every draw the cell's steps made
    meanwhile, and the steps after it repeat earlier noise: the run is no longer one uninterrupted
    run. A captured graph's compile draws nothing (fake inputs; ``fallback_random`` keeps random
    ops as calls), so on the compiling thread the copy and reset are skipped; any other thread
    (a user's own ``torch.compile``) keeps torch's.
    """
    from torch._dynamo import utils as dynamo_utils
    from torch._functorch import aot_autograd

    original = dynamo_utils.preserve_rng_state
    compiling = threading.get_ident()

    def preserve_rng_state() -> Any:
        return nullcontext() if threading.get_ident() == compiling else original()

    owners = [dynamo_utils] + ([aot_autograd] if getattr(aot_autograd, "preserve_rng_state", None) is original
                               else [])
    with _patching(*((owner, "preserve_rng_state", preserve_rng_state) for owner in owners)):
        yield


@contextmanager
def _anomaly_left_alone() -> Iterator[None]:
    """Keep a compile from switching on torch's anomaly detection, on this thread only.

    AOTAutograd traces a graph module under ``torch.autograd.detect_anomaly()``, a switch of the
    whole process, not of the tracing thread. From a compile in the background, the cell's steps
    meanwhile saw anomaly detection on: they ran eager under it, slowly, and the report blamed the
    user for it (docs/real-models.md, Long runs). Our graphs compile with no autograd to trace, so on
    the compiling thread it is skipped; any other thread gets torch's own.
    """
    import torch

    original = torch.autograd.detect_anomaly
    compiling = threading.get_ident()

    def detect_anomaly(*args: Any, **kwargs: Any) -> Any:
        return nullcontext() if threading.get_ident() == compiling else original(*args, **kwargs)

    with _patching((torch.autograd, "detect_anomaly", detect_anomaly)):
        yield


@contextmanager
def _one_d_tiles() -> Iterator[None]:
    """Vectorise C++ kernels along one loop only.

    Torch 2.13's 2-D tiles (``CppTile2DKernel``, chosen for transposed accesses) index an
    indirect scatter (the backward of ``trans[x]`` in an enumerated HMM) with the tile's full
    width where a tail is narrower, and write past the end of the buffer: the process dies in
    ``free()``. With one tiled loop the kernels stay vectorised and correct.
    """
    from torch._inductor.codegen import cpp

    select = cpp.TilingSelect._select_tiling_indices

    def one_loop(self: Any, *args: Any, **kwargs: Any) -> Any:
        return select(self, *args, **kwargs)[-1:]

    with _patching((cpp.TilingSelect, "_select_tiling_indices", one_loop)):
        yield


@contextmanager
def _patching(*changes: tuple[Any, str, Any]) -> Iterator[None]:
    """Each ``(owner, name, replacement)`` for the length of a compile, through the run's one patch
    mechanism; a replacement names what it replaced, as every patch does."""
    patches = PatchSet()
    try:
        for owner, name, replacement in changes:
            setattr(replacement, ORIGINAL_ATTR, getattr(owner, name))
            patches.set(owner, name, replacement)
        yield
    finally:
        patches.restore()


def dump_graph(gm: Any) -> bytes:
    """``gm`` as bytes another process can load with :func:`load_graph`.

    Not plain pickle: a GraphModule pickles as its code, and unpickling traces that code
    symbolically, which runs every op without a traced input (``empty`` then ``normal_``: a
    random draw) and bakes its result in as a constant. Torch's graph pickler keeps the nodes.
    """
    from torch.fx._graph_pickler import GraphPickler, Options

    return GraphPickler.dumps(gm, Options(ops_filter=None))


def load_graph(data: bytes) -> Any:
    """The graph :func:`dump_graph` wrote (in a process that has imported nothing of it yet)."""
    import torch._inductor.compile_fx  # noqa: F401  (a graph's ops may live in modules it imports)
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.fx._graph_pickler import GraphPickler

    return GraphPickler.loads(data, FakeTensorMode())


def generated_kernels(compiled: Any) -> int | None:
    """How many C++ kernels inductor generated for ``compiled`` (its ``cpp_fused_*`` functions),
    also when it came from the on-disk cache; None if this torch keeps them elsewhere."""
    import sys

    runner = getattr(getattr(compiled, "compiled_fn", None), "compiled_fn_runner", None)
    module = sys.modules.get(type(runner).__module__) if runner is not None else None
    if module is None:
        return None
    return sum(1 for name in vars(module) if name.startswith("cpp_fused"))


#: Every global AOTAutograd's generated runtime wrapper names (torch 2.13) when all it does around
#: inductor's call is bump the written inputs' version counters and turn grad mode off: no
#: mutation applied after the call, no output alias replayed, no input detached, no autocast.
_PLAIN_WRAPPER_NAMES = frozenset({
    "_increment_version_", "torch", "is_grad_enabled", "_C", "_set_grad_enabled", "isinstance", "tuple",
    "list", "len", "AssertionError"})


def direct_call(compiled: Any, written: list[int], read_at_once: bool = False) -> Any:
    """``compiled`` (what :func:`inductor_compile` returned) called without the wrappers around
    inductor's generated code, or None where they may do more than this does.

    A call of ``compiled`` passes through torch's dynamo-disabling wrapper, AOTAutograd's
    ``forward`` (which prepends the graph's lifted constants), its runtime wrapper and
    ``CompiledFxGraph.__call__`` (profiler and cache bookkeeping): for a small graph, a quarter of
    its call (docs/benchmarks.md, The step around the graph). The profiler's label of the call is
    lost with them. For a graph with no autograd whose runtime wrapper only bumps
    the version counters of the inputs it writes (``written``, which must be the inputs inductor
    writes), the call here does that and calls the generated code itself. Call it only after
    ``compiled`` ran once: its first call may analyse the graph's ops. ``read_at_once``: the caller
    is done with what a call returns before the next call (:func:`pooled`). The call's
    ``grad_mode_free`` says whether grad mode changes nothing in it (:func:`pooled`).
    """
    import operator

    import torch

    if not torch.__version__.startswith("2.13."):  # the wrappers' shapes were read in 2.13
        return None
    try:
        forward = _closure(getattr(compiled, "__wrapped__", None))
        serializable = forward["compiled_fn"]  # a SerializableCompiledFunction around the wrapper
        wrapper = _closure(getattr(serializable, "compiled_fn", serializable))
        graph, lifted = wrapper["_inner_compiled_fn"], tuple(forward["params_buffers_flat"])
        plain = set(wrapper["_codegen_runtime_wrapper"].__code__.co_names) <= _PLAIN_WRAPPER_NAMES
        runner = graph.current_callable
        runner = pooled(runner, read_at_once) or runner
        writes = {i - len(lifted) for i in graph.mutated_input_idxs}
        boxed, cudagraphs = graph._boxed_call, graph.cudagraph_info
    except (AttributeError, KeyError, TypeError, ValueError):
        return None
    if not plain or not boxed or cudagraphs is not None or runner is None or writes != set(written):
        return None
    # (torch's C function, which increment_version calls after a check the tuple does not need)
    bump = getattr(torch._C, "_increment_version", torch.autograd.graph.increment_version)
    pick = operator.itemgetter(*written) if written else None

    def call(*inputs: Any) -> Any:
        if pick is not None:
            bump(pick(inputs))  # (as the wrapper does: autograd must see these tensors written)
        return runner([*lifted, *inputs])  # (it empties the list it is given)

    call.grad_mode_free = getattr(runner, "grad_mode_free", False)  # type: ignore[attr-defined]
    call.returns = getattr(runner, "returns", None)  # type: ignore[attr-defined]
    return call


#: How much memory the buffers :func:`pooled` keeps from one call to the next may hold: a small
#: graph's allocations are what it saves (a large graph's kernels take far longer than its allocations).
POOL_BYTES = 1 << 20


def pooled(runner: Any, read_at_once: bool = False) -> Any:
    """Inductor's generated ``call`` with the buffers that only its kernels use allocated once, or
    None where it cannot tell which those are.

    The generated code allocates every buffer afresh on each call; in a small step's graph, seventeen
    scalars took a third of the call (docs/benchmarks.md, The step around the graph). A buffer that
    is only written and read by the C++ kernels (with its aliases: ``bufM = bufN  # reuse``) is held
    over from the call before: its old values are never read, as a fresh ``empty`` has none. A buffer
    that anything else sees (an op that may alias it, the tuple returned) is allocated as before. One
    call at a time: a compiled step's calls are sequential, on the cell's thread.

    A random draw the kernels alone read, ``bufN = torch.ops.aten.normal_functional.default(bufM)``
    (eager's draws, kept in the graph), is drawn in place into a held buffer: ``normal_functional``
    is ``clone().normal_()``, the same numbers from the same stream, and its call through torch's
    Python op cost more than the draw (docs/benchmarks.md). Its ``bufM``, whose values it never
    read, is then one more buffer that only the kernels see.

    ``read_at_once``: the caller is done with the tensors a call returns before it calls again (a
    compiled step reads its values into floats), so the buffers returned are held over too, and a
    call returns the same tensors as the call before, written afresh.

    Where no op but the C++ kernels takes an input (a param that requires grad), the call does the
    same under grad mode on or off, and says so: ``grad_mode_free`` is True on what is returned (a
    caller then need not switch grad mode off around it, 0.3 us a call). ``returns`` is the tuple of
    held tensors every call returns, written afresh, where all it returns is held (a caller may keep
    views of them: a NumPy view's ``tolist`` is cheaper than a tensor's), else None."""
    import ast
    import inspect
    import textwrap
    import types

    function, owner = getattr(runner, "__func__", None), getattr(runner, "__self__", None)
    try:
        tree = ast.parse(textwrap.dedent(inspect.getsource(function)))  # type: ignore[arg-type]
    except (OSError, TypeError, SyntaxError, IndentationError):
        return None
    body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.FunctionDef) else []
    buffers = _CallBuffers(body, read_at_once)
    allocations, root, spoiled = buffers.allocations, buffers.root, buffers.spoiled
    namespace = dict(function.__globals__)  # type: ignore[union-attr]
    held, nbytes = 0, 0
    for name, (stmt, like) in buffers.draws.items():
        if root(name) in spoiled:
            continue
        buffer = eval(compile(ast.Expression(allocations[like].value), "<pooled>", "eval"), namespace)
        if nbytes + buffer.untyped_storage().nbytes() > POOL_BYTES:
            continue  # (drawn as generated: it reads only its bufM's layout, the same when held)
        nbytes += buffer.untyped_storage().nbytes()
        namespace[f"_pooled_{name}"] = buffer
        stmt.value = ast.Call(ast.Attribute(ast.Name(f"_pooled_{name}", ast.Load()), "normal_", ast.Load()),
                              [], [])
        held += 1
    for name, stmt in allocations.items():
        if root(name) in spoiled:
            continue
        buffer = eval(compile(ast.Expression(stmt.value), "<pooled>", "eval"), namespace)
        nbytes += buffer.untyped_storage().nbytes()
        if nbytes > POOL_BYTES:
            break
        namespace[f"_pooled_{name}"] = buffer
        stmt.value = ast.Name(f"_pooled_{name}", ast.Load())
        held += 1
    if not held:
        return None
    code = compile(ast.fix_missing_locations(tree), function.__code__.co_filename, "exec")  # type: ignore[union-attr]
    exec(code, namespace)  # inductor's own code, its allocations replaced by held buffers
    call = namespace[function.__name__]  # type: ignore[union-attr]
    call.grad_mode_free = buffers.inputs_to_kernels_alone
    # (a held buffer's name, for an allocation or a draw: its group's root)
    returned = [namespace.get(f"_pooled_{root(name)}") if name in buffers.group else None
                for name in buffers.returned]
    call.returns = tuple(returned) if returned and all(t is not None for t in returned) else None
    return types.MethodType(call, owner) if owner is not None else call


class _CallBuffers:
    """What inductor's generated ``call`` (its ``body``) does with its buffers, for :func:`pooled`:
    those it allocates, the names that are one buffer (``bufM = bufN  # reuse``), the random draws
    (bufN: its statement and the allocation it is drawn like), and the buffers that anything but
    the kernels sees (``spoiled``; with ``read_at_once``, the tuple returned does not count), and
    whether the call's inputs go to the kernels alone (``inputs_to_kernels_alone``)."""

    def __init__(self, body: list[Any], read_at_once: bool) -> None:
        import ast

        # (``arg0_1, arg1_1, ... = args``, then ``args.clear()``: the inputs' names, and no other use)
        head = body[0] if body else None
        inputs: set[str] = set()
        if (isinstance(head, ast.Assign) and isinstance(head.value, ast.Name) and head.value.id == "args"
                and len(head.targets) == 1):
            inputs = {n.id for n in ast.walk(head.targets[0]) if isinstance(n, ast.Name)}
        self.allocations: dict[str, ast.Assign] = {}
        for stmt in body:
            if _allocation(stmt):
                self.allocations[stmt.targets[0].id] = stmt
        self.group = {name: name for name in self.allocations}
        self.draws: dict[str, tuple[ast.Assign, str]] = {}
        #: the names the call returns (with ``read_at_once``), where it returns a tuple of names
        self.returned: list[str] = []
        seen_elsewhere: set[str] = set()
        for stmt in body:
            if _allocation(stmt) or isinstance(stmt, ast.Delete) or self._drawn(stmt) or self._alias(stmt):
                continue
            call = stmt.value if isinstance(stmt, ast.Expr) and isinstance(stmt.value, ast.Call) else None
            kernel = (call is not None and isinstance(call.func, ast.Name)
                      and call.func.id.startswith("cpp_fused_") and not call.keywords
                      and all(isinstance(a, ast.Name) for a in call.args))
            returned = (read_at_once and isinstance(stmt, ast.Return) and isinstance(stmt.value, ast.Tuple)
                        and all(isinstance(e, ast.Name) for e in stmt.value.elts))
            if returned:
                self.returned = [e.id for e in stmt.value.elts]
            if not kernel and not returned and stmt is not head:
                seen_elsewhere.update(node.id for node in ast.walk(stmt) if isinstance(node, ast.Name))
        self.inputs_to_kernels_alone = bool(inputs) and not inputs & seen_elsewhere
        root = self.root
        self.spoiled = {root(name) for name in seen_elsewhere if name in self.group}
        # a draw that something else sees stays as generated, and so reads the layout of its bufM
        self.spoiled |= {root(like) for name, (_, like) in self.draws.items() if root(name) in self.spoiled}

    def root(self, name: str) -> str:
        group = self.group
        while group[name] != name:
            name = group[name]
        return name

    def _drawn(self, stmt: Any) -> bool:
        """A draw shaped like a buffer the call allocates (or its alias): noted."""
        like = _draw(stmt)
        if like is None or like not in self.group or self.root(like) not in self.allocations:
            return False
        self.draws[stmt.targets[0].id] = (stmt, self.root(like))
        self.group[stmt.targets[0].id] = stmt.targets[0].id
        return True

    def _alias(self, stmt: Any) -> bool:
        """``bufM = bufN``: one buffer under two names, noted."""
        import ast

        if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1
                and isinstance(stmt.targets[0], ast.Name)
                and isinstance(stmt.value, ast.Name) and stmt.value.id in self.group):
            return False
        self.group.setdefault(stmt.targets[0].id, stmt.targets[0].id)
        self.group[self.root(stmt.targets[0].id)] = self.root(stmt.value.id)
        return True


def _allocation(stmt: Any) -> bool:
    """``bufN = empty_strided_cpu(...)``: a buffer allocated by inductor's generated code."""
    import ast

    return (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Call) and isinstance(stmt.value.func, ast.Name)
            and stmt.value.func.id == "empty_strided_cpu")


def _draw(stmt: Any) -> str | None:
    """The ``bufM`` of ``bufN = torch.ops.aten.normal_functional.default(bufM)`` (a standard normal
    draw shaped like ``bufM``), else None."""
    import ast

    if not (isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name)
            and isinstance(stmt.value, ast.Call) and not stmt.value.keywords and len(stmt.value.args) == 1):
        return None
    arg = stmt.value.args[0]
    op = ast.unparse(stmt.value.func)
    return arg.id if isinstance(arg, ast.Name) and op == "torch.ops.aten.normal_functional.default" else None


def _closure(fn: Any) -> dict[str, Any]:
    """The variables a function closes over, by name."""
    cells = fn.__closure__ or ()
    return {name: cell.cell_contents for name, cell in zip(fn.__code__.co_freevars, cells, strict=True)}


def fx_cache_counts() -> tuple[int, int, int]:
    """(hits, misses, bypasses) of inductor's FX graph cache, the on-disk one, in this process. A
    bypass is a graph the cache refused to hold (an op with effects, say): it compiles every time."""
    from torch._dynamo.utils import counters

    inductor = counters["inductor"]
    return (int(inductor["fxgraph_cache_hit"]), int(inductor["fxgraph_cache_miss"]),
            int(inductor["fxgraph_cache_bypass"]))


def gradient_hooks(tensor: Any) -> bool:
    """Whether ``tensor`` has hooks that eager's ``backward()`` runs (``register_hook``,
    ``register_post_accumulate_grad_hook``): Python on every step, which a graph runs once."""
    return bool(tensor._backward_hooks) or bool(getattr(tensor, "_post_accumulate_grad_hooks", None))
