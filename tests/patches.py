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
    from pyro.infer.mcmc.util import _PEMaker

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
        "_PEMaker.get_potential_fn": (_PEMaker, "get_potential_fn", _PEMaker.__dict__["get_potential_fn"]),
        "torch executor flags": (None, None, executor_flags()),
        "ELBO loss methods": (None, None, elbo_codes()),
        # its conversions, size methods and operators are wrapped while a trace runs
        "torch.Tensor": (torch.Tensor, None, frozenset(vars(torch.Tensor))),
    }


def assert_nothing_patched(targets):
    for name, (owner, attr, original) in targets.items():
        if name == "warnings.filters":  # a list rebuilt by catch_warnings: compare its content
            assert list(owner.filters) == original, "warning filters were not restored"
            continue
        if name == "torch executor flags":
            assert executor_flags() == original, "the TorchScript executor settings were not restored"
            continue
        if name == "ELBO loss methods":
            now = elbo_codes()
            assert now.keys() == original.keys()
            swapped = [key for key in now if now[key] is not original[key]]
            assert not swapped, f"{', '.join(swapped)} still run other code"
            from pyro_jitmagic.run.direct import calls

            assert "handler" not in vars(calls), "direct ELBO calls still go to a run"
            continue
        if name == "torch.Tensor":
            # (__slotnames__: copyreg's cache, which Python sets the first time a tensor is copied)
            left = (set(vars(owner)) ^ original) - {"__slotnames__"}
            assert not left, f"torch.Tensor keeps attributes a trace set: {left}"
            assert not [k for k, v in vars(owner).items() if hasattr(v, "__pyrojit_original__")]
            continue
        assert vars(owner)[attr] is original, f"{name} is still patched"


def executor_flags():
    """TorchScript's executor settings, which a run sets while it runs (--executor)."""
    from pyro_jitmagic.compat.jit import executor_flags

    return tuple(get() for get, _ in executor_flags())


def elbo_codes():
    """The code of every loss method of the ELBO classes in pyro.infer, which a run swaps while it runs."""
    import pyro.infer
    from pyro.infer import ELBO

    codes = {}
    for name in dir(pyro.infer):
        cls = getattr(pyro.infer, name)
        if isinstance(cls, type) and issubclass(cls, ELBO):
            for method in ("differentiable_loss", "loss", "loss_and_grads"):
                fn = vars(cls).get(method)
                if hasattr(fn, "__code__"):
                    codes[f"{name}.{method}"] = fn.__code__
    return codes
