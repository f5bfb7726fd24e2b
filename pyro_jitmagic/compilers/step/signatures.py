"""One SVI call signature's compiled whole steps in one run, and which of them serves a call.

A signature may hold several compiled steps, one per world it was captured in (a global
changed between cells gives a second; the first serves again if it changes back), each
checked by its own guards. A call runs on the first that accepts it; when none does, the
route compiles another or, once the signature runs eager for the rest of the run (it kept
compiling again, the sentinel found it wrong, it reads what no graph can hold), runs eager.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from ...guards import Recompiles
from ...run.whole_steps import WholeStepEntry


@dataclass
class SignatureRun:
    """One signature of one SVI in one run: its compiled steps, what made it compile again, and
    why it runs eager for the rest of the run (empty while it does not)."""

    base: Any  # every entry's key in the SVI's store is (base, n)
    described: str  # the signature in words
    store: dict[Any, WholeStepEntry]
    entries: list[WholeStepEntry] = field(default_factory=list)
    recompiles: Recompiles = field(default_factory=Recompiles)
    eager_why: str = ""

    @classmethod
    def of(cls, store: dict[Any, WholeStepEntry], base: Any, described: str) -> SignatureRun:
        """This run's view of the signature: the entries earlier cells compiled for it."""
        entries = [e for k, e in store.items() if isinstance(k, tuple) and len(k) == 2 and k[0] == base]
        return cls(base, described, store, entries)

    def serve(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[WholeStepEntry | None, Any]:
        """(the entry that ran the call, its float loss); else (the entry, its Declined) when the
        decline is about this call or the sentinel's, or (None, the last Declined, or None when there
        is no entry) when no entry fits the world any more."""
        declined = None
        stale = None
        for entry in self.entries:
            result = entry.compiled.run(*args, **kwargs)
            if type(result) is float:
                entry.last_hit = time.time()
                return entry, result
            if result.transient or result.finding is not None:
                return entry, result
            if result.stale:
                stale = entry
            declined = declined or result  # (the newest entry's: what changed since the latest world)
        if stale is not None:
            self.drop(stale)
        return None, declined

    def add(self, entry: WholeStepEntry) -> None:
        n = max((k[1] for k in self.store if isinstance(k, tuple) and len(k) == 2 and k[0] == self.base),
                default=-1) + 1
        self.store[(self.base, n)] = entry
        self.entries.insert(0, entry)  # the world now is the one it was compiled for

    def drop(self, entry: WholeStepEntry) -> None:
        """A compiled step that can never run again (its SVI changed): out of the store too."""
        self.entries.remove(entry)
        for key, held in list(self.store.items()):
            if held is entry:
                del self.store[key]
