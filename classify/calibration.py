"""Can the probability be trusted? Calibration metrics, post-hoc calibrators, the decision threshold.

Metrics (`calibration_report`), on p(male) per row:
- ECE: rows binned into ``n_bins`` (default 15) equal-width bins of p(male) on [0, 1], closed on the right
  (the first also holds 0) as scikit-learn's ``calibration_curve(strategy="uniform")`` bins them; ECE =
  sum over non-empty bins of (rows in bin / rows) * |fraction male - mean p(male)|, its binning written
  beside it (``binning``). ``on="confidence"`` bins max(p, 1 - p) on [0.5, 1] against the fraction
  predicted correctly (Guo et al.'s top-label ECE).
- Brier score, log loss (p clipped to [1e-15, 1 - 1e-15]) and the reliability-diagram bins (edges, n,
  mean p, fraction male).

Calibrators (`fit_calibrator`), fitted on the head's val probabilities: ``none`` (the identity),
``temperature`` (sigmoid(logit(p) / T), T > 0) and ``platt`` (sigmoid(a * logit(p) + b)), both by maximum
likelihood, and ``isotonic`` (scikit-learn's IsotonicRegression clipped to its range, kept as its
breakpoints and applied by the same linear interpolation). The method is chosen by its log loss under
`N_FOLDS`-fold cross-validation on val (folds stratified by sex, seeded): scored on the rows it was
fitted on, isotonic, which memorises them, would always win. The chosen method is refitted on all of val.
A calibrator is plain JSON (`Calibrator.to_json` / `Calibrator.from_json`), never a pickle.

Decision threshold (`decision_threshold`) on the (calibrated) p(male), male when p > threshold: ``0.5``
(the default), a fixed value in (0, 1), or ``balanced``: the threshold on val that makes male and female
recall as equal as possible (ties: the higher balanced accuracy, then the threshold nearest 0.5), midway
between two consecutive distinct val probabilities.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import minimize, minimize_scalar

CALIBRATOR_KIND = "probability-calibrator"
CALIBRATOR_VERSION = 1
METHODS = ("none", "temperature", "platt", "isotonic")
N_FOLDS = 5
_EPS = 1e-15
_MAX_BREAKPOINTS = 1_000_000  # isotonic breakpoints: at most one per val row


class CalibrationError(ValueError):
    """A calibrator file or a threshold rule that cannot be used."""


def _checked(y, p) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y), np.asarray(p, dtype=np.float64)
    if y.ndim != 1 or y.shape != p.shape or y.size == 0:
        raise ValueError(f"labels and probabilities must be non-empty and 1-D of equal length, "
                         f"got {y.shape} and {p.shape}")
    if not set(np.unique(y).tolist()) <= {0, 1}:
        raise ValueError(f"labels must be 1 male / 0 female, got {sorted(np.unique(y).tolist())}")
    if not np.all((p >= 0) & (p <= 1)):
        raise ValueError("probabilities must lie in [0, 1]")
    return y.astype(np.float64), p


def reliability(y, p, *, n_bins: int = 15, on: str = "p_male") -> dict:
    """Reliability-diagram bins and the ECE computed from them (see the module docstring)."""
    y, p = _checked(y, p)
    if on == "p_male":
        score, outcome, low = p, y, 0.0
        binning = f"{n_bins} equal-width bins of p(male) on [0, 1], closed on the right"
    elif on == "confidence":
        score, outcome, low = np.maximum(p, 1 - p), ((p > 0.5) == (y == 1)).astype(np.float64), 0.5
        binning = f"{n_bins} equal-width bins of confidence max(p, 1-p) on [0.5, 1], closed on the right"
    else:
        raise ValueError(f"on must be 'p_male' or 'confidence', not {on!r}")
    edges = np.linspace(low, 1.0, n_bins + 1)
    which = np.searchsorted(edges[1:-1], score, side="left")
    n = np.bincount(which, minlength=n_bins)
    with np.errstate(invalid="ignore"):
        mean_score = np.bincount(which, weights=score, minlength=n_bins) / n
        observed = np.bincount(which, weights=outcome, minlength=n_bins) / n
    filled = n > 0
    ece = float(np.sum(n[filled] / len(y) * np.abs(observed[filled] - mean_score[filled])))
    bins = [{"low": float(edges[i]), "high": float(edges[i + 1]), "n": int(n[i]),
             "mean_predicted": float(mean_score[i]) if filled[i] else None,
             "observed": float(observed[i]) if filled[i] else None} for i in range(n_bins)]
    return {"ece": ece, "binning": binning, "bins": bins}


def brier_score(y, p) -> float:
    y, p = _checked(y, p)
    return float(np.mean((p - y) ** 2))


def log_loss(y, p) -> float:
    y, p = _checked(y, p)
    p = np.clip(p, _EPS, 1 - _EPS)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)))


def calibration_report(y, p) -> dict:
    """ECE (binning stated), top-label ECE, Brier score, log loss and the reliability bins; JSON-ready."""
    diagram = reliability(y, p)
    return {"n": int(len(y)), "ece": diagram["ece"], "binning": diagram["binning"],
            "ece_confidence": reliability(y, p, on="confidence")["ece"],
            "brier": brier_score(y, p), "log_loss": log_loss(y, p), "reliability": diagram["bins"]}


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(np.asarray(p, dtype=np.float64), _EPS, 1 - _EPS)
    return np.log(p) - np.log1p(-p)


def sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1 + np.tanh(0.5 * z))  # overflow-free


@dataclass(frozen=True)
class Calibrator:
    """A fitted post-hoc calibrator: ``method`` and its parameters (plain floats and lists)."""

    method: str
    params: dict = field(default_factory=dict)
    fitted_on: dict = field(default_factory=dict)

    def apply(self, p) -> np.ndarray:
        """Calibrated p(male) for raw p(male)."""
        p = np.asarray(p, dtype=np.float64)
        if self.method == "none":
            return p.copy()
        if self.method == "temperature":
            return sigmoid(_logit(p) / self.params["temperature"])
        if self.method == "platt":
            return sigmoid(self.params["a"] * _logit(p) + self.params["b"])
        return np.interp(p, self.params["x"], self.params["y"])

    def to_json(self) -> dict:
        return {"kind": CALIBRATOR_KIND, "version": CALIBRATOR_VERSION, "method": self.method,
                "params": self.params, "fitted_on": self.fitted_on}

    @classmethod
    def from_json(cls, record: dict) -> Calibrator:
        """Validate a calibrator record (as written by `to_json`) and rebuild it."""
        if not isinstance(record, dict) or record.get("kind") != CALIBRATOR_KIND:
            raise CalibrationError(f"not a calibrator record (kind {CALIBRATOR_KIND!r} expected)")
        if record.get("version") != CALIBRATOR_VERSION:
            raise CalibrationError(f"calibrator version {record.get('version')!r} is not "
                                   f"{CALIBRATOR_VERSION}; retrain or upgrade")
        # the parameters must be the JSON values the method needs: finite numbers (lists of them for
        # isotonic), so a crafted record cannot reach numpy as strings, NaN or nested lists
        method, params = record.get("method"), record.get("params", {})
        wanted = {"none": set(), "temperature": {"temperature"}, "platt": {"a", "b"}, "isotonic": {"x", "y"}}
        if not isinstance(method, str) or method not in wanted:
            raise CalibrationError(f"unknown calibration method {str(method)[:40]!r}; valid: {', '.join(METHODS)}")
        if not isinstance(params, dict) or set(params) != wanted[method]:
            got = sorted(params) if isinstance(params, dict) else type(params).__name__
            raise CalibrationError(f"{method} calibrator needs parameters {sorted(wanted[method])}, got {got}")
        if method in ("temperature", "platt") and not all(finite_number(v) for v in params.values()):
            raise CalibrationError(f"{method} calibrator parameters must be finite numbers")
        if method == "temperature" and not params["temperature"] > 0:
            raise CalibrationError("temperature must be positive")
        if method == "isotonic":
            x, y = params["x"], params["y"]
            if not (isinstance(x, list) and isinstance(y, list) and 0 < len(x) == len(y) <= _MAX_BREAKPOINTS
                    and all(finite_number(v) for v in x + y)):
                raise CalibrationError("isotonic breakpoints must be equal-length lists of finite numbers")
            if np.any(np.diff(np.asarray(x, dtype=float)) < 0):
                raise CalibrationError("isotonic breakpoints must have x non-decreasing")
        fitted_on = record.get("fitted_on", {})
        if not isinstance(fitted_on, dict):
            raise CalibrationError("calibrator fitted_on must be a record")
        return cls(method, params, fitted_on)


def finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and bool(np.isfinite(value))


def fit_method(method: str, y, p) -> Calibrator:
    """Fit one calibration method on (labels, raw p(male))."""
    y, p = _checked(y, p)
    if method == "none":
        return Calibrator("none")
    if method == "temperature":
        z = _logit(p)
        found = minimize_scalar(lambda log_t: _nll(y, z / np.exp(log_t)), bounds=(-5, 5), method="bounded",
                                options={"xatol": 1e-8})
        return Calibrator("temperature", {"temperature": float(np.exp(found.x))})
    if method == "platt":
        z = _logit(p)

        def objective(ab):
            s = ab[0] * z + ab[1]
            gradient = sigmoid(s) - y
            return _nll(y, s), np.array([np.mean(gradient * z), np.mean(gradient)])

        found = minimize(objective, x0=np.array([1.0, 0.0]), jac=True, method="BFGS", options={"gtol": 1e-9})
        return Calibrator("platt", {"a": float(found.x[0]), "b": float(found.x[1])})
    if method == "isotonic":
        from sklearn.isotonic import IsotonicRegression

        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(p, y)
        return Calibrator("isotonic", {"x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()})
    raise ValueError(f"unknown calibration method {method!r}; valid: {', '.join(METHODS)}")


def _nll(y, z) -> float:
    return float(np.mean(np.logaddexp(0, z) - y * z))


def _folds(y: np.ndarray, seed: int) -> np.ndarray:
    """Fold number per row, each sex dealt round-robin over the folds after a seeded shuffle."""
    rng = np.random.default_rng(seed)
    fold = np.empty(len(y), dtype=np.int64)
    for label in (0, 1):
        rows = rng.permutation(np.flatnonzero(y == label))
        fold[rows] = np.arange(len(rows)) % N_FOLDS
    return fold


def fit_calibrator(y_val, p_val, *, methods=METHODS, seed: int = 0) -> Calibrator:
    """The method with the best cross-validated log loss on val, refitted on all of val. One method
    asked for: fitted on all of val, nothing to compare. Several, but too few rows of a sex for every fold
    to train on both: no calibration ("none"), rather than a choice made on noise."""
    y, p = _checked(y_val, p_val)
    unknown = set(methods) - set(METHODS)
    if unknown or not methods:
        raise ValueError(f"unknown calibration methods {sorted(unknown)}; valid: {', '.join(METHODS)}")
    counts = np.bincount(y.astype(np.int64), minlength=2)
    scores = {}
    if len(methods) == 1:
        chosen, why = methods[0], "the only method asked for, fitted on all of val"
    elif counts.min() < N_FOLDS:
        chosen, why = "none", (f"val has {counts[1]} male and {counts[0]} female rows, too few for {N_FOLDS}-fold "
                               "cross-validation: no calibration")
    else:
        fold = _folds(y, seed)
        for method in methods:
            out = np.empty_like(p)
            for k in range(N_FOLDS):
                held = fold == k
                out[held] = fit_method(method, y[~held], p[~held]).apply(p[held])
            scores[method] = log_loss(y, out)
        chosen = min(methods, key=lambda m: (scores[m], METHODS.index(m)))  # ties: the simpler method
        why = (f"{N_FOLDS}-fold cross-validation on val (folds stratified by sex, seed {seed}), then refitted on "
               "all of val")
    return Calibrator(chosen, fit_method(chosen, y, p).params, {"n": int(len(y)), "criterion": "log_loss",
                                                                "selection": why, "cv_scores": scores})


def parse_threshold(text: str) -> str | float:
    """A CLI value: 'balanced', or a number strictly between 0 and 1."""
    if text == "balanced":
        return text
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0 < value < 1:
        raise CalibrationError(f"threshold must be 'balanced' or a number in (0, 1), not {text!r}")
    return value


def decision_threshold(rule: str | float = 0.5, y_val=None, p_val=None) -> dict:
    """{"rule", "value", and for balanced the val recalls it gives}; predicted male when p > value."""
    if rule != "balanced":
        value = parse_threshold(str(rule))
        return {"rule": "fixed" if value != 0.5 else "default", "value": value}
    if y_val is None or p_val is None:
        raise CalibrationError("the balanced threshold is chosen on val: give val labels and probabilities")
    y, p = _checked(y_val, p_val)
    if len(np.unique(y)) < 2:
        raise CalibrationError("the balanced threshold needs both sexes among the val rows")
    levels = np.unique(p)  # candidate i: male when p > levels[i], placed midway to the next level
    male, female = np.sort(p[y == 1]), np.sort(p[y == 0])
    tpr = 1 - np.searchsorted(male, levels, side="right") / len(male)  # male recall
    tnr = np.searchsorted(female, levels, side="right") / len(female)  # female recall
    # "everyone male" (tpr 1, tnr 0) is never the balanced one
    candidates = np.r_[(levels[:-1] + levels[1:]) / 2, (levels[-1] + 1) / 2]
    order = np.lexsort((np.abs(candidates - 0.5), -(tpr + tnr), np.abs(tpr - tnr)))
    value = float(candidates[order[0]])
    predicted = p > value
    return {"rule": "balanced", "value": value, "val_male_recall": float(predicted[y == 1].mean()),
            "val_female_recall": float((~predicted)[y == 0].mean())}
