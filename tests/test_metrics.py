"""classify.metrics against scikit-learn on known inputs; bootstrap CIs seeded and sane."""
import numpy as np
import pytest
from sklearn import metrics as skm

from classify import metrics


def _labels(n=500, seed=0, noise=1.0):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int8)
    score = 1 / (1 + np.exp(-(2 * y - 1 + rng.normal(0, noise, n))))
    return y, score


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_scores_equal_sklearn(seed):
    y, proba = _labels(seed=seed)
    pred = (proba > 0.5).astype(np.int8)
    got = metrics.evaluate(y, proba, n_resamples=50, seed=0)
    p, r, f, _ = skm.precision_recall_fscore_support(y, pred, pos_label=1, average="binary", zero_division=0)
    mp, mr, mf, _ = skm.precision_recall_fscore_support(y, pred, average="macro", zero_division=0)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred))
    assert (got["precision"], got["recall"], got["f1"]) == pytest.approx((p, r, f))
    assert (got["macro_precision"], got["macro_recall"], got["macro_f1"]) == pytest.approx((mp, mr, mf))
    assert got["roc_auc"] == pytest.approx(skm.roc_auc_score(y, proba))
    assert got["confusion_matrix"] == skm.confusion_matrix(y, pred, labels=[0, 1]).tolist()
    assert got["n"] == len(y)


def test_known_confusion_by_hand():
    y = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    pred = np.array([1, 1, 0, 0, 0, 1, 0, 1])
    cm = metrics.confusion(y, pred)
    assert cm.tolist() == [[3, 1], [1, 3]]
    s = metrics.scores_from_confusion(cm)
    assert s["accuracy"] == 0.75 and s["precision"] == 0.75 and s["recall"] == 0.75


def test_roc_auc_with_ties_and_curve_equal_sklearn():
    y = np.array([0, 0, 1, 1, 0, 1, 1, 0])
    score = np.array([0.1, 0.4, 0.4, 0.8, 0.8, 0.8, 0.9, 0.2])
    assert metrics.roc_auc(y, score) == pytest.approx(skm.roc_auc_score(y, score))
    fpr, tpr, _ = metrics.roc_curve(y, score)
    sk_fpr, sk_tpr, _ = skm.roc_curve(y, score, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sk_fpr)
    np.testing.assert_allclose(tpr, sk_tpr)


def test_degenerate_predictions_give_zero_not_error():
    y = np.array([0, 1, 0, 1])
    s = metrics.scores_from_confusion(metrics.confusion(y, np.zeros(4, dtype=int)))
    assert s["precision"] == 0.0 and s["f1"] == 0.0 and s["accuracy"] == 0.5
    assert np.isnan(metrics.roc_auc(np.ones(3), np.array([0.1, 0.5, 0.9])))


def test_bad_labels_raise():
    with pytest.raises(ValueError, match="1 male / 0 female"):
        metrics.confusion(np.array([0, 2]), np.array([0, 1]))
    with pytest.raises(ValueError, match="equal length"):
        metrics.confusion(np.array([0, 1]), np.array([0]))


def test_bootstrap_ci_contains_estimate_and_is_reproducible():
    y, proba = _labels(n=2000, seed=3)
    pred = (proba > 0.5).astype(np.int8)
    a = metrics.bootstrap_ci(y, pred, n_resamples=1000, seed=7)
    b = metrics.bootstrap_ci(y, pred, n_resamples=1000, seed=7)
    c = metrics.bootstrap_ci(y, pred, n_resamples=1000, seed=8)
    assert a == b and a != c
    point = metrics.scores_from_confusion(metrics.confusion(y, pred))
    for name in ("accuracy", "f1"):
        low, high = a[name]
        assert low < point[name] < high
        assert high - low < 0.06  # n=2000: the half-width is about 2 standard errors (~0.016)


def test_bootstrap_width_shrinks_with_n():
    small = metrics.bootstrap_ci(*_bin(200), n_resamples=500, seed=0)["accuracy"]
    large = metrics.bootstrap_ci(*_bin(20000), n_resamples=500, seed=0)["accuracy"]
    assert (large[1] - large[0]) < 0.5 * (small[1] - small[0])


def _bin(n):
    y, proba = _labels(n=n, seed=5)
    return y, (proba > 0.5).astype(np.int8)

