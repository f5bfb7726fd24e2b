"""Running a cell in the test shell the way a user sees it: its result and what it displayed."""

from __future__ import annotations

from typing import Any

from IPython.utils.capture import capture_output


def run(ip: Any, cell: str) -> tuple[Any, Any]:
    """(ExecutionResult, captured stdout/stderr/display outputs) of one cell."""
    with capture_output() as captured:
        result = ip.run_cell(cell)
    return result, captured
