"""Reweighing against a confound (`classify.balance`): independence, weighted heads, and `--balance-by`."""
from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from classify import cli
from classify.balance import MAX_WEIGHT, MISSING, BalanceError, balance, reweigh
from classify.heads import LogRegHead, MLPHead
from features.store import FeatureStore, Status
from tests.fixtures import fill_units, split_codes, synthetic_table
from tests.test_heads import problem


def confounded(n: int, *, seed: int, young_given_female: float, young_given_male: float, dim: int = 6):
    """Gender weakly in dims 0-2, an age-like attribute strongly in dim 3; the attribute's link to
    gender is set by its rate in each sex (equal rates: independent)."""
    rng = np.random.default_rng(seed)
    gender = rng.integers(0, 2, n).astype(np.int8)
    young = (rng.random(n) < np.where(gender == 1, young_given_male, young_given_female)).astype(np.int8)
    x = rng.standard_normal((n, dim)).astype(np.float32)
    x[:, :3] += 0.6 * (2 * gender[:, None] - 1)
    x[:, 3] += 3.0 * (2 * young - 1)
    return x, gender, young


def test_reweigh_makes_the_stratum_independent_of_gender():
    _, gender, young = confounded(2000, seed=0, young_given_female=0.9, young_given_male=0.4)
    weight, cells = reweigh(gender, young)
    assert weight.mean() == pytest.approx(1.0)
    for g in (0, 1):  # weighted share of the stratum is the same among women and men: the overall share
        share = np.average(young[gender == g], weights=weight[gender == g])
        assert share == pytest.approx(young.mean(), abs=1e-9)
    assert sorted((c["stratum"], c["male"]) for c in cells) == [(0, False), (0, True), (1, False), (1, True)]


def test_reweigh_clips_a_nearly_empty_cell():
    gender = np.repeat([0, 1], 100).astype(np.int8)
    strata = np.zeros(200, dtype=np.int64)
    strata[[0] + list(range(101, 200))] = 1  # stratum 1: one woman, 99 men
    weight, cells = reweigh(gender, strata)
    lone = next(c for c in cells if c["stratum"] == 1 and not c["male"])
    assert lone["weight"] == pytest.approx(0.5 * 0.5 / 0.005)  # recorded unclipped: 50
    assert weight.max() / weight.min() <= MAX_WEIGHT ** 2 + 1e-9


def test_full_labels_use_the_attribute_and_partial_labels_a_proxy():
    x, gender, young = confounded(1200, seed=1, young_given_female=0.9, young_given_male=0.4)
    tr, va = slice(0, 900), slice(900, None)
    full = balance("Young", x_train=x[tr], y_train=gender[tr], a_train=young[tr], x_val=x[va], y_val=gender[va],
                   a_val=young[va])
    assert full.record["method"] == "attribute" and len(full.train) == 900 and len(full.val) == 300
    partial = young.copy()
    partial[np.random.default_rng(0).random(1200) < 0.7] = MISSING
    proxied = balance("Young", x_train=x[tr], y_train=gender[tr], a_train=partial[tr], x_val=x[va],
                      y_val=gender[va], a_val=partial[va])
    assert proxied.record["method"] == "proxy"
    assert proxied.record["labelled_train_rows"] == int(np.sum(partial[tr] != MISSING))
    # the proxy sees the attribute clearly here, so its weights are close to the true-label weights
    assert np.corrcoef(proxied.train, full.train)[0, 1] > 0.9


@pytest.mark.parametrize("values, message", [
    (None, "does not record this attribute"),
    (np.array([0, 1, 2] * 100), "needs a binary attribute"),
    (np.array([1] * 10 + [0] * 10 + [MISSING] * 280), "10 train rows have it and 10 do not .280 do not "
                                                      "record it.; at least 20 of each"),
    (np.array([0] * 300), "0 train rows have it and 300 do not"),
])
def test_an_attribute_that_cannot_balance_is_a_clear_error(values, message):
    x, gender, _ = confounded(300, seed=2, young_given_female=0.5, young_given_male=0.5)
    with pytest.raises(BalanceError, match=message):
        balance("Young", x_train=x, y_train=gender, a_train=values, x_val=x, y_val=gender, a_val=values)


