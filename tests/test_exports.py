"""The public surface is curated: every package re-exports its modules' public names.

For each layer package, every name a public submodule lists in ``__all__`` must be listed in the
package's ``__all__`` and be the same object, and every name in the package's ``__all__`` must
exist. This catches a name added to a module but forgotten in the package (or vice versa).
"""

from __future__ import annotations

import importlib
import pkgutil
from types import ModuleType

import pytest

PACKAGES = [
    "cronloop.sync",
    "cronloop.api",
    "cronloop.store",
    "cronloop.runtimes",
    "cronloop.controllers",
    "cronloop.server",
]


def _public_submodules(package: ModuleType) -> list[ModuleType]:
    found = []
    for info in pkgutil.iter_modules(package.__path__):
        if info.name.startswith("_") or info.ispkg:
            continue
        found.append(importlib.import_module(f"{package.__name__}.{info.name}"))
    return found


@pytest.mark.parametrize("name", PACKAGES)
def test_package_all_matches_submodules(name: str) -> None:
    package = importlib.import_module(name)
    exported = set(getattr(package, "__all__", ()))
    assert exported, f"{name} has no __all__"
    for attr in exported:
        assert hasattr(package, attr), f"{name}.__all__ lists {attr!r} but it does not exist"
    for module in _public_submodules(package):
        for attr in getattr(module, "__all__", ()):
            assert attr in exported, f"{module.__name__}.{attr} is not re-exported by {name}"
            assert getattr(package, attr) is getattr(module, attr)
