"""Reweighing the training rows so that gender no longer predicts a confounding attribute.

Why: in CelebA far more women than men are young (`Young`: 87% against 64% on the shared subset's
labelled train rows), and a head trained there learns "older -> male" (measured in docs/findings.md).

Reweighing (Kamiran & Calders, 2012) gives every row of a (gender g, stratum s) cell the weight
P(g) P(s) / P(g, s): under the weighted rows the stratum is independent of gender, and the total weight
is still the number of rows. The head is fitted on the weighted train rows, and its hyperparameters are
chosen on val rows weighted the same way, so that they suit the same reweighted distribution.

Strata: the attribute value (**attribute**) when every train and val row records it; else (**proxy**) a
standardised logistic regression fitted on the labelled train rows (C by 5-fold cross-validation)
predicts P(attribute) for every row, binned at `PROXY_BINS`.

Weights are clipped to [1 / MAX_WEIGHT, MAX_WEIGHT]: a nearly empty cell must not hand a few rows the
whole fit. `BalanceResult.record` (the method, the proxy's labelled rows, each cell's rows and weight)
is saved with the run's results.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from classify.groups import MISSING  # how a store marks an attribute an image does not have

PROXY_BINS = (0.2, 0.4, 0.6, 0.8)  # edges on the proxy's P(attribute): 5 strata
MIN_LABELLED = 20                   # train rows needed with each attribute value
PROXY_CS = (1e-3, 1e-2, 1e-1, 1.0)  # the proxy's inverse regularisation strengths, chosen by 5-fold CV
MAX_WEIGHT = 10.0
PREDICT_ROWS = 4096                 # rows the proxy predicts at a time


class BalanceError(ValueError):
    """The attribute cannot balance these rows (absent, not binary, too few labelled rows)."""


@dataclass(frozen=True)
class BalanceResult:
    """Train and val row weights (mean 1) and the JSON-ready record of how they were made."""

    train: np.ndarray
    val: np.ndarray
    record: dict


def balance(attribute: str, *, x_train: np.ndarray, y_train: np.ndarray, a_train: np.ndarray | None,
            x_val: np.ndarray, y_val: np.ndarray, a_val: np.ndarray | None, seed: int = 0) -> BalanceResult:
    """Weights that make ``attribute`` independent of gender on train and on val (module docstring).
    ``a_train``/``a_val``: the attribute per row (1/0, `MISSING` where unknown), None when not recorded."""
    if a_train is None or a_val is None:
        raise BalanceError(f"--balance-by {attribute}: the training store does not record this attribute")
    for name, values in (("train", a_train), ("val", a_val)):
        if unknown := sorted(set(np.unique(values).tolist()) - {0, 1, MISSING}):
            raise BalanceError(f"--balance-by {attribute}: needs a binary attribute (1/0), {name} rows have "
                               f"the values {unknown[:5]}")
    counts = [int(np.sum(a_train == v)) for v in (0, 1)]
    if min(counts) < MIN_LABELLED:
        raise BalanceError(f"--balance-by {attribute}: {counts[1]} train rows have it and {counts[0]} do not "
                           f"({int(np.sum(a_train == MISSING))} do not record it); at least {MIN_LABELLED} of "
                           "each are needed")
    if np.all(a_train != MISSING) and np.all(a_val != MISSING):
        s_train, s_val = a_train.astype(np.int64), a_val.astype(np.int64)
        method = {"method": "attribute", "strata": "the attribute value (0, 1)"}
    else:
        proxy, method = _fit_proxy(attribute, x_train, a_train, seed=seed)
        s_train, s_val = (proxy_strata(proxy, x) for x in (x_train, x_val))
    w_train, cells = reweigh(y_train, s_train)
    return BalanceResult(train=w_train, val=reweigh(y_val, s_val)[0],
                         record={"attribute": attribute, **method, "max_weight": MAX_WEIGHT, "train_cells": cells})


def reweigh(gender: np.ndarray, strata: np.ndarray) -> tuple[np.ndarray, list[dict]]:
    """Kamiran-Calders weights P(g) P(s) / P(g, s) per row, clipped, scaled to mean 1, and the cells."""
    weight = np.ones(len(gender), dtype=np.float64)
    cells = []
    for stratum in np.unique(strata):
        in_stratum = strata == stratum
        for g in (0, 1):
            cell = in_stratum & (gender == g)
            if not cell.any():
                continue
            value = in_stratum.mean() * (gender == g).mean() / cell.mean()
            weight[cell] = np.clip(value, 1 / MAX_WEIGHT, MAX_WEIGHT)
            cells.append({"stratum": int(stratum), "male": bool(g), "rows": int(cell.sum()),
                          "weight": round(float(value), 4)})
    return weight * (len(weight) / weight.sum()), cells


def proxy_strata(proxy, x: np.ndarray) -> np.ndarray:
    """Each row's stratum: the proxy's P(attribute) binned at `PROXY_BINS`, `PREDICT_ROWS` rows at a time
    (the pipeline's standardised and float64 copies of all rows would be three times the train matrix)."""
    strata = np.empty(len(x), dtype=np.int64)
    for first in range(0, len(x), PREDICT_ROWS):
        rows = slice(first, first + PREDICT_ROWS)
        strata[rows] = np.digitize(proxy.predict_proba(x[rows])[:, 1], PROXY_BINS)
    return strata


def _fit_proxy(attribute: str, x: np.ndarray, values: np.ndarray, *, seed: int):
    """The proxy predicting the attribute, fitted on the labelled rows, and its record."""
    labelled = values != MISSING
    x, values = x[labelled], values[labelled]
    folds = StratifiedKFold(n_splits=5, shuffle=True, random_state=seed)
    scores = [float(np.mean(cross_val_score(standardised_logreg(c), x, values, cv=folds))) for c in PROXY_CS]
    chosen_c, cv_accuracy = PROXY_CS[int(np.argmax(scores))], max(scores)
    model = standardised_logreg(chosen_c).fit(x, values)
    method = {"method": "proxy", "labelled_train_rows": int(labelled.sum()), "proxy": "standardised logistic "
              f"regression, C={chosen_c:g} by 5-fold CV (accuracy {cv_accuracy:.3f})",
              "strata": f"P({attribute}) binned at {list(PROXY_BINS)}"}
    return model, method


def standardised_logreg(c: float):
    """scikit-learn's logistic regression on standardised features."""
    return make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000))
