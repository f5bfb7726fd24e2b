"""Why a step or potential cannot be compiled whole."""

from __future__ import annotations


class CannotCompile(Exception):
    """This SVI step (or HMC/NUTS potential) cannot be captured as one graph.

    The caller runs it as before (Pyro's JIT or eager) and reports :attr:`reason`,
    which says what stopped the capture and, where there is one, what to change.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class NeedsEagerStep(CannotCompile):
    """Not yet: Pyro creates something on the first step that the capture needs.

    An AutoGuide's prototype, a guessed ``max_plate_nesting``, and each torch
    optimizer's state are made lazily by the first ``svi.step``. Run that step
    eagerly (it is then exactly eager's), and compile from the next one.
    """


class Unguardable(CannotCompile):
    """No compiled graph can run this step as eager does, on any tier.

    The step reads something a graph would freeze and no guard can check: a random draw
    outside torch (numpy's or Python's stream), a traced tensor read as a float, a numpy
    array passed as an argument. Pyro's JIT would freeze it too: the step runs eager, and
    :attr:`reason` names the line.
    """
