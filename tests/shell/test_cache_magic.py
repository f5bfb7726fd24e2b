"""``%pyrojit_cache`` driven through an in-process IPython shell."""

from __future__ import annotations

import pytest
from cells import run

SETUP = """
import pyro, torch
from pyro.infer import SVI, Trace_ELBO, JitTrace_ELBO
from pyro.optim import Adam
import models
data = models.data()
svi = SVI(models.gaussian, models.gaussian_guide, Adam({"lr": 0.01}), Trace_ELBO())
hand = SVI(models.shifted, models.gaussian_guide, Adam({"lr": 0.01}), JitTrace_ELBO())
"""


@pytest.fixture
def ip(shell, shell_with):
    return shell_with(shell, SETUP)




def test_the_inspector_lists_magic_and_hand_built_functions(ip):
    run(ip, "%%pyrojit --backend pyro -q\nfor _ in range(3):\n    svi.step(data)")
    run(ip, "hand.step(data)")  # outside any %%pyrojit cell
    result, captured = run(ip, "%pyrojit_cache -o snap")

    assert result.success
    (output,) = captured.outputs
    assert {"text/plain", "text/html", "application/vnd.jupyter.widget-view+json"} <= set(output.data)
    snap = ip.user_ns["snap"]
    owners = {f.owner.split(" ")[0]: f for f in snap.functions}
    assert owners["svi"].entries[0].hits == 3
    assert owners["hand"].entries[0].hits is None  # compiled outside: unknown, not zero
    assert "hand (JitTrace_ELBO)" in output.data["text/plain"]
    assert "<details><summary>traced code</summary>" in output.data["text/html"]


def test_clear_one_owner_then_the_next_cell_recompiles(ip):
    run(ip, "%%pyrojit --backend pyro -q\nsvi.step(data)\nhand.step(data)")
    result, _ = run(ip, "%pyrojit_cache -q --clear svi -o snap")

    assert result.success
    assert [f.owner.split(" ")[0] for f in ip.user_ns["snap"].functions
            if f.owner.split(" ")[0] in ("svi", "hand")] == ["hand"]
    run(ip, "%%pyrojit --backend pyro -q -o report\nsvi.step(data)")
    assert ip.user_ns["report"].compile_count == 1


def test_unknown_owner_is_a_one_line_usage_error(ip):
    run(ip, "%%pyrojit --backend pyro -q\nsvi.step(data)")
    result, captured = run(ip, "%pyrojit_cache --clear nobody")
    assert not result.success
    text = (captured.stdout + captured.stderr).strip()
    assert text.startswith("UsageError: no compiled function is owned by 'nobody'; owners:")
    assert "\n" not in text


def test_a_displayed_inspector_refreshes_after_each_pyrojit_cell(ip):
    magics = ip.magics_manager.registry["PyroJitMagics"]
    run(ip, "%pyrojit_cache")
    view = magics._cache_views[-1]
    before = {f.owner.split(" ")[0] for f in view.snapshot.functions}
    run(ip, "%%pyrojit --backend pyro -q\n"
            "fresh = SVI(models.shifted, models.gaussian_guide, Adam({'lr': 0.01}), "
            "Trace_ELBO())\nfresh.step(data)")
    after = {f.owner.split(" ")[0] for f in view.snapshot.functions}
    assert "fresh" in after - before


def test_max_entries_flag(ip):
    result, captured = run(ip, "%%pyrojit --backend pyro --max-entries 0\nsvi.step(data)")
    assert not result.success
    assert "--max-entries needs a positive number" in captured.stdout + captured.stderr


def test_displayed_panels_do_not_keep_traces_alive(ip):
    import gc
    import weakref

    run(ip, "%pyrojit_cache")  # a live inspector, with its buttons
    result, _ = run(ip, "%%pyrojit --backend pyro --compare\n"
                        "local_svi = SVI(models.gaussian, models.gaussian_guide, "
                        "Adam({'lr': 0.01}), Trace_ELBO())\nlocal_svi.step(data)")
    assert result.success
    user_elbo = ip.user_ns["local_svi"].loss_and_grads.__self__
    (companion,) = [c for e, _, _, c in ip.magics_manager.registry["PyroJitMagics"].session.companions()
                    if e is user_elbo]
    traced = weakref.ref(companion)
    del companion, user_elbo
    del ip.user_ns["local_svi"]
    run(ip, "%%pyrojit --backend pyro -q\nsvi.step(data)")  # the live inspector refreshes
    gc.collect()
    assert traced() is None
