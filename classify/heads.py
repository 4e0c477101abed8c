"""Classification heads: scikit-learn style estimators trained on frozen backbone features.

scikit-learn's conventions hold (``__init__`` only stores parameters, ``fit`` returns self, fitted
attributes end in ``_``, ``get_params`` works), but ``fit(x_train, y_train, x_val, y_val)`` also takes the
validation split, on which the head chooses its hyperparameters (`classify.protocol`). ``sample_weight``/
``val_weight`` (optional, one non-negative weight per row, e.g. `classify.balance`'s) weight the training
loss and the val scores. Labels are 1 male / 0 female; ``predict_proba`` columns are ``[female, male]``.

Both heads standardise with train statistics folded into the computation, never a scaled copy (a
162,770 x 2,048 float32 matrix is 1.3 GB): the input is never modified nor copied whole.

A new head is a `Head` subclass under ``@register_head("name")`` with ``_candidates`` (per candidate:
its record with val_accuracy/val_log_loss, its fitted JSON scalars, its arrays), ``_restore``,
``_logits`` (male logit per row), ``to_arrays`` ("mean", "scale", then its arrays: how
`classify.headfile` saves a head without pickle) and the classmethod ``array_spec(fitted, n_features)``:
{array name: (shape, dtype)} of those arrays, known from the JSON scalars before any array is read
(ValueError if ``fitted`` is not the head's).
"""
from __future__ import annotations

import itertools
import logging
from typing import Callable

import numpy as np
from scipy.optimize import minimize
from sklearn.base import BaseEstimator, ClassifierMixin

from classify.calibration import finite_number, sigmoid

log = logging.getLogger(__name__)

_HEADS: dict[str, type["Head"]] = {}
_FTOL = 64 * np.finfo(float).eps  # as scikit-learn's lbfgs: stop on the gradient (gtol), not on f
_CHUNK_ROWS = 4096  # rows per block: a 2,048-d float64 block is 64 MB


def register_head(name: str) -> Callable[[type], type]:
    """Class decorator adding a head to the registry under ``name``; a duplicate name raises."""

    def decorator(cls: type) -> type:
        if name in _HEADS:
            raise ValueError(f"head {name!r} is already registered (by {_HEADS[name].__name__})")
        _HEADS[name] = cls
        cls.head_name = name
        return cls

    return decorator


def head_names() -> list[str]:
    """Registered head names, sorted."""
    return sorted(_HEADS)


def get_head_class(name: str) -> type["Head"]:
    """The head class registered as ``name``; unknown names raise ValueError listing the valid ones."""
    if name not in _HEADS:
        raise ValueError(f"unknown head {name!r}; valid: {', '.join(head_names())}")
    return _HEADS[name]


def make_head(name: str, *, seed: int, **params) -> "Head":
    """A fresh, unfitted head ``name`` with ``params``; ``seed`` goes to its ``random_state``."""
    cls = get_head_class(name)
    if "random_state" in cls().get_params():
        params = {"random_state": seed, **params}
    return cls(**params)


def _check_xy(x: np.ndarray, y: np.ndarray | None = None, *, what: str) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[0] == 0:
        raise ValueError(f"{what}: expected a non-empty 2-D array of features, got shape {getattr(x, 'shape', None)}")
    if y is None:
        return
    if y.shape != (x.shape[0],):
        raise ValueError(f"{what}: labels have shape {y.shape}, expected ({x.shape[0]},)")
    labels = set(np.unique(y).tolist())
    if not labels <= {0, 1}:
        raise ValueError(f"{what}: labels must be 1 male / 0 female, got values {sorted(labels)}")


