"""Per-run analysis helpers, plain numpy in, JSON-ready dicts out: the recalls of one decision
(`classify.protocol`) and the wrong rows of one scored set (`classify.errors`)."""
from __future__ import annotations

import numpy as np

from classify.groups import rates, row_groups


def decision_recalls(y, pred) -> dict:
    """Accuracy, male and female recall and their gap of one decision (JSON-ready)."""
    r = rates(y, pred)
    return {"accuracy": r["accuracy"], "male recall": r["male_recall"], "female recall": r["female_recall"],
            "recall gap": abs(r["male_recall"] - r["female_recall"])
            if None not in (r["male_recall"], r["female_recall"]) else None}


def error_rows(ids, paths, y_true, p_male, *, threshold: float = 0.5,
               attributes: dict[str, np.ndarray] | None = None) -> list[dict]:
    """The wrong rows, most confident first: {"id", "path", "p_male", "true", "predicted", "groups"}."""
    y_true, p_male = np.asarray(y_true), np.asarray(p_male, dtype=np.float64)
    pred = p_male > threshold
    wrong = np.flatnonzero(pred != (y_true == 1))
    confidence = np.abs(p_male[wrong] - threshold)
    names = ("female", "male")
    return [{"id": str(ids[i]), "path": str(paths[i]), "p_male": float(p_male[i]), "true": names[int(y_true[i])],
             "predicted": names[int(pred[i])], "groups": row_groups(attributes or {}, i)}
            for i in wrong[np.argsort(-confidence, kind="stable")]]
