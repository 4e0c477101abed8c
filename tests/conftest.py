"""Fixtures shared by the test modules."""
import importlib
import sys

import pytest


@pytest.fixture(scope="module")
def tiny_backbones():
    """tests/extract_tiny.py's backbones, registered for one test module and removed after it.

    The registry is swapped for a copy, and the module imported again so that it registers into
    that copy; the original registry comes back afterwards, so no other module sees them (test order
    does not matter). `--plugin tests.extract_tiny` inside a test finds the module already imported.
    """
    from extract import catalog

    with pytest.MonkeyPatch.context() as patch:
        # a copy without them, should a module have imported tests.extract_tiny itself
        built_in = {name: spec for name, spec in catalog._REGISTRY.items()
                    if getattr(spec.factory, "__module__", "") != "tests.extract_tiny"}
        patch.setattr(catalog, "_REGISTRY", built_in)
        patch.delitem(sys.modules, "tests.extract_tiny", raising=False)
        yield importlib.import_module("tests.extract_tiny")