def column_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-column mean and standard deviation (float32), accumulated in float64 chunk by chunk; constant
    columns get scale 1. ValueError if the features contain NaN or infinity."""
    total = np.zeros(x.shape[1], dtype=np.float64)
    total_sq = np.zeros(x.shape[1], dtype=np.float64)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        chunk = x[start:start + _CHUNK_ROWS].astype(np.float64)
        total += chunk.sum(axis=0)
        total_sq += np.einsum("ij,ij->j", chunk, chunk)
    if not (np.isfinite(total).all() and np.isfinite(total_sq).all()):
        raise ValueError("features contain NaN or infinite values")
    mean = total / x.shape[0]
    std = np.sqrt(np.maximum(total_sq / x.shape[0] - mean**2, 0.0))
    std[std < 1e-12 * np.maximum(1.0, np.abs(mean))] = 1.0
    return mean.astype(np.float32), std.astype(np.float32)


def val_scores(y: np.ndarray, logits: np.ndarray, weight: np.ndarray | None = None) -> dict[str, float]:
    """The selection criteria on val: accuracy of ``logits > 0`` and log loss, ``weight``-averaged."""
    z = logits.astype(np.float64)
    return {"val_accuracy": float(np.average((logits > 0) == (y == 1), weights=weight)),
            "val_log_loss": float(np.average(np.logaddexp(0.0, z) - y * z, weights=weight))}


def _row_weights(weight, n: int, *, what: str) -> np.ndarray | None:
    """``weight`` checked (n finite non-negative values, positive sum) and scaled to mean 1; None stays None."""
    if weight is None:
        return None
    weight = np.asarray(weight, dtype=np.float64)
    if weight.shape != (n,) or not np.isfinite(weight).all() or (weight < 0).any() or weight.sum() <= 0:
        raise ValueError(f"{what}: expected {n} finite non-negative weights with a positive sum, "
                         f"got shape {weight.shape}")
    return weight * (n / weight.sum())


def best_index(records: list[dict]) -> int:
    """Index of the best record: highest val accuracy, then lowest val log loss, then earliest."""
    return min((-r["val_accuracy"], r["val_log_loss"], i) for i, r in enumerate(records))[2]


def _chunked_logits(x: np.ndarray, logits_of: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """``logits_of`` applied to `_CHUNK_ROWS` rows of ``x`` at a time, into one float32 vector."""
    out = np.empty(x.shape[0], dtype=np.float32)
    for start in range(0, x.shape[0], _CHUNK_ROWS):
        out[start:start + _CHUNK_ROWS] = logits_of(x[start:start + _CHUNK_ROWS])
    return out


class Head(ClassifierMixin, BaseEstimator):
    """Base of the binary heads: predictions from the male logit (``decision_function``).

    ``fit`` standardises on train (``mean_``/``scale_``), fits every candidate of ``_candidates`` and keeps
    the best on val (`best_index`); ``selection_`` records the choice (for results files) and, as
    ``selection_[tried]`` and ``<tried>_``, every candidate's record.
    """

    head_name = "?"
    _tried = "?"  # the name of the candidates' records: logreg's C path, the MLP's grid

    def fit(self, x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, *,
            sample_weight: np.ndarray | None = None, val_weight: np.ndarray | None = None) -> "Head":
        _check_xy(x_train, y_train, what="train")
        _check_xy(x_val, y_val, what="val")
        weight = _row_weights(sample_weight, len(y_train), what="sample_weight")
        val_weight = _row_weights(val_weight, len(y_val), what="val_weight")
        self.n_features_in_, self.classes_ = x_train.shape[1], np.array([0, 1])
        self.mean_, self.scale_ = column_stats(x_train)
        tried = list(self._candidates(x_train, y_train, x_val, y_val, weight, val_weight))
        records = [record for record, _, _ in tried]
        self._restore(*tried[best_index(records)][1:])
        setattr(self, f"{self._tried}_", records)
        self.selection_[self._tried] = records
        return self

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """(n, 2) probabilities, columns [female, male]."""
        male = sigmoid(self.decision_function(x).astype(np.float64))
        return np.column_stack([1.0 - male, male])

    def predict(self, x: np.ndarray) -> np.ndarray:
        """1 male / 0 female per row."""
        return (self.decision_function(x) > 0).astype(np.int8)

    @classmethod
    def from_arrays(cls, fitted: dict, arrays: dict[str, np.ndarray]) -> "Head":
        """The fitted head back from what `to_arrays` gave, as `classify.headfile.read_head_file` read them:
        exactly the arrays of `array_spec`, finite, of their shapes and dtypes (checked there, not again)."""
        head = cls()
        head.n_features_in_, head.classes_ = arrays["mean"].shape[0], np.array([0, 1])
        head.mean_, head.scale_, *rest = (arrays[name] for name in cls.array_spec(fitted, head.n_features_in_))
        head._restore(fitted, rest)
        return head

    def decision_function(self, x: np.ndarray) -> np.ndarray:
        """Male logit per row (the head's ``_logits`` of checked features)."""
        if not hasattr(self, "n_features_in_"):
            raise ValueError(f"{type(self).__name__} is not fitted yet; call fit first")
        _check_xy(x, what="predict")
        if x.shape[1] != self.n_features_in_:
            raise ValueError(f"features have {x.shape[1]} columns, the head was fitted on {self.n_features_in_}")
        return self._logits(x)


def _logreg_objective(x, y, mean, inv_scale, c, weight=None):
    """Loss and gradient of L2 logistic regression on standardised x, without forming it: mean(log loss) +
    |w|^2 / (2 C n), i.e. scikit-learn's C * sum(log loss) + |w|^2 / 2 divided by n (same minimiser); the
    intercept is not penalised. ``weight`` (mean 1, or None) weights each row's log loss (``sample_weight``)."""
    n = x.shape[0]
    row_weight = np.ones(n) if weight is None else weight

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w, b = theta[:-1], theta[-1]
        v = (w * inv_scale).astype(np.float32)
        logits = (x @ v).astype(np.float64) + (b - float(mean @ v))
        loss = np.mean(row_weight * (np.logaddexp(0.0, logits) - y * logits)) + (w @ w) / (2 * c * n)
        r = (row_weight * (sigmoid(logits) - y) / n).astype(np.float32)
        r_sum = float(r.sum(dtype=np.float64))
        grad_w = inv_scale * ((x.T @ r).astype(np.float64) - mean * r_sum) + w / (c * n)
        return float(loss), np.append(grad_w, r_sum)

    return objective


@register_head("logreg")
class LogRegHead(Head):
    """Standardised L2 logistic regression; C chosen on val along a warm-started path.

    The path runs from the strongest to the weakest regularisation, each fit (L-BFGS) starting from the
    previous solution. It stops when the largest gradient entry of the mean loss is below ``tol``, as
    scikit-learn's ``lbfgs`` does, but tighter by default: with 160k rows, scikit-learn's 1e-4 ends the
    large-C steps of the path after 0 or 1 iteration. Fitted: ``coef_``/``intercept_`` in standardised
    space, ``C_``, ``path_`` (C, val scores and iterations per step).
    """

    _tried = "path"

    def __init__(self, *, Cs: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0), max_iter: int = 200,
                 tol: float = 1e-6):
        self.Cs = Cs
        self.max_iter = max_iter
        self.tol = tol

    def _candidates(self, x_train, y_train, x_val, y_val, weight, val_weight):
        inv_scale = 1.0 / self.scale_.astype(np.float64)
        y = y_train.astype(np.float64)
        theta = np.zeros(x_train.shape[1] + 1)
        for c in sorted(self.Cs):
            objective = _logreg_objective(x_train, y, self.mean_.astype(np.float64), inv_scale, c, weight)
            res = minimize(objective, theta, jac=True, method="L-BFGS-B",
                           options={"maxiter": self.max_iter, "gtol": self.tol, "ftol": _FTOL})
            theta = res.x
            self.coef_, self.intercept_ = theta[:-1].copy(), float(theta[-1])
            step = {"C": c, "n_iter": int(res.nit), "converged": bool(res.success),
                    **val_scores(y_val, self.decision_function(x_val), val_weight)}
            log.debug("logreg C=%g: %d iterations, val accuracy %.4f (selection criterion; ties: val log "
                      "loss %.4f)", c, res.nit, step["val_accuracy"], step["val_log_loss"])
            yield step, {"C": c, "intercept": float(theta[-1])}, [theta[:-1]]

    def _restore(self, fitted: dict, arrays: list[np.ndarray]) -> None:
        (self.coef_,) = arrays
        self.C_, self.intercept_ = float(fitted["C"]), float(fitted["intercept"])
        self.selection_ = {"C": self.C_}

    def _logits(self, x: np.ndarray) -> np.ndarray:
        v = self.coef_ / self.scale_.astype(np.float64)
        weights, bias = v.astype(np.float32), np.float32(self.intercept_ - float(self.mean_ @ v))
        return _chunked_logits(x, lambda rows: rows @ weights + bias)

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        fitted = {"C": float(self.C_), "intercept": float(self.intercept_)}
        return fitted, {"mean": self.mean_, "scale": self.scale_, "coef": np.asarray(self.coef_, np.float64)}

    @classmethod
    def array_spec(cls, fitted, n_features: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        if not isinstance(fitted, dict) or set(fitted) != {"C", "intercept"} or not all(
                finite_number(fitted[key]) for key in fitted):
            raise ValueError("logreg fitted state must be {C, intercept}, finite numbers")
        return {"mean": ((n_features,), np.dtype(np.float32)), "scale": ((n_features,), np.dtype(np.float32)),
                "coef": ((n_features,), np.dtype(np.float64))}


def _init_layers(sizes: list[int], rng: np.random.Generator) -> list[np.ndarray]:
    """[W0, b0, W1, b1, ...] float32; He init for the ReLU layers, Glorot for the output."""
    params = []
    for i, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        std = np.sqrt(2.0 / (fan_in + fan_out)) if i == len(sizes) - 2 else np.sqrt(2.0 / fan_in)
        params += [(rng.standard_normal((fan_in, fan_out)) * std).astype(np.float32),
                   np.zeros(fan_out, dtype=np.float32)]
    return params


def _forward(params: list[np.ndarray], x: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Output logit (n,) and the activations entering each layer."""
    acts = [x]
    for i in range(0, len(params) - 2, 2):
        acts.append(np.maximum(acts[-1] @ params[i] + params[i + 1], 0.0))
    return (acts[-1] @ params[-2] + params[-1])[:, 0], acts


def _backward(params, acts, dz: np.ndarray) -> list[np.ndarray]:
    """Gradients of the loss for every parameter, given d loss / d logit ``dz`` (n,)."""
    grads = [None] * len(params)
    delta = dz[:, None]
    for i in range(len(params) - 2, -1, -2):
        grads[i] = acts[i // 2].T @ delta
        grads[i + 1] = delta.sum(axis=0)
        if i:
            delta = (delta @ params[i].T) * (acts[i // 2] > 0)
    return grads


class _Adam:
    """Adam (Kingma & Ba) with L2 weight decay on the weight matrices; moments kept in float32."""

    def __init__(self, params, *, lr: float, weight_decay: float, betas=(0.9, 0.999), eps=1e-8):
        self.lr, self.weight_decay, self.betas, self.eps = lr, weight_decay, betas, eps
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.t = 0

    def step(self, params, grads) -> None:
        self.t += 1
        b1, b2 = self.betas
        correction = np.sqrt(1 - b2**self.t) / (1 - b1**self.t)
        for p, g, m, v in zip(params, grads, self.m, self.v):
            if p.ndim == 2 and self.weight_decay:
                g = g + self.weight_decay * p
            m *= b1
            m += (1 - b1) * g
            v *= b2
            v += (1 - b2) * g * g
            p -= (self.lr * correction) * m / (np.sqrt(v) + self.eps)


@register_head("mlp")
class MLPHead(Head):
    """ReLU multilayer perceptron trained with Adam on cross-entropy, early-stopped on val.

    Each (hidden sizes, learning rate) pair of the grid is trained from the same seed, in minibatches of
    the train rows in a seeded random order, until ``patience`` epochs pass without improving the val
    log loss; the best epoch's weights are kept. Fitted: ``params_`` ([W0, b0, ...] float32),
    ``hidden_sizes_``, ``learning_rate_``, ``best_epoch_``, ``grid_`` (one record per grid point).
    """

    _tried = "grid"

    def __init__(self, *, hidden_grid: tuple[tuple[int, ...], ...] = ((256,),),
                 lr_grid: tuple[float, ...] = (1e-3, 3e-4), batch_size: int = 512, max_epochs: int = 30,
                 patience: int = 3, weight_decay: float = 1e-4, random_state: int = 0):
        self.hidden_grid = hidden_grid
        self.lr_grid = lr_grid
        self.batch_size = batch_size
        self.max_epochs = max_epochs
        self.patience = patience
        self.weight_decay = weight_decay
        self.random_state = random_state

    def _candidates(self, x, y, x_val, y_val, weight, val_weight):
        y32 = y.astype(np.float32)
        for hidden, lr in itertools.product(map(tuple, self.hidden_grid), self.lr_grid):
            rng = np.random.default_rng(self.random_state)
            params = _init_layers([x.shape[1], *hidden, 1], rng)
            adam = _Adam(params, lr=lr, weight_decay=self.weight_decay)
            best = {"val_log_loss": np.inf, "val_accuracy": 0.0, "best_epoch": 0}
            best_params, stale, epoch = [p.copy() for p in params], 0, 0
            for epoch in range(1, self.max_epochs + 1):
                self._epoch(params, adam, x, y32, rng, weight)
                scores = val_scores(y_val, self._logits(x_val, params), val_weight)
                if scores["val_log_loss"] < best["val_log_loss"] - 1e-5:
                    best, best_params, stale = {**scores, "best_epoch": epoch}, [p.copy() for p in params], 0
                else:
                    stale += 1
                log.debug("mlp %s lr=%g epoch %d: val log loss %.4f (early-stopping criterion), val accuracy %.4f",
                          hidden, lr, epoch, scores["val_log_loss"], scores["val_accuracy"])
                if stale >= self.patience:
                    break
            record = {"hidden_sizes": list(hidden), "learning_rate": lr, "epochs_run": epoch, **best}
            yield record, record, best_params

    def _restore(self, fitted: dict, arrays: list[np.ndarray]) -> None:
        self.params_ = arrays
        self.hidden_sizes_ = tuple(int(h) for h in fitted["hidden_sizes"])
        self.learning_rate_, self.best_epoch_ = float(fitted["learning_rate"]), int(fitted["best_epoch"])
        self.selection_ = {"hidden_sizes": list(self.hidden_sizes_), "learning_rate": self.learning_rate_,
                           "best_epoch": self.best_epoch_}

    def _epoch(self, params, adam: _Adam, x, y32, rng: np.random.Generator, weight=None) -> None:
        order = rng.permutation(x.shape[0])
        for start in range(0, len(order), self.batch_size):
            rows = np.sort(order[start:start + self.batch_size])  # sorted: faster gather, same batch
            xb = (x[rows] - self.mean_) / self.scale_
            logits, acts = _forward(params, xb)
            dz = (sigmoid(logits) - y32[rows]) / len(rows)
            if weight is not None:
                dz = dz * weight[rows].astype(np.float32)
            adam.step(params, _backward(params, acts, dz.astype(np.float32)))

    def _logits(self, x: np.ndarray, params: list[np.ndarray] | None = None) -> np.ndarray:
        """Male logits of ``x`` under ``params`` (a candidate's during training), else the fitted ``params_``."""
        params = self.params_ if params is None else params
        return _chunked_logits(x, lambda rows: _forward(params, (rows - self.mean_) / self.scale_)[0])

    def to_arrays(self) -> tuple[dict, dict[str, np.ndarray]]:
        fitted = {"hidden_sizes": list(self.hidden_sizes_), "learning_rate": float(self.learning_rate_),
                  "best_epoch": int(self.best_epoch_)}
        return fitted, {"mean": self.mean_, "scale": self.scale_,
                        **{f"layer{i // 2}_{'bias' if i % 2 else 'weight'}": p for i, p in enumerate(self.params_)}}

    @classmethod
    def array_spec(cls, fitted, n_features: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
        hidden = fitted.get("hidden_sizes") if isinstance(fitted, dict) else None
        if (not isinstance(fitted, dict) or set(fitted) != {"hidden_sizes", "learning_rate", "best_epoch"}
                or not isinstance(hidden, list) or not 0 < len(hidden) <= _MAX_LAYERS
                or not all(isinstance(h, int) and not isinstance(h, bool) and 0 < h <= _MAX_WIDTH for h in hidden)
                or not finite_number(fitted["learning_rate"]) or not isinstance(fitted["best_epoch"], int)):
            raise ValueError(f"mlp fitted state must be {{hidden_sizes: 1 to {_MAX_LAYERS} sizes of 1 to "
                             f"{_MAX_WIDTH}, learning_rate: a finite number, best_epoch: an integer}}")
        spec = {"mean": ((n_features,), np.dtype(np.float32)), "scale": ((n_features,), np.dtype(np.float32))}
        sizes = [n_features, *hidden, 1]
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            spec[f"layer{layer}_weight"] = ((fan_in, fan_out), np.dtype(np.float32))
            spec[f"layer{layer}_bias"] = ((fan_out,), np.dtype(np.float32))
        return spec


_MAX_LAYERS, _MAX_WIDTH = 16, 65_536  # beyond any head this tool trains; bounds what a head file may declare
