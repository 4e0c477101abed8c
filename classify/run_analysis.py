"""One run's "know your classifier" analysis from its val and test probabilities: calibration, threshold,
per-group metrics, error rows. Plain numpy in, JSON-ready dicts out, whatever the results format.

Order (all choices on val, test only reported): the calibrator is fitted on val probabilities
(`calibration.fit_calibrator`); the decision threshold is chosen on the *calibrated* val probabilities
(`calibration.decision_threshold`), since it applies to the probability that predict reports; test is
then evaluated raw at 0.5 ("before") and calibrated at the chosen threshold ("after").
"""
from __future__ import annotations

import numpy as np

from classify.calibration import calibration_report, decision_threshold, fit_calibrator
from classify.groups import group_metrics, rates, row_groups


def analyse_predictions(y_val, p_val, y_test, p_test, test_attributes: dict[str, np.ndarray], *,
                        calibrate: bool = True, threshold="0.5", seed: int = 0, n_resamples: int = 1000,
                        min_n: int = 30) -> dict:
    """{"calibrator", "threshold", "calibration": {"before", "after"}, "recalls", "groups": {"before",
    "after"}} for one run; `test_attributes` already indexed to the test rows."""
    y_val, p_val, y_test, p_test = (np.asarray(a) for a in (y_val, p_val, y_test, p_test))
    calibrator = fit_calibrator(y_val, p_val, seed=seed) if calibrate else fit_calibrator(
        y_val, p_val, methods=("none",), seed=seed)
    chosen = decision_threshold(threshold if threshold == "balanced" else float(threshold), y_val,
                                calibrator.apply(p_val))
    q_test = calibrator.apply(p_test)
    before, after = (p_test > 0.5).astype(np.int8), (q_test > chosen["value"]).astype(np.int8)
    groups = {name: group_metrics(y_test, pred, test_attributes, seed=seed, n_resamples=n_resamples, min_n=min_n)
              for name, pred in (("before", before), ("after", after))}
    return {"calibrator": calibrator.to_json(), "threshold": chosen,
            "calibration": {"before": calibration_report(y_test, p_test),
                            "after": calibration_report(y_test, q_test)},
            "recalls": {"raw, threshold 0.5": decision_recalls(y_test, before),
                        f"calibrated ({calibrator.method}), threshold {chosen['rule']} "
                        f"{chosen['value']:.4f}": decision_recalls(y_test, after)},
            "groups": groups}


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
