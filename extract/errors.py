"""The errors that mean bad input to extraction: the CLI prints their message as one line and exits 2;
anything else raised during a run is a bug (ours or a plugin's) and keeps its traceback (exit 1). Torch-free,
so argument checking can raise them before torch is imported. `UsageError` (features.cli's, the one of both
stages), DatasetError and StoreError (in `features`) subclass ValueError; ExtractError does not.
"""
from __future__ import annotations

import sys

from features.cli import UsageError


class ExtractError(Exception):
    """Bad input to extraction; the message is meant for the user and says what to do."""


class WeightsUnavailable(ExtractError, RuntimeError):
    """Pre-trained weights are not on disk and could not be fetched, or a weight file is unusable; the
    message says which file to put where, or to pass ``--weights PATH``."""


# `features` errors that also mean bad input, looked up in the modules imported by the time an error is
# caught (zarr is slow to import, and an error of a module never imported cannot have been raised).
_FEATURES_ERRORS = {"features.dataset": "DatasetError", "features.store": "StoreError"}


def expected_errors() -> tuple[type[Exception], ...]:
    """Every error type that means bad input (exit 2, one line): `UsageError`, `ExtractError` and the
    dataset and store errors. Bare ValueError is not among them: a bug keeps its traceback."""
    return (UsageError, ExtractError, *(getattr(sys.modules[module], name) for module, name in _FEATURES_ERRORS.items()
                            if module in sys.modules))
