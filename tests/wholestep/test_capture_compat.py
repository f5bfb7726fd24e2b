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
