"""One run's analysis (classify/run_analysis.py): calibration fitted on val, threshold chosen on val,
groups before/after, and the error rows most confident first."""
import json

import numpy as np
import pytest

from classify.calibration import Calibrator
from classify.run_analysis import analyse_predictions, error_rows


def _scores(n, seed):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    z = rng.normal(0, 1.5, n) + 0.8 * (2 * y - 1) + 0.8  # biased towards "male"
    return y, 1 / (1 + np.exp(-3 * z))


def test_balanced_threshold_after_calibration_narrows_test_recall_gap():
    y_val, p_val = _scores(1500, 1)
    y_test, p_test = _scores(1500, 2)
    race = np.random.default_rng(3).integers(0, 5, 1500)
    analysis = analyse_predictions(y_val, p_val, y_test, p_test, {"race": race}, threshold="balanced",
                                   n_resamples=50)
    json.dumps(analysis)
    before, after = analysis["recalls"].values()
    assert after["recall gap"] < before["recall gap"] / 2
    assert analysis["calibration"]["after"]["ece"] < analysis["calibration"]["before"]["ece"]
    calibrator = Calibrator.from_json(analysis["calibrator"])
    pred = calibrator.apply(p_test) > analysis["threshold"]["value"]
    assert analysis["groups"]["after"]["summary"]["accuracy"] == pytest.approx(np.mean(pred == (y_test == 1)))


def test_error_rows_most_confident_first():
    rows = error_rows(np.array(["a", "b", "c", "d"]), np.array(["/a", "/b", "/c", "/d"]),
                      np.array([0, 1, 0, 1]), np.array([0.9, 0.2, 0.6, 0.8]),
                      attributes={"race": np.array([0, 1, 2, 3])})
    assert [r["id"] for r in rows] == ["a", "b", "c"]
    assert rows[0] == {"id": "a", "path": "/a", "p_male": 0.9, "true": "female", "predicted": "male",
                       "groups": {"race": "White"}}
