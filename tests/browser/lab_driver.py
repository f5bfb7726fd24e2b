"""Driving a notebook in JupyterLab with Playwright, and keeping screenshots."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"


def kernel_status(status: str) -> str:
    """The open notebook's kernel indicator showing ``status`` (hidden ones belong to other tabs)."""
    return f".jp-Notebook-ExecutionIndicator[data-status='{status}'] >> visible=true"


def run_notebook_in_lab(page, lab, name: str, cells: list[str], timeout_s: float = 180) -> None:
    """Write a notebook, open it in JupyterLab, run all its cells, wait until the kernel is idle."""
    import nbformat

    base, token, root = lab
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(root / name))
    # reset: the server remembers the open tabs of earlier tests in its workspace
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.wait_for_selector(kernel_status("idle"), timeout=60_000)
    page.locator(".jp-Cell .cm-content").first.click()
    page.keyboard.press("Escape")
    page.locator(".lm-MenuBar-item:has-text('Run')").click()
    page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
    # busy, then idle again once the last cell has run
    page.wait_for_selector(kernel_status("busy"), timeout=30_000)
    page.wait_for_selector(kernel_status("idle"), timeout=timeout_s * 1000)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
