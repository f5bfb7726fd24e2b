"""Every private torch and Pyro name the whole-step compiler uses still exists: an upgrade that moves
one fails here, naming it, instead of deep inside a capture."""

from __future__ import annotations

import pytest

from pyro_jitmagic.wholestep import compat


@pytest.mark.parametrize(("module", "path", "why"), compat.PRIVATE_NAMES,
                         ids=[f"{m}.{p}" for m, p, _ in compat.PRIVATE_NAMES])
def test_private_name_exists(module, path, why):
    try:
        compat.resolve(module, path)
    except (AttributeError, ImportError) as exc:
        pytest.fail(f"{module}.{path} ({why}) is gone: {exc}. Checked against torch "
                    f"{compat.TORCH_CHECKED} and pyro {compat.PYRO_CHECKED}")


@pytest.mark.parametrize(("owner", "obj", "attr"), compat.instance_names(),
                         ids=[f"{o}.{a}" for o, _, a in compat.instance_names()])
def test_private_instance_attribute_exists(owner, obj, attr):
    assert hasattr(obj, attr), (f"{owner} instances no longer have {attr} (checked against torch "
                                f"{compat.TORCH_CHECKED} and pyro {compat.PYRO_CHECKED})")


def test_resolve_names_what_is_missing():
    with pytest.raises(AttributeError, match=r"pyro\.infer\.util\._no_such_helper is gone"):
        compat.resolve("pyro.infer.util", "_no_such_helper")


def test_versions_checked_are_the_ones_installed():
    import pyro
    import torch

    # when these differ, read the names above against the new versions and update the two constants
    assert torch.__version__.split("+")[0] == compat.TORCH_CHECKED
    assert pyro.__version__ == compat.PYRO_CHECKED


def test_a_capture_records_the_same_graph_and_values_as_make_fx_alone(monkeypatch):
    """Captures make each node's fake value directly (one fake mode per capture, for speed): the
    graph and every node's recorded shape, strides, dtype and device are make_fx's own."""
    import contextlib

    import models
    import pyro
    import torch
    from pyro import poutine
    from pyro.infer import SVI, TraceEnum_ELBO
    from pyro.infer.autoguide import AutoDiagonalNormal
    from torch.fx.experimental import proxy_tensor

    from pyro_jitmagic.wholestep.capture import capture_svi_step

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    sequence = torch.randn(6)
    guide = AutoDiagonalNormal(poutine.block(models.hmm, expose=["trans", "emit_scale", "emit_loc"]))
    svi = SVI(models.hmm, guide, pyro.optim.Adam({"lr": 0.01}), TraceEnum_ELBO(max_plate_nesting=1))
    kwargs = {"num_sequences": 10, "length": 6}
    svi.step(sequence, **kwargs)
    extract_val = proxy_tensor.extract_val

    def values(captured):
        return [(n.name, tuple(v.shape), v.stride(), v.dtype, v.device, type(v).__name__)
                for n in captured.graph.graph.nodes
                if isinstance(v := n.meta.get("val"), torch.Tensor)]

    fast = capture_svi_step(svi, (sequence,), kwargs)
    assert proxy_tensor.extract_val is extract_val  # put back
    monkeypatch.setattr(compat, "_one_fake_mode", contextlib.nullcontext)
    plain = capture_svi_step(svi, (sequence,), kwargs)
    assert fast.graph.code == plain.graph.code
    assert values(fast) == values(plain) and len(values(fast)) > 100
    assert all(kind == "FakeTensor" for *_, kind in values(fast))
    pyro.clear_param_store()


@pytest.mark.skipif(__import__("sys").platform != "linux", reason="the search is done here on Linux only")
def test_the_cxx_compiler_is_found_as_inductor_finds_it_without_importing_inductor(monkeypatch):
    import sys

    import torch._inductor.config  # noqa: F401  (inductor's own search, then ours)

    inductors = compat.cxx_compiler()
    monkeypatch.delitem(sys.modules, "torch._inductor.config")
    assert compat.cxx_compiler() == inductors
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    assert compat.cxx_compiler() == (None, "no-such-compiler-here")
