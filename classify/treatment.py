"""Feature treatments: what is done to a run's stored embeddings before the head sees them.

A treatment is a name and, per backbone of the run, what happens to that backbone's columns:

    {"name": "none", "per_backbone": {"sface": "none", "dlib_resnet": "none"}}
    {"name": "l2",   "per_backbone": {"sface": "l2", "efficientnet_lite0": "none"}}

``l2`` divides each row of that backbone's block by its Euclidean norm (face-recognition embeddings are
compared by angle; their norm carries image quality, not identity or gender). Candidate "l2" applies it
to the backbones whose store metadata hints ``"normalisation": "l2"``, or to every backbone of the run
when no backbone carries a hint. The protocol tries the candidates like a hyperparameter
(`classify.protocol`); the chosen treatment is saved with the run and the head, and predict/evaluate
apply it.
"""
from __future__ import annotations

import numpy as np

TREATMENTS = ("none", "l2")
BLOCK_TREATMENTS = ("none", "l2")


def candidates(names: tuple[str, ...], backbones: tuple[str, ...], hints: dict[str, str | None]) -> list[dict]:
    """The distinct treatments among ``names`` for a run on ``backbones`` (a duplicate of "none" is dropped)."""
    hinted = any(hints.get(b) is not None for b in backbones)
    out = []
    for name in names:
        if name == "none":
            per = {b: "none" for b in backbones}
        else:
            per = {b: "l2" if (hints.get(b) == "l2" or not hinted) else "none" for b in backbones}
        if all(value == "none" for value in per.values()) and name != "none" and "none" in names:
            continue  # identical to "none"
        out.append({"name": name, "per_backbone": per})
    return out


def apply(x: np.ndarray, treatment: dict, backbones: tuple[str, ...], dims: dict[str, int]) -> np.ndarray:
    """``x`` with each backbone's block treated; ``x`` itself is returned when nothing changes."""
    per = treatment["per_backbone"]
    if all(per[b] == "none" for b in backbones):
        return x
    out = x.copy()
    start = 0
    for name in backbones:
        block = out[:, start:start + dims[name]]
        if per[name] == "l2":
            norms = np.linalg.norm(block.astype(np.float64), axis=1, keepdims=True)
            block /= np.maximum(norms, 1e-12).astype(np.float32)
        start += dims[name]
    return out


def check(treatment, backbones: tuple[str, ...]) -> str | None:
    """What is wrong with a recorded treatment for ``backbones`` (None when it is valid)."""
    if not isinstance(treatment, dict) or treatment.get("name") not in TREATMENTS:
        return f"feature treatment must name one of {', '.join(TREATMENTS)}"
    per = treatment.get("per_backbone")
    if not isinstance(per, dict) or set(per) != set(backbones):
        return f"feature treatment must give a block treatment for exactly the backbones {list(backbones)}"
    if not all(value in BLOCK_TREATMENTS for value in per.values()):
        return f"block treatments must be {' or '.join(BLOCK_TREATMENTS)}"
    return None
