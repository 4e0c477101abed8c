"""classify: train and evaluate gender heads on stored backbone features (numpy + scikit-learn, no torch).

The public API is `GenderModel` (`classify.model`: a trained model, loaded from a head file; imported
lazily, so ``import classify`` stays light). Stages: `classify.heads` (estimators), `classify.metrics`,
`classify.protocol` (the evaluation protocol and one run), `classify.results` (results files, saved
heads), `classify.compare` (leaderboard, plots), `classify.images` (backbones on new images through
`extract`, imported lazily), `classify.predict` and `classify.cli`.
"""
from __future__ import annotations

__all__ = ["GenderModel", "HeadFileError", "Prediction"]

_EXPORTS = {"GenderModel": "classify.model", "HeadFileError": "classify.headfile", "Prediction": "classify.images"}


def __getattr__(name: str):
    """``from classify import GenderModel`` imports classify.model only when asked (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'classify' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
