"""Live progress while a ``%%pyrojit`` cell runs, replaced by the result when it ends.

In Jupyter one output area is updated in place, and becomes the report or the
``--compare`` panel. In terminal IPython it is one line rewritten with ``\\r``
and cleared at the end. Nothing shows for cells shorter than :data:`DELAY`.
"""

from __future__ import annotations

import html
import sys
import time
from typing import Any

from ..records.report import Progress

DELAY = 0.5  # seconds before the first update: short cells show only their result


class LiveProgress:
    def __init__(self, shell: Any) -> None:
        self._in_kernel = getattr(shell, "kernel", None) is not None
        self._start = time.perf_counter()
        self._handle: Any = None
        self._width = 0

    def __call__(self, progress: Progress) -> None:
        if time.perf_counter() - self._start < DELAY:
            return
        text = progress.describe()
        if self._in_kernel:
            from IPython.display import display

            bundle = {"text/plain": text,
                      "text/html": f"<code class='pyrojit-progress'>{html.escape(text)}</code>"}
            if self._handle is None:
                self._handle = display(bundle, raw=True, display_id=True)
            else:
                self._handle.update(bundle, raw=True)
        else:
            sys.stdout.write("\r" + text.ljust(self._width))
            sys.stdout.flush()
            self._width = max(self._width, len(text))

    def finish(self, bundle: dict[str, Any] | None) -> None:
        """Show ``bundle`` (the result) where the progress was; clear it when None."""
        from IPython.display import display

        if self._in_kernel and self._handle is not None:
            self._handle.update(bundle or {"text/plain": ""}, raw=True)
            return
        if self._width:
            sys.stdout.write("\r" + " " * self._width + "\r")
            sys.stdout.flush()
        if bundle is not None:
            display(bundle, raw=True)
