"""Per-group metrics (classify/groups.py) against independent computations (scikit-learn, loops by hand)."""
import json

import numpy as np
import pytest
from sklearn.metrics import accuracy_score, balanced_accuracy_score, recall_score

from classify.groups import MISSING, bin_ages, group_metrics, row_groups


def _utk_like(n=600, seed=1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    race = rng.integers(0, 5, n)
    race[:7] = MISSING
    age = rng.integers(1, 90, n)
    # errors depend on race so groups really differ
    wrong = rng.random(n) < np.where(race == 1, 0.25, 0.05)
    pred = np.where(wrong, 1 - y, y)
    return y, pred, {"race": race, "age": age}


def _group(result, family, name):
    return next(g for g in result["families"][family]["groups"] if g["group"] == name)


def test_age_bins_edges():
    assert bin_ages(np.array([0, 2, 3, 9, 10, 19, 20, 39, 40, 59, 60, 116, -1])).tolist() == \
        [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5, MISSING]


def test_group_rates_equal_sklearn_on_each_group():
    y, pred, attributes = _utk_like()
    result = group_metrics(y, pred, attributes, n_resamples=200, seed=3)
    for race_code, race in enumerate(["White", "Black", "Asian", "Indian", "Others"]):
        for low, high, label in ((20, 39, "20-39"), (60, 200, "60+")):
            mask = (attributes["race"] == race_code) & (attributes["age"] >= low) & (attributes["age"] <= high)
            group = _group(result, "race x age", f"{race}, {label}")
            assert group["n"] == mask.sum()
            assert group["accuracy"] == pytest.approx(accuracy_score(y[mask], pred[mask]))
            assert group["male_recall"] == pytest.approx(recall_score(y[mask], pred[mask], pos_label=1))
            assert group["female_recall"] == pytest.approx(recall_score(y[mask], pred[mask], pos_label=0))
            low_ci, high_ci = group["accuracy_ci"]
            assert low_ci <= group["accuracy"] <= high_ci
    assert result["families"]["race"]["n_missing"] == 7
    assert sum(g["n"] for g in result["families"]["race"]["groups"]) == len(y) - 7


def test_summary_equals_independent_computation():
    y, pred, attributes = _utk_like()
    result = group_metrics(y, pred, attributes, n_resamples=100, min_n=30)
    summary = result["summary"]
    assert summary["balanced_accuracy"] == pytest.approx(balanced_accuracy_score(y, pred))
    tpr, tnr = recall_score(y, pred, pos_label=1), recall_score(y, pred, pos_label=0)
    assert summary["recall_gap"] == pytest.approx(abs(tpr - tnr))
    # by hand over the races (all above min_n here)
    accs, tprs, fprs = [], [], []
    for code in range(5):
        m = attributes["race"] == code
        accs.append(accuracy_score(y[m], pred[m]))
        tprs.append(recall_score(y[m], pred[m], pos_label=1))
        fprs.append(1 - recall_score(y[m], pred[m], pos_label=0))
    race = result["families"]["race"]
    assert race["accuracy_gap"] == pytest.approx(max(accs) - min(accs))
    assert race["worst_group"] == "Black"
    assert race["equalised_odds_difference"] == pytest.approx(max(max(tprs) - min(tprs), max(fprs) - min(fprs)))
    sized = [(f, g) for f, d in result["families"].items() for g in d["groups"] if not g["too_small"] and g["n"]]
    assert summary["worst_group"]["accuracy"] == pytest.approx(min(g["accuracy"] for _, g in sized))


def test_small_groups_reported_not_hidden_and_left_out_of_summary():
    y = np.array([1, 0] * 50 + [1, 0])
    pred = y.copy()
    pred[-2:] = 1 - pred[-2:]  # the tiny group is all wrong
    glasses = np.array([0] * 100 + [1, 1])
    result = group_metrics(y, pred, {"Eyeglasses": glasses}, min_n=30, n_resamples=50)
    tiny = _group(result, "Eyeglasses", "yes")
    assert tiny["too_small"] and tiny["n"] == 2 and tiny["accuracy"] == 0.0
    assert result["families"]["Eyeglasses"]["worst_group"] == "no"
    worst = result["summary"]["worst_group"]  # the sexes (51 rows each, one error each), not the tiny group
    assert worst["family"] == "sex" and worst["accuracy"] == pytest.approx(50 / 51)


def test_celeba_attributes_missing_code_skip_identity_and_male():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 200)
    smiling = rng.integers(0, 2, 200)
    smiling[100:] = MISSING  # rows the 40-attribute file does not cover
    attributes = {"Smiling": smiling, "Male": y, "identity": np.arange(200)}
    result = group_metrics(y, y, attributes, n_resamples=20)
    assert "Male" not in result["families"] and "identity" in result["skipped"]
    assert sum(g["n"] for g in result["families"]["Smiling"]["groups"]) == 100
    assert result["families"]["Smiling"]["n_missing"] == 100
    assert set(result["families"]["sex"]) >= {"groups"}
    json.dumps(result)  # JSON-ready


def test_bootstrap_is_seeded_and_recall_none_without_that_sex():
    y, pred, attributes = _utk_like(200)
    a = group_metrics(y, pred, attributes, n_resamples=100, seed=5)
    b = group_metrics(y, pred, attributes, n_resamples=100, seed=5)
    assert a == b
    male = _group(a, "sex", "male")
    assert male["female_recall"] is None and male["female_recall_ci"] is None


def test_attributes_must_match_rows():
    with pytest.raises(ValueError, match="one value per evaluated row"):
        group_metrics(np.array([0, 1]), np.array([0, 1]), {"race": np.array([0, 1, 2])})


def test_row_groups_for_gallery():
    attributes = {"race": np.array([1, -1]), "age": np.array([34, 5]), "Eyeglasses": np.array([1, 0]),
                  "Smiling": np.array([1, -1]), "Male": np.array([1, 0])}
    assert row_groups(attributes, 0) == {"race": "Black", "age": "34 (20-39)", "attributes": "Eyeglasses, Smiling"}
    assert row_groups(attributes, 1) == {"age": "5 (3-9)"}
