"""The evaluation protocol, and one (backbone(s), head) run under it.

Protocol
--------
1. Features come from one feature store; a run uses one backbone or several concatenated column-wise
   ("sface+efficientnet_lite0"). Only complete backbones are read.
2. The store's split is used as given (CelebA's official partition, or the seeded split recorded with a
   generated one): train, val and test never share a row.
3. Rows not valid in every backbone of the run (unreadable image, no face found) are excluded from every
   split and counted per split and reason in the results; nothing is imputed.
4. The head is fitted on train only, standardised with train statistics. Every hyperparameter (logreg's
   C, the MLP's hidden size, learning rate and early-stopping epoch) is chosen on val: highest val
   accuracy, ties to the lower val log loss. With ``balance_by`` (a store attribute, `classify.balance`),
   train rows are weighted so that the attribute is independent of gender (a confound the head must not
   learn), and so are val rows for every in-domain choice (4 and 6); test and eval stores are unweighted.
5. Then the decision (`classify.decision`): a post-hoc calibrator fitted and chosen on val (``calibrate``)
   and a threshold on the calibrated p(male) (``threshold``: 0.5, balanced, or a fixed value), both
   recorded and used by predict. Test is touched once, after every choice, by the chosen model and
   decision (`score_split`: `classify.metrics` with ``n_resamples`` bootstrap resamples, per-group
   metrics, calibration before and after the calibrator, the recalls of the raw 0.5 decision beside the
   final one). Val gets the same record (optimistic: the choices were made on it). Male is positive.
6. Feature treatment (`classify.treatment`: per-backbone L2 normalisation or none) is one more
   hyperparameter: every candidate is fitted as in 4, and the chosen one is the best on cross-dataset
   val when eval stores give one (mean val accuracy over them; ties to the in-domain val accuracy), else
   the best on val as in 4. Remaining ties go to "none", the simpler treatment.
7. Pooled training (several training stores): their train, val and test splits are concatenated split
   by split (every choice above is made on the pooled val). The stores must hold the run's backbones
   with the same dim, weights identity and preprocessing (`check_compatible`).
8. Cross-dataset evaluation (eval stores, same compatibility check): the head trained above, never
   refitted, on another dataset's rows. A store with rows in several splits gives its val split for
   choosing (step 6) and its test split for reporting, never its train split; a one-split store (a
   held-out set such as celeba_wild) is reported on all rows and used for no choice. Reported: step 5's
   record, the invalid rows by reason, ``accuracy_all`` (invalid rows counted as errors) and, when the
   store records ages, the metrics of faces aged >= ``ADULT_AGE`` (``adults``).
9. One seed (``RunConfig.seed``) drives the head's initialisation, minibatch order and the bootstrap: a
   rerun on the same stores gives the same numbers. Every result saves the config, the stores' identity
   (path, dataset fingerprint, backbone metadata incl. weights identity) and library versions.
"""
from __future__ import annotations

import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import partial

import numpy as np

from classify import balance, decision, metrics, treatment
from classify.calibration import calibration_report
from classify.groups import decision_recalls, group_metrics
from classify.heads import best_index, make_head, val_scores
from classify.model import GenderModel, compatibility_of
from features.dataset import SPLITS, split_code
from features.store import FeatureStore, SplitFeatures

ADULT_AGE = 15

log = logging.getLogger(__name__)


class ProtocolError(ValueError):
    """The data cannot be evaluated under the protocol (e.g. an empty split, one class only)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything that defines one run; saved in its results file."""

    stores: tuple[str, ...]
    backbones: tuple[str, ...]
    head: str
    seed: int = 0
    head_params: dict = field(default_factory=dict)
    n_resamples: int = 1000
    treatments: tuple[str, ...] = treatment.TREATMENTS
    eval_stores: tuple[str, ...] = ()
    calibrate: str = "auto"
    threshold: str = "0.5"
    min_group_n: int = 30
    balance_by: str | None = None

    @property
    def backbone_spec(self) -> str:
        return "+".join(self.backbones)


@dataclass(frozen=True)
class TrainingData:
    """The pooled train/val/test rows of a run, each backbone's dim and normalisation hint."""

    splits: dict[str, SplitFeatures]
    dims: dict[str, int]
    reference: dict[str, dict]  # name -> `compatibility_of` the first store's record: what other stores must match
    hints: dict[str, str | None]
    attributes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # split -> the rows' attributes
    # reads the train rows again into the given train matrix; lets `run` treat that matrix in place
    refill_train: Callable[[np.ndarray], None] | None = None


