from __future__ import annotations

import gc
import os
import signal
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(autouse=True)
def fresh_pyro():
    """Each test starts from an empty param store and a fixed seed."""
    import pyro

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    yield
    pyro.clear_param_store()


@pytest.fixture(autouse=True)
def fresh_run_memory(tmp_path, monkeypatch):
    """Each test starts with no memory of earlier runs (what --auto reads beside inductor's cache)."""
    from pyro_jitmagic.wholestep import memory

    monkeypatch.setattr(memory, "default_path", lambda: tmp_path / "pyro_jitmagic_runs.json")


@pytest.fixture
def patched_targets():
    """The objects a run patches, as they are before the test."""
    from patches import current_targets

    return current_targets()


@pytest.fixture
def ctrl_c():
    """``ctrl_c(seconds)`` sends this process a real SIGINT from another thread, as a user's Ctrl-C.

    A test run started in the background of a shell inherits SIGINT ignored, and Python then never
    raises KeyboardInterrupt: the handler an interactive Python has is put in place for the test.
    """
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timers: list[threading.Timer] = []

    def after(seconds: float) -> threading.Timer:
        timer = threading.Timer(seconds, os.kill, (os.getpid(), signal.SIGINT))
        timers.append(timer)
        timer.start()
        return timer

    yield after
    for timer in timers:
        timer.cancel()
        timer.join()
    signal.signal(signal.SIGINT, previous)


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


@pytest.fixture(scope="session")
def shell():
    """One in-process IPython shell with the extension loaded."""
    from IPython.testing.globalipapp import start_ipython

    ip = start_ipython()
    ip.run_line_magic("load_ext", "pyro_jitmagic")
    return ip


class TwinRunner:
    """Runs code under ``pyro_jitmagic.compiled()``: the plain-Python twin."""

    name = "twin"

    def __init__(self):
        self.ns = {}

    def run(self, code, *, warmup=True, warnings="capture", auto=False, executor="adaptive", backend="pyro"):
        from pyro_jitmagic import compiled

        run = compiled(warmup=warmup, warnings=warnings, names=self.ns, auto=auto, executor=executor,
                       backend=backend)
        error = None
        try:
            with run:
                exec(compile(code, "<cell>", "exec"), self.ns)
        except BaseException as exc:  # the test inspects it
            error = exc
        return run.report, error

    def compare(self, code, seed=None, backend="pyro"):
        from pyro_jitmagic import compare

        def fn():
            exec(compile(code, "<cell>", "exec"), self.ns)

        try:
            return compare(fn, namespace=self.ns, seed=seed, backend=backend), None
        except BaseException as exc:  # the test inspects it
            return None, exc

    def close(self):
        pass


class MagicRunner:
    """Runs code as a ``%%pyrojit`` cell in the in-process IPython shell."""

    name = "magic"

    def __init__(self, shell):
        self.shell = shell
        self.ns = shell.user_ns
        self._before = set(shell.user_ns)

    def run(self, code, *, warmup=True, warnings="capture", auto=False, executor="adaptive", backend="pyro"):
        flags = f"-q -o _test_report --backend {backend}"
        if not warmup:
            flags += " --no-warmup"
        if auto:
            flags += " --auto"
        flags += f" --warnings {warnings} --executor {executor}"
        result = self.shell.run_cell(f"%%pyrojit {flags}\n{code}")
        report = self.ns.pop("_test_report", None)
        return report, result.error_in_exec

    def compare(self, code, seed=None, backend="pyro"):
        line = f"%%pyrojit --compare -q -o _test_comparison --backend {backend}" + (
            f" --seed {seed}" if seed is not None else "")
        result = self.shell.run_cell(f"{line}\n{code}")
        return self.ns.pop("_test_comparison", None), result.error_in_exec

    def close(self):
        for name in set(self.ns) - self._before:
            del self.ns[name]


@pytest.fixture
def auto_policy():
    """Give the session a fresh --auto policy, to be set up by the test; the old one after."""
    from pyro_jitmagic import AutoPolicy
    from pyro_jitmagic.run.process import PROCESS

    session = PROCESS.session  # the twin's default, and the magic's (PyroJitMagics.session)
    old = session.auto

    def install(**settings):
        session.auto = AutoPolicy(**settings)
        return session.auto

    yield install
    session.auto = old


class FakeClock:
    """``time`` for a run's recorder: ``perf_counter`` moves only when the test says so
    (and a microsecond a reading, so that no two readings are equal)."""

    def __init__(self):
        import time

        self.now = 1000.0
        self.time = time.time  # wall-clock dates ("last hit") stay real

    def perf_counter(self):
        self.now += 1e-6
        return self.now

    def advance(self, seconds):
        self.now += seconds


@pytest.fixture
def fake_clock(monkeypatch):
    """Step times, compile costs and every decision taken from them, independent of the machine."""
    from pyro_jitmagic.run import recorder

    clock = FakeClock()
    monkeypatch.setattr(recorder, "time", clock)  # every step, compile and trace of a run is timed by it
    return clock


@pytest.fixture(params=["twin", "magic"])
def runner(request):
    """Each behaviour through both the magic and its twin."""
    r = TwinRunner() if request.param == "twin" else MagicRunner(request.getfixturevalue("shell"))
    yield r
    r.close()
