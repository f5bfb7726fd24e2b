"""What one run shares with the code that intercepts and compiles for it: a :class:`RunContext`."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..options import RunOptions
from ..patch import ORIGINAL_ATTR, PatchSet, unwrap
from ..policy.auto import AutoPolicy
from .jit_warnings import WarningCapture
from .naming import name_in
from .recorder import Recorder
from .session import Session

if TYPE_CHECKING:
    from .route import Compiler


@dataclass
class RunContext:
    """One run's options, session, records and patches, as its wrappers and compiler see them.

    ``active`` is False once the run has ended: a wrapper can outlive its run when
    Pyro keeps a reference to it, and then calls straight through.
    """

    options: RunOptions
    session: Session
    recorder: Recorder
    capture: WarningCapture
    names: Mapping[str, Any] | None = None
    # --auto: the policy that decides (the session's, or one given); None without --auto
    auto: AutoPolicy | None = None
    # each SVI and MCMC, first met: --compare saves its state
    on_first_use: Callable[[Any], None] | None = None
    patches: PatchSet = field(default_factory=PatchSet)
    active: bool = False
    # inside SVI.evaluate_loss or Predictive: ELBO losses run as written there
    as_written: int = 0
    compiler: Compiler | None = None
    # --auto: how many steps the cell's loops make each SVI (by name) take, read from its text
    step_counts: Mapping[str, int] = field(default_factory=dict)
    # what ended the run, known as its patches are restored (None: it ran to the end)
    ended_by: BaseException | None = None

    def name_of(self, obj: Any, fallback: str) -> str:
        """``obj`` as the user's namespace names it, else ``fallback``."""
        return name_in(self.names, obj) or fallback

    def wrap(self, owner: Any, name: str, make: Callable[[Callable[..., Any]], Callable[..., Any]],
             patches: PatchSet | None = None) -> None:
        """Replace ``owner.name`` by ``make(original)`` until the run ends (or ``patches`` are restored)."""
        original = unwrap(getattr(owner, name))
        wrapper = make(original)
        setattr(wrapper, ORIGINAL_ATTR, original)
        wrapper.__name__ = getattr(original, "__name__", name)
        wrapper.__doc__ = getattr(original, "__doc__", None)
        (patches or self.patches).set(owner, name, wrapper)
