"""Every private name of Pyro and torch the package uses, and nowhere else.

Each sits behind a small function or constant in :mod:`.jit` (Pyro's JIT,
TorchScript, Pyro's state), :mod:`.capture` (the whole step: make_fx,
inductor, the ELBOs' internals) or :mod:`.nuts` (a NUTS kernel's state), beside
the release it was checked against.
:data:`PRIVATE_NAMES` lists them all; ``tests/test_compat.py`` checks each, so an
upgrade that moves one fails naming it, and this folder is the one to change.

Nothing here imports torch or Pyro until a function is called.
"""

from __future__ import annotations

import importlib
from typing import Any

TORCH_CHECKED = "2.13.0"  # (the executor flags: 2.1 to 2.13)
PYRO_CHECKED = "1.9.2"

#: Every private name used: (where it lives, its name or path there, what it is used for). Where
#: is a module, or a class, or a pattern of classes (``pyro.infer.Jit*_ELBO``); the test checks
#: each row by resolving it, or, where it lives on instances, on one made for the purpose.
PRIVATE_NAMES: tuple[tuple[str, str, str], ...] = (
    # Pyro's JIT, TorchScript and Pyro's state (jit.py)
    ("pyro.ops.jit", "_hashable_args_kwargs", "the key Pyro's JIT caches a trace under"),
    ("pyro.ops.jit.CompiledFunction", "_param_names", "a compiled function's param inputs"),
    ("pyro.infer.Jit*_ELBO", "_loss_and_surrogate_loss", "the compiled function a Jit* ELBO holds"),
    ("pyro.infer.JitTraceMeanField_ELBO", "_differentiable_loss", "its compiled function"),
    ("pyro.infer.JitTraceGraph_ELBO", "_jit_loss_and_surrogate_loss", "its compiled function"),
    ("pyro.infer.tracegraph_elbo", "__baseline_avg_downstream_cost_", "its baseline params' prefix"),
    ("pyro.infer.mcmc.util", "_PEMaker", "what makes an HMC/NUTS potential"),
    ("pyro.infer.mcmc.util._PEMaker", "_compiled_fn", "its compiled potential"),
    ("pyro.infer.mcmc.util._PEMaker", "_potential_fn", "its eager potential"),
    ("pyro.infer.mcmc.util._PEMaker", "_potential_fn_jit", "its potential, compiled on its first call"),
    ("pyro.infer.mcmc.util", "_pe_jit", "the name a potential's trace is made under"),
    ("pyro.poutine.messenger", "_context_wrap", "a handler's wrapper of a function: the model inside"),
    ("pyro.poutine.messenger", "_bound_partial", "the partial a handler's wrapper is made as"),
    ("pyro.infer.mcmc.HMC", "_jit_compile", "whether a kernel compiles its potential"),
    ("pyro.infer.mcmc.HMC", "_ignore_jit_warnings", "a kernel's JIT settings"),
    ("pyro.infer.mcmc.HMC", "_jit_options", "a kernel's JIT settings"),
    ("pyro.infer.mcmc.api", "_MultiSampler", "chains run in worker processes, beyond a run's reach"),
    # Pyro's NUTS state, kept as NUTS.sample keeps it by a compiled trajectory (nuts.py)
    ("pyro.infer.mcmc.hmc", "HMC._fetch_from_cache", "the kernel's last state"),
    ("pyro.infer.mcmc.hmc", "HMC._cache", "makes a state the kernel's last"),
    ("pyro.infer.mcmc.NUTS", "_max_tree_depth", "when NUTS stops doubling"),
    ("pyro.infer.mcmc.NUTS", "_max_sliced_energy", "when a leaf diverges"),
    ("pyro.infer.mcmc.HMC", "_t", "the iteration, warm-up included"),
    ("pyro.infer.mcmc.HMC", "_warmup_steps", "how many iterations warm up"),
    ("pyro.infer.mcmc.HMC", "_accept_cnt", "accepted iterations after warm-up"),
    ("pyro.infer.mcmc.HMC", "_mean_accept_prob", "the progress bar's acceptance probability"),
    ("pyro.infer.mcmc.HMC", "_divergences", "the run's divergent iterations"),
    ("pyro.infer.mcmc.HMC", "_adapter", "the step-size and mass-matrix adaptation"),
    ("pyro.infer.autoguide.AutoGuide", "_setup_prototype", "the warm-up builds an AutoGuide's prototype"),
    ("pyro.infer.ELBO", "_guess_max_plate_nesting", "the warm-up guesses max_plate_nesting"),
    ("pyro.optim.PyroOptim", "_state_waiting_to_be_consumed", "optimizer state loaded and not yet used"),
    ("torch._C", "_get_graph_executor_optimize", "the TorchScript executor's settings"),
    ("torch._C", "_set_graph_executor_optimize", "the TorchScript executor's settings"),
    ("torch._C", "_jit_set_profiling_executor", "the TorchScript executor's settings"),
    ("torch._C", "_jit_set_profiling_mode", "the TorchScript executor's settings"),
    ("torch._C", "_get_tracing_state", "whether a trace is being made"),
    ("torch.Tensor", "_version", "a tensor's version counter: written in place or not"),
    ("pyro.poutine.runtime", "_PYRO_STACK", "the Pyro handlers around a call"),
    ("pyro.params.param_store.ParamStoreDict", "_constraints", "the param store's constraints"),
    # the whole step (capture.py). torch: capture
    ("torch.fx.experimental.proxy_tensor", "make_fx", "traces the whole step into an aten graph"),
    ("torch.fx.experimental.proxy_tensor", "get_proxy_mode", "the tracer behind a capture"),
    ("torch.fx.experimental.proxy_tensor", "has_proxy_slot", "is a tensor traced, or a constant"),
    ("torch.fx.experimental.proxy_tensor", "extract_val", "a node's fake value: one fake mode per capture"),
    ("torch._guards", "detect_fake_mode", "the fake mode a value belongs to, if any"),
    ("torch._subclasses.fake_tensor", "FakeTensor", "a node's fake value, made directly"),
    ("torch._C", "_ExcludeDispatchKeyGuard", "makes a node's fake value below the capture's modes"),
    ("torch._C", "DispatchKey.PythonTLSSnapshot", "the key of the modes a fake value is made below"),
    ("torch.utils._python_dispatch", "TorchDispatchMode", "sees every value read while capturing"),
    ("torch.utils._python_dispatch", "_disable_current_modes", "computes a read value outside the trace"),
    ("torch.utils._python_dispatch", "_get_current_dispatch_mode_stack", "finds the read watch of a capture"),
    ("torch._ops", "OpOverload", "an aten operator of the captured graph, and its schema"),
    ("torch._C", "_set_grad_enabled", "grad mode off around the compiled step, cheaply"),
    ("torch._C", "_increment_version", "marks the tensors inductor's kernels wrote as written"),
    ("torch._C._dynamo.guards", "TensorGuards", "checks every tensor a compiled step binds, in one call"),
    ("torch._C._dynamo.guards", "dict_version", "a dict's version: the short way reads no dict unchanged"),
    ("torch", "Tensor._backward_hooks", "a param's gradient hooks, which a graph would run once"),
    ("torch", "Tensor._post_accumulate_grad_hooks", "hooks run after a param's gradient is stored"),
    # torch: optimizers
    ("torch.optim.optimizer", "_global_optimizer_pre_hooks", "step hooks the captured update would skip"),
    ("torch.optim.optimizer", "_global_optimizer_post_hooks", "step hooks the captured update would skip"),
    # torch: inductor
    ("torch._inductor", "compile", "compiles the captured graph into C++ kernels"),
    ("torch._subclasses.fake_tensor", "FakeTensorMode", "example inputs inductor can cache by"),
    ("torch.fx.experimental.symbolic_shapes", "ShapeEnv", "without one inductor bypasses its cache"),
    ("torch._inductor.config", "fallback_random", "random draws through ATen, as eager draws them"),
    ("torch._inductor.config", "cpp.cxx", "the C++ compilers inductor searches"),
    ("torch._inductor.cpp_builder", "get_cpp_compiler", "finds inductor's C++ compiler"),
    ("torch._inductor.exc", "InvalidCxxCompiler", "raised when there is none"),
    ("torch._inductor.runtime.cache_dir_utils", "default_cache_dir",
     "where inductor's disk cache lives, the rule inductor_cache_dir() follows"),
    ("torch._inductor.codegen.cpp", "TilingSelect._select_tiling_indices",
     "kept to one tiled loop: 2-D tiles write out of bounds on small enumerated HMMs"),
    ("torch._inductor.output_code", "CompiledFxGraph.compiled_fn_runner",
     "the generated module, whose cpp_fused_* functions are the kernels"),
    ("torch._functorch.aot_autograd", "aot_module_simplified",
     "its forward's compiled_fn and params_buffers_flat: what direct_call() calls"),
    ("torch._functorch._aot_autograd.runtime_wrappers", "SerializableCompiledFunction.compiled_fn",
     "the runtime wrapper it holds"),
    ("torch._functorch._aot_autograd.runtime_wrappers", "_create_runtime_wrapper",
     "its wrapper's _inner_compiled_fn and _codegen_runtime_wrapper: what direct_call() skips"),
    ("torch._inductor.output_code", "CompiledFxGraph.current_callable", "inductor's generated call"),
    ("torch._inductor.output_code", "CompiledFxGraph.mutated_input_idxs", "the inputs its kernels write"),
    ("torch._dynamo.utils", "counters", "fxgraph_cache_hit / _miss: inductor's on-disk cache"),
    ("torch.fx._graph_pickler", "GraphPickler", "hands a captured graph to a codegen worker process"),
    ("torch.fx._graph_pickler", "Options", "lets every aten op through"),
    ("torch._dynamo.utils", "preserve_rng_state",
     "resets the global generator after a compile: inert on a background compile's thread"),
    ("torch._functorch.aot_autograd", "preserve_rng_state", "the same, bound by name in AOTAutograd"),
    # pyro: the ELBOs' particle losses
    ("pyro.infer.elbo", "ELBO._get_traces", "model and guide traces of every particle"),
    ("pyro.infer.trace_elbo", "Trace_ELBO._differentiable_loss_particle", "a particle's loss and surrogate"),
    ("pyro.infer.trace_mean_field_elbo", "TraceMeanField_ELBO._differentiable_loss_particle",
     "a particle's loss and surrogate (analytic KL)"),
    ("pyro.infer.tracegraph_elbo", "TraceGraph_ELBO._loss_and_surrogate_loss", "loss and surrogate"),
    ("pyro.infer.traceenum_elbo", "_compute_dice_elbo", "a particle's Dice ELBO"),
    ("pyro.infer.trace_elbo", "torch_item", "the float loss, recorded instead of read"),
    ("pyro.infer.trace_mean_field_elbo", "torch_item", "the float loss, recorded instead of read"),
    ("pyro.infer.tracegraph_elbo", "torch_item", "the float loss, recorded instead of read"),
    ("pyro.infer.util", "_fulldot", "Dice's expectation, masked with a static shape"),
    ("pyro.infer.util", "Dice.compute_expectation", "where Dice reads its mask"),
    # pyro: state
    ("pyro.ops.integrator", "potential_grad", "where HMC/NUTS take the potential's gradient"),
    ("pyro.infer.mcmc.hmc", "potential_grad", "bound by name in HMC"),
    ("pyro.infer.mcmc.nuts", "potential_grad", "bound by name in NUTS"),
    ("pyro.infer.mcmc.util", "potential_grad", "bound by name in initialize_model"),
    # on instances (checked on one made for the purpose)
    ("pyro.params.param_store.ParamStoreDict", "_params", "the store's tensors, read and written whole"),
    ("torch.optim.Optimizer", "_optimizer_step_pre_hooks", "step hooks the captured update would skip"),
    ("torch.optim.Optimizer", "_optimizer_step_post_hooks", "step hooks the captured update would skip"),
)


def resolve(module: str, path: str) -> Any:
    """``module.path``, or AttributeError naming exactly what is missing."""
    obj: Any = importlib.import_module(module)
    where = module
    for part in path.split("."):
        if not hasattr(obj, part) and isinstance(obj, type) and any(
                part in getattr(klass, "__annotations__", {}) for klass in obj.__mro__):
            return None  # an instance attribute the class declares
        if not hasattr(obj, part):
            raise AttributeError(
                f"{where}.{part} is gone (checked against torch {TORCH_CHECKED}, pyro {PYRO_CHECKED})")
        obj = getattr(obj, part)
        where = f"{where}.{part}"
    return obj
