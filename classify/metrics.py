"""Binary gender-classification metrics, male = positive class (label 1), female = 0.

`evaluate` returns a JSON-ready dict: accuracy, the male class's precision/recall/F1, the female class's
recall (``female_recall``), macro precision/recall/F1 over both classes, ROC-AUC, the confusion matrix
(rows true, columns predicted, order [female, male]), percentile bootstrap 95% CIs for accuracy and F1,
and an ROC curve thinned for plotting. A sex with no rows has no recall or F1 (NaN, null in JSON, "n/a"
in tables) and the macro scores average over the sex present; other undefined ratios (precision with no
male prediction) are 0, like scikit-learn's ``zero_division=0``.
"""
from __future__ import annotations

import numpy as np

_BOOT_CHUNK = 50  # resamples drawn at a time: 50 x n int32 indices


def _ratio(num, den):
    num, den = np.asarray(num, dtype=np.float64), np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros(np.broadcast(num, den).shape), where=den > 0)


def check_binary(y_true: np.ndarray, y_pred: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(true is male, predicted is male) as bool arrays; ValueError unless both are 1-D, equal-length, 0/1."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    if y_true.ndim != 1 or y_true.shape != y_pred.shape or y_true.size == 0:
        raise ValueError(f"labels and predictions must be non-empty and 1-D of equal length, "
                         f"got {y_true.shape} and {y_pred.shape}")
    for name, arr in (("labels", y_true), ("predictions", y_pred)):
        if not set(np.unique(arr).tolist()) <= {0, 1}:
            raise ValueError(f"{name} must be 1 male / 0 female, got {sorted(np.unique(arr).tolist())}")
    return y_true == 1, y_pred == 1


def confusion(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """2x2 counts, rows true [female, male], columns predicted [female, male]."""
    t, p = check_binary(y_true, y_pred)
    return np.array([[np.sum(~t & ~p), np.sum(~t & p)], [np.sum(t & ~p), np.sum(t & p)]], dtype=np.int64)


def scores_from_confusion(cm: np.ndarray) -> dict[str, float]:
    """Accuracy, male-class and macro precision/recall/F1 from a 2x2 confusion matrix."""
    (tn, fp), (fn, tp) = cm
    precision, recall = _ratio([tn, tp], [tn + fn, tp + fp]), _ratio([tn, tp], [tn + fp, tp + fn])
    f1 = _ratio(2 * precision * recall, precision + recall)
    absent = np.array([tn + fp, tp + fn]) == 0  # a sex with no rows has no recall or F1, not a zero one
    recall[absent], f1[absent] = np.nan, np.nan
    present = ~absent
    return {"accuracy": float(_ratio(tn + tp, cm.sum())),
            "precision": float(precision[1]), "recall": float(recall[1]), "f1": float(f1[1]),
            "female_recall": float(recall[0]),
            "macro_precision": float(precision[present].mean()), "macro_recall": float(recall[present].mean()),
            "macro_f1": float(f1[present].mean())}


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) at every distinct score, from (0, 0) to (1, 1)."""
    s, t = np.asarray(score, dtype=np.float64), np.asarray(y_true) == 1
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last_of_tie = np.r_[np.nonzero(np.diff(s))[0], len(s) - 1]
    tps, fps = np.cumsum(t)[last_of_tie], np.cumsum(~t)[last_of_tie]
    fpr, tpr = np.r_[0.0, _ratio(fps, (~t).sum())], np.r_[0.0, _ratio(tps, t.sum())]
    return fpr, tpr, np.r_[np.inf, s[last_of_tie]]


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (ties count half); NaN when only one class is present."""
    t = np.asarray(y_true) == 1
    if t.all() or not t.any():
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(np.trapezoid(tpr, fpr))


def bootstrap_ci(y_true: np.ndarray, y_pred: np.ndarray, *, n_resamples: int = 1000,
                 seed: int = 0) -> dict[str, list[float]]:
    """Percentile bootstrap 95% CIs for accuracy and male F1: rows resampled with replacement, seeded, in chunks."""
    t, p = check_binary(y_true, y_pred)
    codes = (2 * t + p).astype(np.int8)  # 0 tn, 1 fp, 2 fn, 3 tp
    rng = np.random.default_rng(seed)
    counts = []
    for start in range(0, n_resamples, _BOOT_CHUNK):
        size = min(_BOOT_CHUNK, n_resamples - start)
        rows = rng.integers(0, len(codes), size=(size, len(codes)), dtype=np.int32)
        sample = codes[rows]
        counts.append(np.stack([(sample == k).sum(axis=1) for k in range(4)], axis=1))
    tn, fp, fn, tp = np.concatenate(counts).T
    accuracy = _ratio(tn + tp, len(codes))
    f1 = _ratio(2 * tp, 2 * tp + fp + fn) if t.any() else np.full(len(tn), np.nan)  # no men: no male F1
    tail = 100 * (1 - 0.95) / 2
    return {name: np.percentile(values, [tail, 100 - tail]).tolist()
            for name, values in (("accuracy", accuracy), ("f1", f1))}


def evaluate(y_true: np.ndarray, proba_male: np.ndarray, *, n_resamples: int = 1000, seed: int = 0,
             threshold: float = 0.5) -> dict:
    """All metrics for one split: male probability per row -> predicted male when > ``threshold``."""
    y_pred = (np.asarray(proba_male) > threshold).astype(np.int8)
    cm = confusion(y_true, y_pred)
    fpr, tpr, _ = roc_curve(y_true, proba_male)
    keep = np.unique(np.linspace(0, len(fpr) - 1, min(200, len(fpr))).round().astype(int))  # ends kept, for plots
    return {"n": int(len(y_true)), **scores_from_confusion(cm), "roc_auc": roc_auc(y_true, proba_male),
            "confusion_matrix": cm.tolist(), "confusion_labels": ["female", "male"],
            "ci95": bootstrap_ci(y_true, y_pred, n_resamples=n_resamples, seed=seed),
            "n_resamples": n_resamples, "roc": {"fpr": np.round(fpr[keep], 5).tolist(),
                                                "tpr": np.round(tpr[keep], 5).tolist()}}


def fmt(value) -> str:
    """A score to 4 places; "n/a" for one that does not exist (None, NaN: a sex with no rows)."""
    return "n/a" if value is None or value != value else f"{value:.4f}"