@dataclass(frozen=True)
class EvalSet:
    """One eval store's rows under step 8: ``choose`` (its val, or None) and ``report`` (test or all)."""

    label: str
    identity: dict
    choose: SplitFeatures | None
    report: SplitFeatures
    report_rows: str
    attributes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # "choose"/"report" -> rows'
    seen: int = 0  # valid rows left out: photos the head was trained or chosen on (`seen_ids`)


def check_compatible(reference: dict[str, dict], store: FeatureStore, backbones: tuple[str, ...]) -> None:
    """ProtocolError unless ``store``'s backbones match ``reference`` (name -> `compatibility_of`)."""
    for name in backbones:
        found, expected = compatibility_of(store.backbone_info(name)), reference[name]
        for key in found:
            if found[key] != expected[key]:
                raise ProtocolError(
                    f"{store.path}: backbone {name} has another {key} ({_short(found[key])}) than the training "
                    f"store ({_short(expected[key])}); only stores extracted with the same weights and "
                    "preprocessing can be pooled or compared: re-extract one of them")


def _short(value) -> str:
    text = str(value)
    return text if len(text) <= 40 else text[:37] + "..."


def read_training(stores: list[FeatureStore], backbones: tuple[str, ...]) -> TrainingData:
    """The run's rows from one store, or several pooled (step 7)."""
    reference = {name: compatibility_of(stores[0].backbone_info(name)) for name in backbones}
    for store in stores[1:]:
        check_compatible(reference, store, backbones)
    per_store = [read_splits(store, backbones) for store in stores]
    per_split = {split: [parts[split] for parts in per_store] for split in SPLITS}
    hints = {name: stores[0].backbone_info(name).get("metadata", {}).get("normalisation") for name in backbones}
    sizes = tuple(len(parts["train"].gender) for parts in per_store)
    return TrainingData(splits={split: _concat(parts) for split, parts in per_split.items()},
                        dims={name: reference[name]["dim"] for name in backbones}, reference=reference, hints=hints,
                        attributes={split: pooled_attributes(stores, parts) for split, parts in per_split.items()},
                        refill_train=partial(_refill_train, tuple(stores), backbones, sizes))


def _refill_train(stores: tuple[FeatureStore, ...], backbones: tuple[str, ...], sizes: tuple[int, ...],
                  x: np.ndarray) -> None:
    """Read the train rows of ``stores`` (``sizes`` rows each, pooled in that order) again into ``x``."""
    start = 0
    for store, size in zip(stores, sizes):
        store.read(list(backbones), "train", out=x[start:start + size])
        start += size


def rows_attributes(store: FeatureStore, part: SplitFeatures) -> dict[str, np.ndarray]:
    """The store's per-image attributes of the rows of ``part`` (for per-group metrics)."""
    return {name: np.asarray(values)[part.index] for name, values in store.attributes.items()}


def pooled_attributes(stores: list[FeatureStore], parts: list[SplitFeatures]) -> dict[str, np.ndarray]:
    """Attributes of pooled rows: those every store records, concatenated in the rows' order."""
    each = [rows_attributes(store, part) for store, part in zip(stores, parts)]
    common = set.intersection(*(set(a) for a in each))
    return {name: np.concatenate([a[name] for a in each]) for name in sorted(common)}


def _concat(parts: list[SplitFeatures]) -> SplitFeatures:
    if len(parts) == 1:
        return parts[0]
    invalid = sum((Counter(p.n_invalid) for p in parts), Counter())  # counts are positive: none is dropped
    return SplitFeatures(x=np.concatenate([p.x for p in parts]), gender=np.concatenate([p.gender for p in parts]),
                         index=np.concatenate([p.index for p in parts]), n_invalid=dict(invalid))


def read_eval_set(store: FeatureStore, backbones: tuple[str, ...], reference: dict[str, dict], *,
                  label: str, identity: dict, all_rows: bool = False, seen: frozenset[str] = frozenset()) -> EvalSet:
    """An eval store's rows under step 8; ``all_rows``: every row reported, none used for a choice;
    ``seen``: ids of photos the head was trained or chosen on (`seen_ids`), left out (unusable ones stay counted)."""
    check_compatible(reference, store, backbones)
    present = set(np.unique(store.split).tolist())
    if len(present) == 1 or all_rows:
        choose, report, rows = None, store.read(list(backbones)), "all"
    else:
        val = store.read(list(backbones), "val") if split_code("val") in present else None
        usable = val is not None and len(np.unique(val.gender)) == 2
        choose, report, rows = (val if usable else None), store.read(list(backbones), "test"), "test"
    report, n_seen = _unseen(store, report, seen)
    choose = None if choose is None else _unseen(store, choose, seen)[0]
    if len(report.gender) == 0:
        raise ProtocolError(f"{store.path}: no valid {rows} rows to evaluate {'+'.join(backbones)} on "
                            f"(invalid: {report.n_invalid or 'none'})")
    attributes = {which: rows_attributes(store, part) for which, part in (("report", report), ("choose", choose))
                  if part is not None}
    return EvalSet(label=label, identity=identity, choose=choose, report=report, report_rows=rows,
                   attributes=attributes, seen=n_seen)


