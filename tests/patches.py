"""Checks that a run left nothing patched."""

from __future__ import annotations


def current_targets():
    """The objects a run patches, as they are now: (owner, attribute, value) by name."""
    import importlib.util
    import warnings

    import pyro.ops.jit
    import torch
    from pyro.infer import SVI, Predictive
    from pyro.infer.mcmc import MCMC

    # torch imports sympy on the first step of a process, and sympy adds a
    # warning filter of its own when imported: do it now, so it is in the "before"
    if importlib.util.find_spec("sympy") is not None:
        import sympy  # noqa: F401

    return {
        "warnings.filters": (warnings, "filters", list(warnings.filters)),
        "warnings.showwarning": (warnings, "showwarning", warnings.showwarning),
        "SVI.evaluate_loss": (SVI, "evaluate_loss", SVI.__dict__["evaluate_loss"]),
        "Predictive.forward": (Predictive, "forward", Predictive.__dict__["forward"]),
        "SVI.step": (SVI, "step", SVI.__dict__["step"]),
        "MCMC.run": (MCMC, "run", MCMC.__dict__["run"]),
        "torch.jit.trace": (torch.jit, "trace", torch.jit.trace),
        "CompiledFunction.__call__": (pyro.ops.jit.CompiledFunction, "__call__",
                                      pyro.ops.jit.CompiledFunction.__dict__["__call__"]),
        "torch executor flags": (None, None, executor_flags()),
    }


def assert_nothing_patched(targets):
    for name, (owner, attr, original) in targets.items():
        if name == "warnings.filters":  # a list rebuilt by catch_warnings: compare its content
            assert list(owner.filters) == original, "warning filters were not restored"
            continue
        if name == "torch executor flags":
            assert executor_flags() == original, "the TorchScript executor settings were not restored"
            continue
        assert vars(owner)[attr] is original, f"{name} is still patched"


def executor_flags():
    """TorchScript's executor settings, which a run sets while it runs (--executor)."""
    from pyro_jitmagic._executor import _flags

    return tuple(get() for get, _ in _flags())
