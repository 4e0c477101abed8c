"""The errors that mean bad input to extraction: the CLI prints their message as one line and exits 2.

Anything else raised during a run is a bug (ours or a plugin's) and keeps its traceback (exit 1).
Torch-free, so argument checking can raise them before torch is imported.

    features.cli.UsageError   an option, backbone name, device, precision or environment variable is
                              wrong (the one UsageError of both stages, re-exported here)
    ExtractError              base of extraction's own bad-input errors
    └─ WeightsUnavailable     a weight file is missing, unreadable or not the network's

The dataset and store errors live where those are read, in `features` (which extract depends on, never
the reverse): `features.dataset.DatasetError` and `features.store.StoreError`. Both subclass ValueError,
as `UsageError` does, so callers that catch ValueError keep working.
"""
from __future__ import annotations

import sys

from features.cli import UsageError


class ExtractError(Exception):
    """Bad input to extraction; the message is meant for the user and says what to do."""


class WeightsUnavailable(ExtractError, RuntimeError):
    """Pre-trained weights are not on disk and could not be fetched, or a weight file is unusable; the
    message says which file to put where, or to pass ``--weights PATH``."""


# Error types of `features` that also mean bad input, by module: looked up when an error is caught, in
# the modules imported by then (zarr takes a while to import, and an error type whose module was never
# imported cannot have been raised).
_FEATURES_ERRORS = {"features.dataset": "DatasetError", "features.store": "StoreError"}


def expected_errors() -> tuple[type[Exception], ...]:
    """Every error type that means bad input (exit 2, one line): `UsageError`, `ExtractError` and the
    dataset and store errors. Bare ValueError is not among them: a bug keeps its traceback."""
    return (UsageError, ExtractError, *(getattr(sys.modules[module], name) for module, name in _FEATURES_ERRORS.items()
                            if module in sys.modules))
