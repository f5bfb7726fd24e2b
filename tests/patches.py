"""Checks that a run left nothing patched."""

from __future__ import annotations


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
            from pyro_jitmagic._direct import calls

            assert "handler" not in vars(calls), "direct ELBO calls still go to a run"
            continue
        assert vars(owner)[attr] is original, f"{name} is still patched"


def executor_flags():
    """TorchScript's executor settings, which a run sets while it runs (--executor)."""
    from pyro_jitmagic._executor import _flags

    return tuple(get() for get, _ in _flags())


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
