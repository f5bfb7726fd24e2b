"""Checks that a run left nothing patched."""

from __future__ import annotations


def assert_nothing_patched(targets):
    for name, (owner, attr, original) in targets.items():
        assert vars(owner)[attr] is original, f"{name} is still patched"
