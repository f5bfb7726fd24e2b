"""Run a trace on a fresh, shallow Python stack.

torch's tracer records the Python stack for every operation it traces, so tracing costs more the
deeper the stack (docs/benchmarks.md, SVI), and a ``%%pyrojit`` cell runs deep in IPython's
machinery. So :func:`call_shallow` runs ``torch.jit.trace`` on a new thread, whose stack starts
empty, while the caller waits; the graph is the same. torch's grad and inference modes are per
thread, so they go with it. An interrupt during the trace is raised once it is done, so that nothing
changes the param store after the cell has stopped.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from types import FrameType
from typing import Any

_local = threading.local()


def caller_frame() -> FrameType | None:
    """On a thread started by :func:`call_shallow`: the frame that called it (else None)."""
    return getattr(_local, "caller", None)


def call_shallow(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """``fn(*args, **kwargs)`` on a new thread with an empty stack; its result or its exception."""
    __tracebackhide__ = True
    import torch

    outcome: list[Any] = []
    caller = sys._getframe(1)
    grad, inference = torch.is_grad_enabled(), torch.is_inference_mode_enabled()
    # Waited on rather than Thread.join: a join cut short by Ctrl-C can report
    # the thread stopped while it still runs (CPython gh-90882).
    done = threading.Event()

    def work() -> None:
        __tracebackhide__ = True
        _local.caller = caller
        try:
            with torch.inference_mode(inference), torch.set_grad_enabled(grad):
                outcome.append((True, fn(*args, **kwargs)))
        except BaseException as exc:  # handed to the calling thread
            outcome.append((False, exc))
        finally:
            done.set()

    worker = threading.Thread(target=work, name="pyrojit-trace", daemon=True)
    interrupted: BaseException | None = None
    # Ctrl-C may land anywhere from here on, even as the thread starts or exits: each wait is
    # inside the try, so the cell never stops while the trace still runs (its Pyro handlers sit
    # on Pyro's process-wide stack until it ends)
    while not done.is_set():
        try:
            if worker.ident is None:
                worker.start()
            done.wait()
        except KeyboardInterrupt as exc:  # let the trace finish, then stop
            interrupted = exc
    while worker.is_alive():  # it has nothing left to do but exit
        try:
            worker.join()
        except KeyboardInterrupt as exc:
            interrupted = exc
    if interrupted is not None:
        raise interrupted
    ok, value = outcome[0]
    if not ok:
        raise value
    return value