def test_weighted_logreg_equals_scikit_learn_with_sample_weight():
    (xt, yt), (xv, yv), (xs, _) = problem(noise=0.15, seed=4)
    weight = np.random.default_rng(0).uniform(0.2, 3.0, len(yt))
    head = LogRegHead(Cs=(0.05,), tol=1e-8, max_iter=2000).fit(xt, yt, xv, yv, sample_weight=weight)
    scaler = StandardScaler().fit(xt.astype(np.float64))
    ref = LogisticRegression(C=0.05, tol=1e-10, max_iter=10000).fit(
        scaler.transform(xt), yt, sample_weight=weight * len(weight) / weight.sum())
    np.testing.assert_allclose(head.coef_, ref.coef_[0], atol=2e-4)
    np.testing.assert_allclose(head.predict_proba(xs), ref.predict_proba(scaler.transform(xs)), atol=2e-4)


def test_weights_move_both_heads_toward_the_upweighted_class():
    (xt, yt), (xv, yv), (xs, _) = problem(noise=0.3, seed=5, margin=0.8)
    men_heavier = {"sample_weight": np.where(yt == 1, 5.0, 1.0), "val_weight": np.where(yv == 1, 5.0, 1.0)}
    for head in (LogRegHead(), MLPHead(max_epochs=8)):
        plain = head.fit(xt, yt, xv, yv).predict(xs).mean()
        weighted = head.fit(xt, yt, xv, yv, **men_heavier).predict(xs).mean()
        assert weighted > plain + 0.05, type(head).__name__


def test_bad_weights_are_a_clear_error():
    (xt, yt), (xv, yv), _ = problem(n=200)
    for bad in (np.ones(len(yt) - 1), -np.ones(len(yt)), np.full(len(yt), np.nan)):
        with pytest.raises(ValueError, match="sample_weight"):
            LogRegHead().fit(xt, yt, xv, yv, sample_weight=bad)


def confounded_store(path, *, seed: int, young_given_female: float, young_given_male: float) -> FeatureStore:
    n = 1200
    x, gender, young = confounded(n, seed=seed, young_given_female=young_given_female,
                                  young_given_male=young_given_male)
    table = synthetic_table(n, root=str(path.parent), gender=gender, split=split_codes((600, 300, 300)),
                            attributes={"Young": young}, split_seed=seed)
    store = FeatureStore.create(path, table)
    writer = store.add_backbone("bb", dim=x.shape[1], unit_rows=256, metadata={"weights": "random"})
    fill_units(writer, lambda s, e: (x[s:e], np.full(e - s, Status.OK, dtype=np.uint8)))
    return store


def test_balance_by_keeps_the_head_from_learning_a_confound(tmp_path):
    """Trained where the young are mostly women, evaluated where youth says nothing of gender: the
    unbalanced head leans on youth and loses accuracy there; the balanced one does not."""
    train = confounded_store(tmp_path / "train.zarr", seed=0, young_given_female=0.9, young_given_male=0.15)
    other = confounded_store(tmp_path / "other.zarr", seed=1, young_given_female=0.5, young_given_male=0.5)
    accuracy = {}
    for name, extra in (("plain", []), ("balanced", ["--balance-by", "Young"])):
        out = tmp_path / name
        assert cli.main(["train", "--store", train.path, "--eval-store", other.path, "--heads", "logreg",
                         "--out", str(out), "--bootstrap", "20", *extra]) == 0
        record = json.loads((out / "bb__logreg.json").read_text())
        accuracy[name] = record["cross_dataset"]["synthetic:other"]["report"]["accuracy"]
    assert record["balance"]["method"] == "attribute" and record["config"]["balance_by"] == "Young"
    assert "balanced by Young" in (tmp_path / "balanced" / "leaderboard.md").read_text()
    assert accuracy["balanced"] > accuracy["plain"] + 0.05, accuracy


def test_balance_by_an_attribute_the_store_lacks_exits_2(tmp_path, capsys):
    store = confounded_store(tmp_path / "s.zarr", seed=0, young_given_female=0.5, young_given_male=0.5)
    assert cli.main(["train", "--store", store.path, "--heads", "logreg", "--out", str(tmp_path / "o"),
                     "--balance-by", "Bald"]) == 2
    assert "--balance-by Bald: the training store does not record this attribute" in capsys.readouterr().err
