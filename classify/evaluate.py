"""A saved head on another feature store: ``python -m classify evaluate --head H --store S``.

No backbone runs (nor torch): the features come from the store, which must hold the head's backbones
with the same dim, weights identity and preprocessing as its training store. The rows and metrics are
`classify.protocol` step 8's, under the head's recorded decision (calibrator and threshold).
"""
from __future__ import annotations

import logging
from pathlib import Path

from classify import label_audit, protocol
from classify.errors import error_list
from classify.metrics import fmt
from classify.model import GenderModel
from classify.results import store_identity
from features.store import FeatureStore, StoreError

log = logging.getLogger(__name__)


def evaluate_head(head_path: Path, store_path: str, *, n_resamples: int = 1000, seed: int = 0,
                  all_rows: bool = False, errors: bool = False) -> dict:
    """Step 8's record (identity, rows, val and report metrics) of the head at ``head_path`` on a store;
    ``all_rows`` reports on every row of a store the head was not trained on (no val, no choice);
    ``errors`` adds the report rows' error list (`error_list`)."""
    model = GenderModel.load(head_path)
    store = FeatureStore.open(store_path)
    if all_rows and store.fingerprint in {entry.get("fingerprint") for entry in model.training_stores}:
        raise protocol.ProtocolError(f"{store.path} holds the dataset the head {model.name} was trained on: "
                                     "--all-rows would score its train rows; evaluate without --all-rows "
                                     "(its test split)")
    seen = protocol.seen_ids(training_stores(model, store.dataset_name), store.dataset_name)
    data = protocol.read_eval_set(store, model.names, model.compatibility(), label=store.dataset_name,
                                  identity=store_identity(store), all_rows=all_rows, seen=seen)
    result = protocol.evaluate_set(model, data, n_resamples=n_resamples, seed=seed, min_n=model.min_group_n)
    listed = error_list(model, store, data, seed=seed) if errors else {}
    return {"run": model.name, "head": str(head_path), **result, **listed}


def training_stores(model: GenderModel, dataset_name: str) -> list[FeatureStore]:
    """The head's training stores of ``dataset_name`` that are still where and what they were; a warning
    for each that is not (the rows it saw cannot be left out then)."""
    found = []
    for entry in model.training_stores:
        if entry.get("dataset") != dataset_name:
            continue
        try:
            store = FeatureStore.open(entry["path"])
            if store.fingerprint != entry.get("fingerprint"):
                raise StoreError(f"{entry['path']} now holds another dataset")
            found.append(store)
        except (StoreError, OSError, KeyError) as error:
            log.warning("cannot leave out the photos %s was trained on: %s", model.name, error)
    return found


def summary(result: dict) -> str:
    """A few lines a person reads: accuracy with CI, per-sex recall, counts."""
    lines = [f"{result['run']} on {result['dataset']} ({result['path']}), {result['rows']} rows:"]
    for name, scores in (("report", result["report"]), ("val", result["val"])):
        if scores is None:
            continue
        low, high = scores["ci95"]["accuracy"]
        lines.append(f"  {'val (choosing)' if name == 'val' else result['rows']}: accuracy {scores['accuracy']:.4f} "
                     f"(95% CI {low:.4f}-{high:.4f}) on {scores['n']} faces; male recall {fmt(scores['recall'])}, "
                     f"female recall {fmt(scores['female_recall'])}, F1 {fmt(scores['f1'])}, ROC-AUC "
                     f"{fmt(scores['roc_auc'])}")
        lines.append("    " + fairness_line(scores))
    report = result["report"]
    every = "all rows" if result["rows"] == "all" else f"all {result['rows']} rows"
    lines.append(f"  {every} (invalid counted as errors): accuracy {report['accuracy_all']:.4f}; "
                 f"invalid: {report['invalid'] or 'none'}")
    if "adults" in report:
        adults = report["adults"]
        lines.append(f"  aged >= {adults['min_age']}: accuracy {adults['accuracy']:.4f} on {adults['n']} faces; "
                     f"male recall {fmt(adults['recall'])}, female recall {fmt(adults['female_recall'])}")
    if report.get("seen_in_training"):
        lines.append(f"  left out: {report['seen_in_training']} rows whose photo the head was trained or chosen on "
                     "(the same image id in its training store's train or val split)")
    if "errors" in result:
        doubted, total = label_audit.count_doubted(result["errors"])
        lines.append(f"  errors: {total} wrong rows, {doubted} of them with a label in doubt "
                     f"(label_check), and {len(result['rejected'])} unusable rows")
    return "\n".join(lines)


def fairness_line(scores: dict) -> str:
    """Balanced accuracy, worst group, ECE before/after calibration of one scored set of rows."""
    summary = scores["groups"]["summary"]
    worst = summary["worst_group"]
    where = "no group large enough" if worst is None else (
        f"{worst['family']} = {worst['group']}: {worst['accuracy']:.4f} on {worst['n']} faces")
    calibration = scores["calibration"]
    return (f"balanced accuracy {fmt(summary['balanced_accuracy'])}; worst group ({where}); ECE "
            f"{calibration['before']['ece']:.4f} raw -> {calibration['after']['ece']:.4f} calibrated "
            f"({calibration['before']['binning']})")


