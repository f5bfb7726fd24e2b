"""What earlier runs left on disk: which graphs inductor's cache holds, and how long each SVI run lasted.

The climb decides better when it knows the future, and two facts outlive a process. A graph that
inductor's disk cache holds compiles in a fraction of the time, so each graph's digest is written
down once compiled. A cell run again usually runs as many steps as last time, so each signature's
step count is written down, keyed on model, guide, ELBO, optimizer and signature (never the data).
Both live in one small JSON file beside inductor's cache. A file that cannot be read or written is
ignored: it is a hint, never a source of truth.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from pathlib import Path
from typing import Any

_FILE = "pyro_jitmagic_runs.json"
_LOCK = threading.Lock()  # the background codegen thread writes too
#: Step counts kept, newest last; older ones are forgotten.
MAX_RUNS = 512


def default_path() -> Path | None:
    """The file beside inductor's on-disk cache (found without importing inductor)."""
    from ..compat.capture import inductor_cache_dir

    return Path(inductor_cache_dir()) / _FILE


def graph_digest(graph: Any, example_inputs: list[Any]) -> str:
    """A captured graph's identity, as inductor's cache sees it: its code, each input's shape,
    strides and dtype, and the torch release."""
    import torch

    h = hashlib.sha256(graph.code.encode())
    for t in example_inputs:
        if isinstance(t, torch.Tensor):
            h.update(f"{tuple(t.shape)}{t.stride()}{t.dtype}{t.device.type}".encode())
        else:
            h.update(repr(t).encode())
    h.update(torch.__version__.encode())
    return h.hexdigest()[:32]


def code_digest(fn: Any) -> str:
    """A model's or guide's identity across processes: its qualified name and its code (an
    AutoGuide: its class and its model's)."""
    parts: list[str] = []
    seen = 0
    while fn is not None and seen < 4:
        seen += 1
        code = getattr(fn, "__code__", None) or getattr(getattr(fn, "forward", None), "__code__", None)
        parts.append(f"{type(fn).__module__}.{getattr(fn, '__qualname__', type(fn).__qualname__)}")
        if code is not None:
            parts.append(_code_text(code)[:4000])
        fn = getattr(fn, "model", None)  # an AutoGuide's model, a block handler's function
    return hashlib.sha256("|".join(parts).encode()).hexdigest()[:32]


def _code_text(code: Any) -> str:
    """A code object's bytecode, the names and constants it uses, nested functions' by their own (a
    code object's repr holds its address and the cell's file name, which change each time the cell
    runs; the names tell ``dist.Normal`` from ``dist.Cauchy``)."""
    consts = [_code_text(c) if hasattr(c, "co_code") else repr(c) for c in code.co_consts]
    return code.co_code.hex() + repr(code.co_names) + "(" + ",".join(consts) + ")"


_SHARED: dict[Path, RunMemory] = {}


def shared() -> RunMemory | None:
    """The memory beside inductor's cache now (one per cache directory in a process); None without
    inductor."""
    setting = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    # (by the setting itself while it names a folder absolutely: the climb asks twice a cell, and
    # making the path each time was part of every cell's cost)
    known = _BY_SETTING.get(setting)
    if known is not None and (setting is None or os.path.isabs(setting)):
        return known
    path = default_path()
    if path is None:
        return None
    with _LOCK:
        memory = _SHARED.get(path)
        if memory is None:
            memory = _SHARED[path] = RunMemory(path)
        _BY_SETTING[setting] = memory
        return memory


_BY_SETTING: dict[str | None, RunMemory] = {}


class RunMemory:
    """The file of graphs inductor holds and of step counts, read once and written on change.

    Parameters
    ----------
    path : Path, optional
        Where the file lives (by default beside inductor's cache; None: in memory only).
    """

    def __init__(self, path: Path | str | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._graphs: set[str] = set()
        self._runs: dict[str, dict[str, Any]] = {}
        self._read()

    def _read(self) -> None:
        if self.path is None or not self.path.exists():
            return
        try:
            data = json.loads(self.path.read_text())
            self._graphs = {str(g) for g in data.get("graphs", [])}
            self._runs = {str(k): {"steps": int(v["steps"]), "graph": v.get("graph"),
                                   "checks": _checks(v.get("checks"))}
                          for k, v in data.get("runs", {}).items()}
        except (OSError, ValueError, TypeError, AttributeError):
            self._graphs, self._runs = set(), {}  # unreadable: start afresh

    def _write(self) -> None:
        if self.path is None:
            return
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            temporary = self.path.with_suffix(f".{os.getpid()}.tmp")
            temporary.write_text(json.dumps({"graphs": sorted(self._graphs), "runs": self._runs}))
            os.replace(temporary, self.path)
        except OSError:
            pass  # a read-only cache: the hints stay in this process

    def inductor_holds(self, digest: str | None) -> bool:
        """True when inductor compiled this graph before (its disk cache should serve it)."""
        return digest is not None and digest in self._graphs

    def compiled(self, digest: str) -> None:
        """Inductor compiled this graph: its disk cache holds it now."""
        with _LOCK:
            if digest not in self._graphs:
                self._graphs.add(digest)
                self._write()

    def forget_graph(self, digest: str) -> None:
        """The graph was not served from the cache after all (the cache was cleared, or refused it)."""
        with _LOCK:
            if digest in self._graphs:
                self._graphs.discard(digest)
                self._write()

    def steps(self, key: str) -> int | None:
        """How many steps the last run of ``key`` took, or None when none is known."""
        run = self._runs.get(key)
        return None if run is None else run["steps"]

    def graph(self, key: str) -> str | None:
        """The digest of the graph the last run of ``key`` captured, or None."""
        run = self._runs.get(key)
        return None if run is None else run.get("graph")

    def failed_checks(self, key: str) -> tuple[float, float | None] | None:
        """In the last run of ``key`` whose graph's checks of values failed: the share of its calls
        that failed (each ran again eager: a branch on a random draw fails half of them), and what a
        call of the graph cost on average, over a step on the tiers below (None where unmeasured)."""
        run = self._runs.get(key)
        return None if run is None else run.get("checks")

    def ran(self, counts: dict[str, tuple[int, str | None, tuple[float, float | None] | None]]) -> None:
        """Runs ended: each key's step count, the digest of the graph it captured (or None), and its
        graph's failed checks (:meth:`failed_checks`; None where there were too few calls to say)."""
        if not counts:
            return
        with _LOCK:
            changed = False
            for key, (steps, graph, checks) in counts.items():
                old = self._runs.pop(key, {})
                new = {"steps": steps, "graph": graph or old.get("graph"),
                       "checks": tuple(checks) if checks is not None else old.get("checks")}
                changed = changed or new != old
                self._runs[key] = new  # (the latest last: the oldest go first past MAX_RUNS)
            while len(self._runs) > MAX_RUNS:
                self._runs.pop(next(iter(self._runs)))
            if changed:  # (a cell run again as long as before: the file says it already, and a
                self._write()  # write was part of every cell's cost: docs/real-models.md)


def _checks(value: Any) -> tuple[float, float | None] | None:
    """Failed checks as read from the file: a share from 0 to 1 and a positive cost or null, else None
    (a hint, never an error)."""
    if not isinstance(value, list) or len(value) != 2:
        return None
    share, cost = value
    if not isinstance(share, (int, float)) or not 0.0 <= share <= 1.0:
        return None
    if cost is not None and (not isinstance(cost, (int, float)) or cost <= 0.0):
        return None
    return float(share), None if cost is None else float(cost)
