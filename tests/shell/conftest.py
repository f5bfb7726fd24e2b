from __future__ import annotations

import gc

import pytest


@pytest.fixture
def shell_with():
    """Run a setup cell in the test shell; the names the test binds are removed after it."""
    bound: list[tuple[object, set[str]]] = []

    def setup(shell, source):
        bound.append((shell, set(shell.user_ns)))
        shell.run_cell(source)
        return shell

    yield setup
    for shell, before in bound:
        for name in set(shell.user_ns) - before:
            del shell.user_ns[name]
    gc.collect()
