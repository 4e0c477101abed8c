"""Calibration metrics, calibrators and thresholds (classify/calibration.py) against independent computations."""
import json

import numpy as np
import pytest
from sklearn.calibration import calibration_curve
from sklearn.isotonic import IsotonicRegression
from sklearn.metrics import brier_score_loss
from sklearn.metrics import log_loss as sk_log_loss

from classify.calibration import (Calibrator, CalibrationError, brier_score, calibration_report,
                                  decision_threshold, fit_calibrator, fit_method,
                                  log_loss, parse_threshold, reliability)


def _overconfident(n=2000, seed=0):
    """True p(male) = sigmoid(z); the 'head' reports sigmoid(3 z): overconfident, miscalibrated."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.3, 1.5, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-z))).astype(int)
    return y, 1 / (1 + np.exp(-3 * z))


def test_ece_hand_computed_case():
    y = np.array([1, 0, 1, 1])
    p = np.array([0.1, 0.1, 0.9, 0.7])
    # 2 bins on [0, 1]: {0.1, 0.1} mean .1 observed .5; {0.9, 0.7} mean .8 observed 1
    assert reliability(y, p, n_bins=2)["ece"] == pytest.approx(0.5 * 0.4 + 0.5 * 0.2)
    # confidence bins on [0.5, 1] (2 bins): conf .9,.9,.9,.7 correct 0,1,1,1 -> {.7}: 1 vs .7; {.9 x3}: 2/3 vs .9
    assert reliability(y, p, n_bins=2, on="confidence")["ece"] == pytest.approx(
        0.25 * 0.3 + 0.75 * abs(2 / 3 - 0.9))


def test_reliability_bins_equal_sklearn_calibration_curve():
    y, p = _overconfident()
    diagram = reliability(y, p, n_bins=15)
    filled = [b for b in diagram["bins"] if b["n"]]
    prob_true, prob_pred = calibration_curve(y, p, n_bins=15, strategy="uniform")
    np.testing.assert_allclose([b["observed"] for b in filled], prob_true)
    np.testing.assert_allclose([b["mean_predicted"] for b in filled], prob_pred)
    counts = np.array([b["n"] for b in filled])
    assert diagram["ece"] == pytest.approx(np.sum(counts / len(y) * np.abs(prob_true - prob_pred)))
    assert "15 equal-width bins of p(male)" in diagram["binning"]


def test_brier_and_log_loss_equal_sklearn():
    y, p = _overconfident(500)
    assert brier_score(y, p) == pytest.approx(brier_score_loss(y, p))
    assert log_loss(y, p) == pytest.approx(sk_log_loss(y, p))
    report = calibration_report(y, p)
    json.dumps(report)
    assert report["brier"] == pytest.approx(brier_score_loss(y, p)) and report["n"] == 500


@pytest.mark.parametrize("method", ["none", "temperature", "platt", "isotonic"])
def test_calibrator_round_trips_through_json(method):
    y, p = _overconfident(800)
    calibrator = fit_method(method, y, p)
    again = Calibrator.from_json(json.loads(json.dumps(calibrator.to_json())))
    probe = np.linspace(0, 1, 101)
    np.testing.assert_array_equal(again.apply(probe), calibrator.apply(probe))
    np.testing.assert_array_equal(again.apply(p), calibrator.apply(p))


def test_isotonic_reproduces_sklearn_predict():
    y, p = _overconfident(800)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(p, y)
    probe = np.r_[0.0, np.sort(np.random.default_rng(1).random(300)), 1.0]
    np.testing.assert_allclose(fit_method("isotonic", y, p).apply(probe), iso.predict(probe), atol=1e-12)


def test_temperature_recovers_the_known_overconfidence():
    y, p = _overconfident(20000, seed=2)
    assert fit_method("temperature", y, p).params["temperature"] == pytest.approx(3.0, rel=0.08)


def test_fit_calibrator_lowers_ece_on_fresh_rows_and_records_choice():
    y_val, p_val = _overconfident(2000, seed=3)
    y_test, p_test = _overconfident(2000, seed=4)
    calibrator = fit_calibrator(y_val, p_val, seed=0)
    assert calibrator.method in ("temperature", "platt")  # the true miscalibration is a temperature
    assert set(calibrator.fitted_on["cv_scores"]) == {"none", "temperature", "platt", "isotonic"}
    before = reliability(y_test, p_test)["ece"]
    after = reliability(y_test, calibrator.apply(p_test))["ece"]
    assert after < before / 2


def test_already_calibrated_keeps_the_simplest_or_close():
    rng = np.random.default_rng(5)
    p = rng.random(3000)
    y = (rng.random(3000) < p).astype(int)
    calibrator = fit_calibrator(y, p)
    assert np.max(np.abs(calibrator.apply(p) - p)) < 0.1


def test_bad_calibrator_records_refused():
    with pytest.raises(CalibrationError, match="unknown calibration method"):
        Calibrator.from_json({"kind": "probability-calibrator", "version": 1, "method": "magic", "params": {}})
    with pytest.raises(CalibrationError, match="temperature must be positive"):
        Calibrator.from_json({"kind": "probability-calibrator", "version": 1, "method": "temperature",
                              "params": {"temperature": -1}})
    with pytest.raises(CalibrationError, match="not a calibrator"):
        Calibrator.from_json({"method": "none"})


def test_balanced_threshold_equalises_recalls_on_constructed_case():
    # men score 0.55..0.95, women 0.05..0.75: at 0.5 every man is right but women above 0.5 are wrong
    men = np.linspace(0.555, 0.955, 41)
    women = np.linspace(0.05, 0.75, 71)
    y = np.r_[np.ones_like(men), np.zeros_like(women)].astype(int)
    p = np.r_[men, women]
    at_half = decision_threshold(0.5)
    assert at_half == {"rule": "default", "value": 0.5}
    pred = p > 0.5
    gap_before = abs(pred[y == 1].mean() - (~pred)[y == 0].mean())
    chosen = decision_threshold("balanced", y, p)
    pred = p > chosen["value"]
    tpr, tnr = pred[y == 1].mean(), (~pred)[y == 0].mean()
    assert chosen["val_male_recall"] == pytest.approx(tpr) and chosen["val_female_recall"] == pytest.approx(tnr)
    # brute force: every split the val probabilities allow (at each value and just below it)
    cuts = np.r_[p, p - 1e-9]
    best_gap = min(abs((p[y == 1] > t).mean() - (p[y == 0] <= t).mean()) for t in cuts)
    assert abs(tpr - tnr) == pytest.approx(best_gap, abs=1e-12)
    assert abs(tpr - tnr) < gap_before
    assert chosen["value"] not in p  # midway between val probabilities


def test_threshold_rules_parse():
    assert parse_threshold("balanced") == "balanced"
    assert parse_threshold("0.3") == 0.3
    assert decision_threshold(0.3) == {"rule": "fixed", "value": 0.3}
    for bad in ("1.5", "0", "half"):
        with pytest.raises(CalibrationError, match="threshold must be"):
            parse_threshold(bad)
    with pytest.raises(CalibrationError, match="chosen on val"):
        decision_threshold("balanced")


def test_a_val_too_small_for_cross_validation_gets_no_calibration_instead_of_a_crash():
    y, p = np.array([0, 1, 0, 1, 0]), np.array([0.2, 0.7, 0.4, 0.9, 0.1])   # 2 men: fewer than the 5 folds
    chosen = fit_calibrator(y, p)
    assert chosen.method == "none" and "2 male and 3 female rows, too few" in chosen.fitted_on["selection"]
    asked = fit_calibrator(y, p, methods=("platt",))                         # one method: nothing to choose
    assert asked.method == "platt" and asked.fitted_on["selection"].startswith("the only method asked for")


def test_train_with_one_man_and_one_woman_in_val_runs(tmp_path):
    from classify import cli
    from tests.test_classify_cli import make_store

    split = np.zeros(200, dtype=np.int8)
    split[150:] = 2
    gender = (np.arange(200) % 2).astype(np.int8)
    split[[148, 149]] = 1                                                    # val: one woman, one man
    store = make_store(tmp_path / "s.zarr", n=200, gender=gender, split=split, dims={"bb_a": 4})
    assert cli.main(["train", "--store", store.path, "--backbones", "bb_a", "--heads", "logreg", "--out",
                     str(tmp_path / "runs"), "--bootstrap", "20"]) == 0
