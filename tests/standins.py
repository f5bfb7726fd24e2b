"""Stand-ins for inductor's background codegen and for the memory of earlier runs, for tests that
decide when inductor's kernels arrive and whether its disk cache holds a graph."""

from __future__ import annotations

import threading
from typing import ClassVar

from pyro_jitmagic.wholestep import backends

TORCHSCRIPT = backends.torchscript  # (before any test counts the builds)


class Loading:
    """Stands in for inductor's background load: done when the test says, with what it says."""

    started: ClassVar[list[Loading]] = []

    def __init__(self, graph, example_inputs, on_done=None, delay=0.0, start=True):
        self.graph, self.example_inputs = graph, example_inputs
        self.result = self.error = None
        self.done = threading.Event()
        self.busy = threading.Event()  # (never: the test decides when the kernels arrive)
        Loading.started.append(self)

    def start(self):
        pass

    def arrive(self):
        kernels = TORCHSCRIPT(self.graph, self.example_inputs)
        self.result = backends.Codegen(run=kernels.run, backend="inductor", seconds=0.4, kernels=3,
                                       cache="warm")
        self.done.set()

    def fail(self):
        self.error = RuntimeError("no kernels")
        self.done.set()

    def wait(self, timeout=None):
        return self.done.wait(timeout)


class Holds:
    """A memory of earlier runs whose inductor cache holds every graph (or none)."""

    def __init__(self, holds=True):
        self.holds = holds

    def inductor_holds(self, digest):
        return self.holds and digest is not None

    def steps(self, key):
        return None

    def failed_checks(self, key):
        return None

    def graph(self, key):
        return "a graph" if self.holds else None

    def compiled(self, digest):
        pass

    def ran(self, counts):
        pass
