"""Feature treatments: what is done to a run's stored embeddings before the head sees them.

A treatment is a name and, per backbone of the run, what happens to that backbone's columns:

    {"name": "none", "per_backbone": {"sface": "none", "dlib_resnet": "none"}}
    {"name": "l2",   "per_backbone": {"sface": "l2", "efficientnet_lite0": "none"}}

``l2`` divides each row of that backbone's block by its Euclidean norm (face-recognition embeddings are
compared by angle; their norm carries image quality, not identity or gender). Candidate "l2" applies it
to the backbones whose store metadata hints ``"normalisation": "l2"``, or to every backbone of the run
when no backbone carries a hint. The treatment is chosen like a hyperparameter (`classify.protocol`
step 6), saved with the run and the head, and applied by predict and evaluate.
"""
from __future__ import annotations

import numpy as np

TREATMENTS = ("none", "l2")  # also what a treatment may do to one backbone's block
BLOCK_ROWS = 1024  # rows normalised at a time: a 2,832-d float64 block is 23 MB


def candidates(names: tuple[str, ...], backbones: tuple[str, ...], hints: dict[str, str | None]) -> list[dict]:
    """The distinct treatments among ``names`` for a run on ``backbones`` (a duplicate of "none" is dropped)."""
    hinted = any(hints.get(b) is not None for b in backbones)
    out = []
    for name in names:
        per = {b: "l2" if name == "l2" and (hints.get(b) == "l2" or not hinted) else "none" for b in backbones}
        if all(value == "none" for value in per.values()) and name != "none" and "none" in names:
            continue  # identical to "none"
        out.append({"name": name, "per_backbone": per})
    return out


def apply(x: np.ndarray, treatment: dict, backbones: tuple[str, ...], dims: dict[str, int], *,
          in_place: bool = False) -> np.ndarray:
    """``x`` with each backbone's block treated: a copy, or ``x`` itself if nothing changes or ``in_place``."""
    if not changes(treatment, backbones):
        return x
    per = treatment["per_backbone"]
    out = x if in_place else x.copy()
    start = 0
    for name in backbones:
        if per[name] == "l2":
            _l2_rows(out[:, start:start + dims[name]])
        start += dims[name]
    return out


def changes(treatment: dict, backbones: tuple[str, ...]) -> bool:
    """Whether ``treatment`` changes any column of ``backbones``' features."""
    return any(treatment["per_backbone"][b] != "none" for b in backbones)


def _l2_rows(block: np.ndarray) -> None:
    """Divide each row of ``block`` by its Euclidean norm, in place, `BLOCK_ROWS` rows at a time: the norm
    is taken per row in float64, so the numbers are a whole-matrix pass's without its float64 copies."""
    for first in range(0, block.shape[0], BLOCK_ROWS):
        rows = block[first:first + BLOCK_ROWS]
        norms = np.linalg.norm(rows.astype(np.float64), axis=1, keepdims=True)
        rows /= np.maximum(norms, 1e-12).astype(np.float32)


def check(treatment, backbones: tuple[str, ...]) -> str | None:
    """What is wrong with a recorded treatment for ``backbones`` (None when it is valid)."""
    if not isinstance(treatment, dict) or treatment.get("name") not in TREATMENTS:
        return f"feature treatment must name one of {', '.join(TREATMENTS)}"
    per = treatment.get("per_backbone")
    if not isinstance(per, dict) or set(per) != set(backbones):
        return f"feature treatment must give a block treatment for exactly the backbones {list(backbones)}"
    if not all(value in TREATMENTS for value in per.values()):
        return f"block treatments must be {' or '.join(TREATMENTS)}"
    return None
