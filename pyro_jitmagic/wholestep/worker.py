"""Inductor's cold codegen in a worker process, so that the cell's steps keep their interpreter.

A cold inductor compile is mostly Python, seconds to minutes of it; on a thread it would hold the
GIL and slow the steps beside it to a crawl. So a worker process compiles the captured graph into
inductor's disk cache, and the cell's process compiles it again from there. The worker gets the
graph and its inputs' layouts, never their values, and the same thread count, so both compute the
same cache key. A worker that fails costs only its time. It runs as ``python -m
pyro_jitmagic.wholestep.worker JOB`` (see :func:`compile_ahead`).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class Ahead:
    """What the worker did: whether inductor's disk cache already held the graph, and why it failed
    (None when it compiled)."""

    cache: Literal["cold", "warm"] | None = None
    error: str | None = None


@dataclass(frozen=True)
class Layout:
    """An example input as inductor compiles for it: everything but its values."""

    shape: tuple[int, ...]
    stride: tuple[int, ...]
    dtype: Any
    device: str
    # a param's example input is a Parameter that requires grad and holds a grad: the worker's
    # inputs are made alike, so that both processes compile (and key their cache by) the same
    requires_grad: bool = False
    parameter: bool = False
    grad: Layout | None = None

    @classmethod
    def of(cls, t: Any) -> Layout:
        import torch

        grad = cls.of(t.grad) if t.grad is not None else None
        return cls(tuple(t.shape), tuple(t.stride()), t.dtype, str(t.device), t.requires_grad,
                   isinstance(t, torch.nn.Parameter), grad)

    def empty(self) -> Any:
        import torch

        t = torch.empty_strided(self.shape, self.stride, dtype=self.dtype, device=self.device)
        t = (torch.nn.Parameter(t, self.requires_grad) if self.parameter
             else t.requires_grad_(self.requires_grad))
        if self.grad is not None:
            t.grad = self.grad.empty()
        return t


def compile_ahead(graph: Any, example_inputs: list[Any], timeout: float | None = None) -> Ahead:
    """Compile ``graph`` for inputs laid out as ``example_inputs`` in a worker process, into
    inductor's disk cache; blocks (without the GIL) until the worker ends."""
    import torch

    from ..compat import capture as compat

    layouts = [Layout.of(t) if isinstance(t, torch.Tensor) else t for t in example_inputs]
    with tempfile.TemporaryDirectory(prefix="pyrojit-codegen-") as folder:
        job = Path(folder) / "job.pkl"
        try:
            with open(job, "wb") as f:
                pickle.dump({"graph": compat.dump_graph(graph), "inputs": layouts,
                             "threads": torch.get_num_threads()}, f)
        except Exception as exc:  # a constant that does not pickle: compile in this process
            return Ahead(error=f"cannot hand the graph over: {exc}")
        env = dict(os.environ)
        # the package as this process imports it, wherever it was installed from
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
        # one compiling process, not a pool of them: the cell's steps keep the other cores
        # (the thread count is not part of inductor's cache key)
        env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
        try:
            done = subprocess.run([sys.executable, "-m", "pyro_jitmagic.wholestep.worker", str(job)],
                                  env=env, capture_output=True, text=True, timeout=timeout,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return Ahead(error=f"the worker did not finish: {exc}")
    last = done.stdout.strip().splitlines()[-1:] or [""]
    try:
        said = json.loads(last[0])
    except ValueError:
        tail = done.stderr.strip().splitlines()[-1:] or [f"exit status {done.returncode}"]
        return Ahead(error=f"the worker failed: {tail[0]}")
    if said.get("error"):
        return Ahead(error=said["error"])
    return Ahead(cache=said.get("cache"))


def _watch_parent(parent: int) -> None:
    """End the worker when the process that started it is gone (a restarted kernel)."""
    while True:
        time.sleep(1.0)
        if os.getppid() != parent:
            os._exit(3)


def main(argv: list[str]) -> int:
    threading.Thread(target=_watch_parent, args=(os.getppid(),), daemon=True).start()
    if hasattr(os, "nice"):
        os.nice(10)  # a background compile: the cell's steps come first (the C++ compiler inherits it)
    import torch

    from ..compat import capture as compat

    with open(argv[0], "rb") as f:
        job = pickle.load(f)
    graph = compat.load_graph(job["graph"])

    torch.set_num_threads(job["threads"])  # inductor's kernels, and so its cache key, depend on it
    inputs = [x.empty() if isinstance(x, Layout) else x for x in job["inputs"]]
    try:
        hits, misses, _ = compat.fx_cache_counts()
        with torch.no_grad():
            compat.inductor_compile(graph, inputs)
        new_hits, new_misses, _ = compat.fx_cache_counts()
    except Exception as exc:
        print(json.dumps({"error": f"inductor failed: {type(exc).__name__}: {exc}"}))
        return 1
    cache = "cold" if new_misses > misses else "warm" if new_hits > hits else None
    print(json.dumps({"cache": cache}))
    return 0


if __name__ == "__main__":
    # run as the package's module, not as __main__, so the job's Layouts unpickle as these ones
    from pyro_jitmagic.wholestep.worker import main as worker_main

    sys.exit(worker_main(sys.argv[1:]))
