"""Checks that a run left nothing patched."""

from __future__ import annotations


def assert_nothing_patched(targets):
    for name, (owner, attr, original) in targets.items():
        if name == "warnings.filters":  # a list rebuilt by catch_warnings: compare its content
            assert list(owner.filters) == original, "warning filters were not restored"
            continue
        assert vars(owner)[attr] is original, f"{name} is still patched"
