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
        if name == "torch.Tensor":
            assert frozenset(vars(owner)) == original, "torch.Tensor keeps attributes a trace set"
            assert not [k for k, v in vars(owner).items() if hasattr(v, "__pyrojit_original__")]
            continue
        assert vars(owner)[attr] is original, f"{name} is still patched"


def executor_flags():
    """TorchScript's executor settings, which a run sets while it runs (--executor)."""
    from pyro_jitmagic._executor import _flags

    return tuple(get() for get, _ in _flags())
