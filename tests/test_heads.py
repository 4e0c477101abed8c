"""Heads: registry, learning, reproducibility, selection on val, and logreg against scikit-learn."""
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from classify import heads
from classify.calibration import sigmoid
from classify.heads import LogRegHead, MLPHead, make_head

FAST = {"logreg": {}, "mlp": {"max_epochs": 8}}


def problem(n=1200, d=20, *, seed=0, margin=2.5, noise=0.0):
    """Gender in a random direction of features with scattered offsets and scales, split 60/20/20."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n).astype(np.int8)
    direction = rng.standard_normal(d)
    direction /= np.linalg.norm(direction)
    x = rng.standard_normal((n, d)) + margin * np.outer(2 * y - 1, direction)
    flip = rng.random(n) < noise
    y = np.where(flip, 1 - y, y).astype(np.int8)
    x = (x * rng.uniform(0.01, 100, d) + rng.uniform(-50, 50, d)).astype(np.float32)
    a, b = int(0.6 * n), int(0.8 * n)
    return (x[:a], y[:a]), (x[a:b], y[a:b]), (x[b:], y[b:])


def fit(name, data, **params):
    (xt, yt), (xv, yv), _ = data
    return make_head(name, seed=params.pop("seed", 0), **{**FAST[name], **params}).fit(xt, yt, xv, yv)


@pytest.mark.parametrize("name", heads.head_names())
def test_head_learns_separable_problem(name):
    data = problem()
    head = fit(name, data)
    x_test, y_test = data[2]
    assert head.score(x_test, y_test) > 0.95
    proba = head.predict_proba(x_test)
    assert proba.shape == (len(y_test), 2) and np.allclose(proba.sum(axis=1), 1)
    assert np.array_equal(head.predict(x_test), (proba[:, 1] > 0.5).astype(np.int8))
    assert list(head.classes_) == [0, 1] and head.n_features_in_ == x_test.shape[1]


@pytest.mark.parametrize("name", heads.head_names())
def test_head_is_seeded_reproducible_and_does_not_modify_input(name):
    data = problem(noise=0.1)
    before = data[0][0].copy()
    a, b = fit(name, data, seed=5), fit(name, data, seed=5)
    assert np.array_equal(data[0][0], before)
    x_test = data[2][0]
    assert np.array_equal(a.predict_proba(x_test), b.predict_proba(x_test))
    assert a.selection_ == b.selection_


def test_mlp_seed_changes_the_model():
    data = problem(noise=0.1)
    x_test = data[2][0]
    assert not np.array_equal(fit("mlp", data, seed=1).predict_proba(x_test),
                              fit("mlp", data, seed=2).predict_proba(x_test))


def test_logreg_matches_sklearn_on_standardised_features():
    (xt, yt), (xv, yv), (xs, _) = problem(noise=0.15, seed=3)
    head = LogRegHead(Cs=(0.05,), tol=1e-8, max_iter=2000).fit(xt, yt, xv, yv)
    scaler = StandardScaler().fit(xt.astype(np.float64))
    ref = LogisticRegression(C=0.05, tol=1e-10, max_iter=10000).fit(scaler.transform(xt), yt)
    np.testing.assert_allclose(head.coef_, ref.coef_[0], atol=2e-4)
    np.testing.assert_allclose(head.predict_proba(xs), ref.predict_proba(scaler.transform(xs)), atol=2e-4)


def test_logreg_picks_c_with_best_val_accuracy():
    data = problem(n=600, d=200, noise=0.2, margin=1.0, seed=4)
    head = fit("logreg", data)
    accuracies = [step["val_accuracy"] for step in head.path_]
    assert [step["C"] for step in head.path_] == sorted(head.Cs)
    assert head.C_ == head.path_[int(np.argmax(accuracies))]["C"] == head.selection_["C"]


def test_mlp_early_stops_on_val_and_keeps_best_epoch():
    data = problem(n=600, d=100, noise=0.3, margin=0.8, seed=6)
    head = fit("mlp", data, max_epochs=60, patience=2, hidden_grid=((64,), (32, 16)), lr_grid=(1e-2, 1e-3))
    assert len(head.grid_) == 4
    for record in head.grid_:
        assert record["best_epoch"] <= record["epochs_run"] <= 60
    assert any(r["epochs_run"] < 60 for r in head.grid_)  # noisy labels: val loss stops improving
    best = max(head.grid_, key=lambda r: (r["val_accuracy"], -r["val_log_loss"]))
    assert head.hidden_sizes_ == tuple(best["hidden_sizes"]) and head.learning_rate_ == best["learning_rate"]
    (xv, yv) = data[1]
    assert head.score(xv, yv) == pytest.approx(best["val_accuracy"])  # the kept weights are the best epoch's
    assert [w.shape for w in head.params_[::2]] == [(100, best["hidden_sizes"][0]),
                                                   *[(a, b) for a, b in zip(best["hidden_sizes"],
                                                                            best["hidden_sizes"][1:] + [1])]]


def test_mlp_gradients_match_finite_differences():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((7, 5))
    y = rng.integers(0, 2, 7)
    params = [p.astype(np.float64) for p in heads._init_layers([5, 4, 3, 1], rng)]
    for bias in params[1::2]:  # zero biases put rows whose inputs are all 0 exactly on the ReLU kink
        bias += rng.uniform(0.1, 0.3, bias.shape)

    def loss(ps):
        z, _ = heads._forward(ps, x)
        return np.mean(np.logaddexp(0, z) - y * z)

    z, acts = heads._forward(params, x)
    grads = heads._backward(params, acts, (sigmoid(z) - y) / len(y))
    for p, g in zip(params, grads):
        numeric = np.zeros_like(p)
        for i in np.ndindex(p.shape):
            old = p[i]
            p[i] = old + 1e-6
            up = loss(params)
            p[i] = old - 1e-6
            numeric[i] = (up - loss(params)) / 2e-6
            p[i] = old
        np.testing.assert_allclose(g, numeric, atol=1e-6)


def test_registry_duplicate_and_unknown():
    with pytest.raises(ValueError, match="already registered"):
        heads.register_head("logreg")(type("Other", (), {}))
    with pytest.raises(ValueError, match="unknown head 'svm'; valid: logreg, mlp"):
        heads.get_head_class("svm")


def test_new_head_in_a_few_lines():
    @heads.register_head("test_nearest_mean")
    class NearestMean(heads.Head):
        def fit(self, x_train, y_train, x_val, y_val):
            self.means_ = np.stack([x_train[y_train == k].mean(axis=0) for k in (0, 1)])
            self.n_features_in_, self.classes_, self.selection_ = x_train.shape[1], np.array([0, 1]), {}
            return self

        def decision_function(self, x):
            d = ((x[:, None, :] - self.means_) ** 2).sum(axis=2)
            return d[:, 0] - d[:, 1]

    try:
        (xt, yt), (xv, yv), (xs, ys) = problem()
        head = make_head("test_nearest_mean", seed=0).fit(xt, yt, xv, yv)
        assert head.predict_proba(xs).shape == (len(ys), 2)
    finally:
        del heads._HEADS["test_nearest_mean"]


def test_params_are_sklearn_style():
    head = MLPHead(hidden_grid=((8,),), random_state=3)
    assert head.get_params()["random_state"] == 3 and not hasattr(head, "params_")
    assert make_head("mlp", seed=9).random_state == 9
    assert "random_state" not in LogRegHead().get_params()  # deterministic solver: no seed


def test_bad_input_is_a_clear_error():
    (xt, yt), (xv, yv), _ = problem(n=100)
    with pytest.raises(ValueError, match="labels must be 1 male / 0 female"):
        LogRegHead().fit(xt, yt + 1, xv, yv)
    with pytest.raises(ValueError, match="NaN or infinite"):
        bad = xt.copy()
        bad[3, 2] = np.nan
        LogRegHead().fit(bad, yt, xv, yv)
    head = LogRegHead(Cs=(1.0,)).fit(xt, yt, xv, yv)
    with pytest.raises(ValueError, match="columns"):
        head.predict(xv[:, :5])
    with pytest.raises(ValueError, match="not fitted"):
        MLPHead().predict(xv)


@pytest.mark.parametrize("name", heads.head_names())
def test_head_round_trips_through_arrays_and_a_head_file(name, tmp_path):
    from classify.headfile import read_head_file, write_head_file

    data = problem(d=10)
    head = fit(name, data, **({"hidden_grid": ((8, 4),)} if name == "mlp" else {}))
    fitted, arrays = head.to_arrays()
    decision = {"calibrate": "none", "threshold": {"rule": "default", "value": 0.5},
                "calibrator": {"kind": "probability-calibrator", "version": 1, "method": "none", "params": {}}}
    write_head_file(tmp_path / "h.npz", {"head": name, "fitted": fitted, "backbones": [
        {"name": "bb", "dim": 10, "weights": None}], "n_features": 10, "treatment": {
        "name": "none", "per_backbone": {"bb": "none"}}, "decision": decision}, arrays)
    header, loaded = read_head_file(tmp_path / "h.npz")
    again = heads.get_head_class(name).from_arrays(header["fitted"], loaded)
    x_test = data[2][0]
    assert np.array_equal(again.decision_function(x_test), head.decision_function(x_test))
