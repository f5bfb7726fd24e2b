"""Guards: a compiled graph is used only while the world it was traced in still holds.

:mod:`.world` finds what a model and guide read from outside their arguments. :mod:`.checks` turns
those reads, and the modes a trace ran under, into one fast check per compiled artifact that says
what changed when it fails. :mod:`.sentinel` checks a compiled loss against eager's now and then,
for what the guards cannot see. Nothing here imports torch or Pyro until called.
"""

from __future__ import annotations

from .checks import CallSite, Change, GuardBuilder, Guards, Recompiles, no_guards, plain_settings
from .sentinel import Finding, Sentinel, agree
from .world import OutsideDraw, Read, Source, World, outside_states, read_world, states_equal

__all__ = [
    "CallSite",
    "Change",
    "Finding",
    "GuardBuilder",
    "Guards",
    "OutsideDraw",
    "Read",
    "Recompiles",
    "Sentinel",
    "Source",
    "World",
    "agree",
    "no_guards",
    "outside_states",
    "plain_settings",
    "read_world",
    "states_equal",
]