def seen_ids(training: list[FeatureStore], dataset_name: str) -> frozenset[str]:
    """Ids of the photos a head fitted on ``training`` saw (train and val rows) that a store of ``dataset_name``
    may hold again (CelebA's in-the-wild release holds subset photos); only where ids name photos."""
    from features.datasets import RELEASE_IDS

    if dataset_name not in RELEASE_IDS:
        return frozenset()
    chosen_on = (split_code("train"), split_code("val"))
    return frozenset(image for store in training if store.dataset_name == dataset_name
                     for image in store.ids[np.isin(store.split, chosen_on)].tolist())


def _unseen(store: FeatureStore, part: SplitFeatures, seen: frozenset[str]) -> tuple[SplitFeatures, int]:
    """``part`` without the rows whose ids are in ``seen``, and how many went."""
    if not seen:
        return part, 0
    keep = ~np.isin(store.ids[part.index], list(seen))
    return SplitFeatures(x=part.x[keep], gender=part.gender[keep], index=part.index[keep],
                         n_invalid=part.n_invalid), int(np.sum(~keep))


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


def run(config: RunConfig, data: TrainingData, evals: list[EvalSet] = ()) -> tuple[GenderModel, dict]:
    """Steps 4-6 and 8 for one run: (the fitted model, results)."""
    train, val, test = (data.splits[s] for s in SPLITS)
    started = time.perf_counter()
    tried = []
    for candidate in treatment.candidates(config.treatments, config.backbones, data.hints):
        prepare = partial(treatment.apply, treatment=candidate, backbones=config.backbones, dims=data.dims)
        with _train_rows(data, candidate, config.backbones) as x_train:
            x_val = prepare(val.x)
            weights = _balance(config, data, x_train, x_val)
            train_weight, val_weight = (None, None) if weights is None else (weights.train, weights.val)
            head = make_head(config.head, seed=config.seed, **config.head_params)
            head.fit(x_train, train.gender, x_val, val.gender, sample_weight=train_weight, val_weight=val_weight)
        # step 6's criteria: (weighted) val scores of the treated val rows, and cross-dataset val accuracy
        scores = val_scores(val.gender, head.decision_function(x_val), val_weight)
        cross_val = [float(np.mean(head.predict(prepare(e.choose.x)) == e.choose.gender)) for e in evals
                     if e.choose is not None]
        scores["cross_val_accuracy"] = float(np.mean(cross_val)) if cross_val else None
        tried.append((candidate, head, prepare, scores, weights))
        log.debug("%s %s treatment %s: %s", config.backbone_spec, config.head, candidate["name"], scores)
    chosen, head, prepare, _, weights = tried[_best_treatment([t[3] for t in tried])]
    fit_s = time.perf_counter() - started
    started = time.perf_counter()
    raw = {name: head.predict_proba(prepare(part.x))[:, 1].astype(np.float64)
           for name, part in (("val", val), ("test", test))}
    chosen_decision = decision.choose(val.gender, raw["val"], calibrate=config.calibrate,
                                      threshold=config.threshold, seed=config.seed)
    model = GenderModel(head, {name: {"dim": data.dims[name]} for name in config.backbones}, chosen,
                        chosen_decision)
    evaluation = {name: score_split(part.gender, raw[name], chosen_decision, data.attributes.get(name, {}),
                                    n_resamples=config.n_resamples, seed=config.seed, min_n=config.min_group_n)
                  for name, part in (("val", val), ("test", test))}
    cross = {e.label: evaluate_set(model, e, n_resamples=config.n_resamples, seed=config.seed,
                                   min_n=config.min_group_n) for e in evals}
    results = {"metrics": evaluation, "cross_dataset": cross, "decision": chosen_decision.to_json(),
               "selection": head.selection_, "head_params": head.get_params(),
               "counts": {split: {"n": int(len(part.gender)), "male": int(np.sum(part.gender == 1)),
                                  "invalid": dict(part.n_invalid)} for split, part in data.splits.items()},
               "treatment": {"chosen": chosen, "tried": [{"name": t[0]["name"], **t[3]} for t in tried]},
               "balance": None if weights is None else weights.record,
               "timings": {"fit_s": round(fit_s, 3), "evaluate_s": round(time.perf_counter() - started, 3)}}
    return model, results


