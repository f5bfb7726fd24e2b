"""Driving a notebook in JupyterLab with Playwright, and keeping screenshots."""

from __future__ import annotations

from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"
#: the open notebook's code cells' prompts, as a JavaScript expression (hidden ones are other tabs')
_PROMPTS = ("[...document.querySelectorAll('.jp-Notebook .jp-CodeCell .jp-InputPrompt')]"
            ".filter(p => p.offsetParent !== null).map(p => p.textContent.trim())")


def kernel_status(status: str) -> str:
    """The open notebook's kernel indicator showing ``status`` (hidden ones belong to other tabs)."""
    return f".jp-Notebook-ExecutionIndicator[data-status='{status}'] >> visible=true"


def run_notebook_in_lab(page, lab, name: str, cells: list[str], timeout_s: float = 180) -> None:
    """Write a notebook, open it in JupyterLab, run all its cells, wait until the kernel is idle."""
    import nbformat
    from playwright.sync_api import TimeoutError as PlaywrightTimeout

    base, token, root = lab
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell(src) for src in cells]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(root / name))
    # reset: the server remembers the open tabs of earlier tests in its workspace
    page.goto(f"{base}/lab/tree/{name}?token={token}&reset")
    page.wait_for_selector(kernel_status("idle"), timeout=60_000)
    # Each cell's prompt says where it is: "[ ]:" never run, "[*]:" queued or running, "[3]:" done.
    # (The kernel's busy state can come and go between two polls on a loaded machine; a count stays.)
    for _ in range(2):  # a click that lands before the notebook is ready starts nothing: click again
        page.locator(".jp-Cell .cm-content").first.click()
        page.keyboard.press("Escape")
        page.locator(".lm-MenuBar-item:has-text('Run')").click()
        page.locator(".lm-Menu-item[data-command='runmenu:run-all']").click()
        try:
            page.wait_for_function(f"() => {_PROMPTS}.some(p => p !== '[ ]:')", timeout=30_000)
            break
        except PlaywrightTimeout:
            continue
    page.wait_for_function(f"n => {_PROMPTS}.length === n && {_PROMPTS}.every(p => /^\\[\\d+\\]:$/.test(p))",
                           arg=len(cells), timeout=timeout_s * 1000)
    page.wait_for_selector(kernel_status("idle"), timeout=60_000)


def screenshot(page, name: str) -> Path:
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    page.screenshot(path=str(path), full_page=True)
    return path
