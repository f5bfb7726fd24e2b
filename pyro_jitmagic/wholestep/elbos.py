"""Each supported ELBO's loss and surrogates, computed as its ``loss_and_grads`` does.

Pyro's ``loss_and_grads`` calls ``backward()`` on a surrogate loss (per particle, or once for
``TraceGraph_ELBO``) and returns a float. Here the same helpers build the same surrogates, and the
capture differentiates them in the same order, so gradients accumulate as ``backward()``
accumulates them. The float is the recorder's expression (:class:`~.reads.LossRecorder`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..compat import capture as compat
from .errors import CannotCompile

# Each function: (elbo, model, guide, args, kwargs, recorder) -> (float loss or LossFloat,
# [surrogates that eager calls backward() on, in order])
LossFn = Callable[..., tuple[Any, list[Any]]]


def _trainable(model_trace: Any, guide_trace: Any) -> bool:
    return any(site["type"] == "param" for trace in (model_trace, guide_trace)
               for site in trace.nodes.values())


def _trace_elbo(elbo: Any, model: Any, guide: Any, args: Any, kwargs: Any, recorder: Any) -> Any:
    # pyro/infer/trace_elbo.py, Trace_ELBO.loss_and_grads (TraceMeanField_ELBO inherits it)
    loss: Any = 0.0
    surrogates = []
    for model_trace, guide_trace in compat.get_traces(elbo, model, guide, args, kwargs):
        loss_particle, surrogate = compat.particle_loss(elbo, model_trace, guide_trace)
        loss += loss_particle / elbo.num_particles
        if _trainable(model_trace, guide_trace) and getattr(surrogate, "requires_grad", False):
            surrogates.append(surrogate / elbo.num_particles)
    return loss, surrogates


def _tracegraph_elbo(elbo: Any, model: Any, guide: Any, args: Any, kwargs: Any, recorder: Any) -> Any:
    # pyro/infer/tracegraph_elbo.py, TraceGraph_ELBO.loss_and_grads
    value, surrogate = compat.graph_loss(elbo, model, guide, args, kwargs)
    loss = -recorder.item(value)
    surrogates = [surrogate] if getattr(surrogate, "requires_grad", False) else []
    return loss, surrogates


def _traceenum_elbo(elbo: Any, model: Any, guide: Any, args: Any, kwargs: Any, recorder: Any) -> Any:
    # pyro/infer/traceenum_elbo.py, TraceEnum_ELBO.loss_and_grads
    from pyro.infer.util import is_identically_zero

    value: Any = 0.0
    surrogates = []
    for model_trace, guide_trace in compat.get_traces(elbo, model, guide, args, kwargs):
        elbo_particle = compat.dice_elbo(model_trace, guide_trace)
        if is_identically_zero(elbo_particle):
            continue
        value += recorder.item(elbo_particle) / elbo.num_particles
        if _trainable(model_trace, guide_trace) and elbo_particle.requires_grad:
            surrogates.append(-elbo_particle / elbo.num_particles)
    return -value, surrogates


def loss_function(elbo: Any) -> LossFn:
    """The loss computation for ``elbo``'s exact class; CannotCompile for any other loss."""
    from pyro.infer import (
        ELBO,
        JitTrace_ELBO,
        JitTraceEnum_ELBO,
        JitTraceGraph_ELBO,
        JitTraceMeanField_ELBO,
        Trace_ELBO,
        TraceEnum_ELBO,
        TraceGraph_ELBO,
        TraceMeanField_ELBO,
    )

    table: dict[type, LossFn] = {
        Trace_ELBO: _trace_elbo, JitTrace_ELBO: _trace_elbo,
        TraceMeanField_ELBO: _trace_elbo, JitTraceMeanField_ELBO: _trace_elbo,
        TraceGraph_ELBO: _tracegraph_elbo, JitTraceGraph_ELBO: _tracegraph_elbo,
        TraceEnum_ELBO: _traceenum_elbo, JitTraceEnum_ELBO: _traceenum_elbo,
    }
    fn = table.get(type(elbo))
    if fn is not None:
        return fn
    supported = "Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO and TraceGraph_ELBO"
    if not isinstance(elbo, ELBO):
        raise CannotCompile(f"a custom loss ({type(elbo).__name__}): the whole step compiles {supported}")
    for base in (Trace_ELBO, TraceMeanField_ELBO, TraceEnum_ELBO, TraceGraph_ELBO):
        if isinstance(elbo, base):
            raise CannotCompile(f"{type(elbo).__name__} subclasses {base.__name__}; compiling "
                                f"{base.__name__}'s step would drop its overrides")
    raise CannotCompile(f"{type(elbo).__name__} is not captured: the whole step compiles {supported}")