@contextlib.contextmanager
def _train_rows(data: TrainingData, candidate: dict, backbones: tuple[str, ...]) -> Iterator[np.ndarray]:
    """The train rows under ``candidate``, treated in place and read back from the stores afterwards: a treated
    copy would double the run's largest array (1.3 GB at CelebA size, 2,048-d). Without ``refill_train``: a copy."""
    x = data.splits["train"].x
    if data.refill_train is None or not treatment.changes(candidate, backbones):
        yield treatment.apply(x, candidate, backbones, data.dims)
        return
    try:
        yield treatment.apply(x, candidate, backbones, data.dims, in_place=True)
    finally:
        data.refill_train(x)


def _balance(config: RunConfig, data: TrainingData, x_train: np.ndarray,
             x_val: np.ndarray) -> balance.BalanceResult | None:
    """Step 4's row weights when the run balances gender against an attribute, else None."""
    if config.balance_by is None:
        return None
    train, val = data.splits["train"], data.splits["val"]
    a_train, a_val = (data.attributes.get(split, {}).get(config.balance_by) for split in ("train", "val"))
    try:
        return balance.balance(config.balance_by, x_train=x_train, y_train=train.gender, a_train=a_train,
                               x_val=x_val, y_val=val.gender, a_val=a_val, seed=config.seed)
    except balance.BalanceError as error:
        raise ProtocolError(str(error)) from None


def _best_treatment(scores: list[dict]) -> int:
    """Step 6: cross-dataset val when there is one, else val (`best_index`); ties to the earlier (simpler) one."""
    if scores and scores[0]["cross_val_accuracy"] is not None:
        return min((-s["cross_val_accuracy"], -s["val_accuracy"], i) for i, s in enumerate(scores))[2]
    return best_index(scores)


def evaluate_set(model: GenderModel, data: EvalSet, *, n_resamples: int, seed: int, min_n: int = 30) -> dict:
    """Step 8's record for one eval set: identity, rows used, and step 5's record of its val and report rows."""
    def scored(part: SplitFeatures, which: str) -> dict:
        return score_split(part.gender, model.raw_p_male(part.x), model.decision, data.attributes.get(which, {}),
                           n_resamples=n_resamples, seed=seed, min_n=min_n)

    report = scored(data.report, "report")
    report.update(invalid=dict(data.report.n_invalid), seen_in_training=data.seen,
                  accuracy_all=report["accuracy"] * report["n"] / (report["n"] + sum(data.report.n_invalid.values())))
    age = data.attributes.get("report", {}).get("age")
    if age is not None and np.any(age >= ADULT_AGE):
        adult = age >= ADULT_AGE
        adults = metrics.evaluate(data.report.gender[adult], model.p_male(data.report.x)[adult],
                                  threshold=model.decision.value, n_resamples=n_resamples, seed=seed)
        report["adults"] = {**{key: adults[key] for key in ("n", "accuracy", "recall", "female_recall", "ci95")},
                            "min_age": ADULT_AGE}
    return {**data.identity, "rows": data.report_rows, "report": report,
            "val": None if data.choose is None else scored(data.choose, "choose")}


def score_split(y: np.ndarray, raw: np.ndarray, chosen: decision.Decision, attributes: dict[str, np.ndarray], *,
                n_resamples: int, seed: int, min_n: int = 30) -> dict:
    """Step 5's record of one set of rows: the metrics of the final decision (calibrated p(male), the
    chosen threshold), ``groups``, ``calibration`` (before/after the calibrator) and ``recalls``."""
    p_male = chosen.p_male(raw)
    out = metrics.evaluate(y, p_male, threshold=chosen.value, n_resamples=n_resamples, seed=seed)
    predicted = chosen.is_male(p_male)
    out["groups"] = group_metrics(y, predicted, attributes, min_n=min_n, n_resamples=n_resamples, seed=seed)
    out["calibration"] = {"before": calibration_report(y, raw), "after": calibration_report(y, p_male)}
    out["recalls"] = {"raw, threshold 0.5": decision_recalls(y, (raw > 0.5).astype(np.int8)),
                      f"{chosen.calibrator.method} calibration, threshold {chosen.value:.4f} "
                      f"({chosen.threshold['rule']})": decision_recalls(y, predicted)}
    return out
