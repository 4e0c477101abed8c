"""The evaluation protocol, and one (backbone(s), head) run under it.

Protocol
--------
1. Features come from one feature store; a run uses one backbone or several concatenated column-wise
   ("sface+efficientnet_lite0"). Only complete backbones are read.
2. The store's split is used as given (CelebA's official partition, or the seeded split recorded with a
   generated one): train, val and test never share a row.
3. Rows that are not valid in every backbone of the run (unreadable image, no face found) are excluded
   from every split and counted per split and reason in the results; nothing is imputed.
4. The head is fitted on train only. Every hyperparameter (logreg's C, the MLP's hidden size, learning
   rate and early-stopping epoch) is chosen on val: highest val accuracy, ties to the lower val log loss.
   Feature standardisation uses train statistics only.
5. Test is touched once, after selection, by the chosen model: accuracy, male-class precision/recall/F1,
   macro P/R/F1, ROC-AUC, confusion matrix, 95% percentile bootstrap CIs (accuracy, F1; test rows
   resampled ``n_resamples`` times) and accuracy per group of the store's attributes. Male is the positive
   class; the decision threshold is fixed at p(male) = 0.5, not tuned on test.
6. One seed (``RunConfig.seed``) drives the head's initialisation and minibatch order and the
   bootstrap, so a rerun on the same store gives the same numbers. The config, the store's identity
   (path, dataset fingerprint, backbone metadata incl. weights identity) and library versions are saved
   with every result.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np

from classify import metrics
from classify.heads import Head, make_head
from features.dataset import SPLITS
from features.store import FeatureStore, SplitFeatures

log = logging.getLogger(__name__)


class ProtocolError(ValueError):
    """The data cannot be evaluated under the protocol (e.g. an empty split, one class only)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; saved in its results file."""

    store: str
    backbones: tuple[str, ...]
    head: str
    seed: int = 0
    head_params: dict = field(default_factory=dict)
    n_resamples: int = 1000

    @property
    def backbone_spec(self) -> str:
        return "+".join(self.backbones)


def parse_backbone_spec(spec: str) -> tuple[str, ...]:
    """'a+b' -> ('a', 'b'); empty parts or repeats raise ValueError."""
    names = tuple(spec.split("+"))
    if not all(names) or len(set(names)) != len(names):
        raise ValueError(f"bad backbone spec {spec!r}: expected names joined by '+', each once")
    return names


def read_splits(store: FeatureStore, backbones: tuple[str, ...]) -> dict[str, SplitFeatures]:
    """The valid rows of train, val and test; each split must have rows, train and val both classes."""
    splits = {split: store.read(list(backbones), split) for split in SPLITS}
    for split, data in splits.items():
        if len(data.gender) == 0:
            raise ProtocolError(f"{'+'.join(backbones)}: split {split!r} has no valid rows "
                                f"(invalid: {data.n_invalid or 'none'}, maybe no rows in the split)")
        if split != "test" and len(np.unique(data.gender)) < 2:
            raise ProtocolError(f"{'+'.join(backbones)}: split {split!r} holds one gender only")
    return splits


def run(config: RunConfig, splits: dict[str, SplitFeatures], *,
        attributes: dict[str, np.ndarray] | None = None) -> tuple[Head, dict]:
    """Fit ``config.head`` on train, select on val, evaluate on test: (fitted head, results)."""
    head = make_head(config.head, seed=config.seed, **config.head_params)
    train, val, test = (splits[s] for s in SPLITS)
    started = time.perf_counter()
    head.fit(train.x, train.gender, val.x, val.gender)
    fit_s = time.perf_counter() - started
    log.info("%s %s: fitted in %.1f s", config.backbone_spec, config.head, fit_s)
    started = time.perf_counter()
    evaluation = {name: _evaluate(head, data, config) for name, data in (("val", val), ("test", test))}
    if attributes:
        test_pred = head.predict(test.x)
        groups = {name: values[test.index] for name, values in attributes.items()}
        evaluation["test"]["groups"] = metrics.group_accuracy(test.gender, test_pred, groups)
    results = {"metrics": evaluation, "selection": head.selection_, "head_params": head.get_params(),
               "counts": _counts(splits),
               "timings": {"fit_s": round(fit_s, 3), "evaluate_s": round(time.perf_counter() - started, 3)}}
    return head, results


def _evaluate(head: Head, data: SplitFeatures, config: RunConfig) -> dict:
    proba = head.predict_proba(data.x)[:, 1]
    return metrics.evaluate(data.gender, proba, n_resamples=config.n_resamples, seed=config.seed)


def _counts(splits: dict[str, SplitFeatures]) -> dict:
    return {split: {"n": int(len(data.gender)), "male": int(np.sum(data.gender == 1)),
                    "invalid": dict(data.n_invalid)} for split, data in splits.items()}
