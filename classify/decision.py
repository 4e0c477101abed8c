"""What happens after the head (`classify.protocol` step 5): the post-hoc calibrator of the raw p(male)
(``--calibrate``; the default ``auto`` costs milliseconds, why it is the default: docs/protocol.md) and the
decision threshold on the *calibrated* p(male) (``--threshold``), both chosen on val (`classify.calibration`).
A `Decision` is plain JSON, recorded in the results file and the head file and applied by `predict` and
`evaluate` as in training.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from classify.calibration import METHODS, CalibrationError, Calibrator, decision_threshold, fit_calibrator

CALIBRATE_CHOICES = ("auto", *METHODS)


@dataclass(frozen=True)
class Decision:
    """A fitted calibrator and the decision threshold (``decision_threshold``'s record) on its output."""

    calibrate: str
    calibrator: Calibrator
    threshold: dict

    @property
    def value(self) -> float:
        return float(self.threshold["value"])

    def p_male(self, raw) -> np.ndarray:
        """The calibrated p(male), the probability predict reports, for the head's raw p(male)."""
        return np.clip(self.calibrator.apply(raw), 0.0, 1.0)

    def is_male(self, p_male) -> np.ndarray:
        """The decision on calibrated probabilities: 1 male, 0 female."""
        return (np.asarray(p_male) > self.value).astype(np.int8)

    def to_json(self) -> dict:
        return {"calibrate": self.calibrate, "calibrator": self.calibrator.to_json(), "threshold": self.threshold}

    @classmethod
    def from_json(cls, record) -> Decision:
        """Validate a recorded decision (CalibrationError naming the problem) and rebuild it."""
        if not isinstance(record, dict) or not isinstance(record.get("threshold"), dict):
            raise CalibrationError("no decision (calibrator and threshold) recorded")
        threshold = record["threshold"]
        value = threshold.get("value")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < 1:
            raise CalibrationError(f"recorded decision threshold {str(value)[:40]!r} is not a number in (0, 1)")
        if not isinstance(threshold.get("rule"), str) or not isinstance(record.get("calibrate"), str):
            raise CalibrationError("recorded decision rule and calibrate setting must be strings")
        return cls(record["calibrate"], Calibrator.from_json(record.get("calibrator")), dict(threshold))


def parse_calibrate(text: str) -> str:
    if text not in CALIBRATE_CHOICES:
        raise CalibrationError(f"--calibrate must be one of {', '.join(CALIBRATE_CHOICES)}, not {text!r}")
    return text


def choose(y_val, p_val, *, calibrate: str = "auto", threshold: str = "0.5", seed: int = 0) -> Decision:
    """Fit the calibrator on val (raw p), then choose the threshold on val's calibrated p."""
    methods = METHODS if parse_calibrate(calibrate) == "auto" else (calibrate,)
    calibrator = fit_calibrator(y_val, p_val, methods=methods, seed=seed)
    chosen = decision_threshold(threshold, y_val, np.clip(calibrator.apply(p_val), 0.0, 1.0))
    return Decision(calibrate, calibrator, chosen)
