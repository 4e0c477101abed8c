"""Error analysis of one run: its test images that are wrong, most confident first, and the rejected ones.

`error_analysis` reloads the run's head (every check of `classify.results.load_head`), scores the test
rows of each training store with the recorded decision (calibrated p(male), recorded threshold: what
predict would say), and lists
- ``errors``: the wrong rows, most confident first (largest |p(male) - threshold|), each with its
  dataset, id, image path, calibrated p(male), true and predicted gender, groups (race, age, the
  CelebA attributes set) and ``label_check``: why the label itself is in doubt when most other images of
  the same identity carry the other label (`classify.label_audit`), else "";
- ``rejected``: the test rows the run could not use, with the reason per backbone (unreadable, no face
  found, too large).
Image paths come from re-reading the dataset at the store's recorded root; where it is gone, paths are
empty and the rows are still listed.

The same lists for the rows each eval store reported (``cross_dataset``, by eval set label), where
``label_check`` also carries the cross-validated check on that store's own labels
(`classify.label_audit.cross_val_doubts`): a cross-dataset error is often the other dataset's label.

Files (`write_error_files`), beside the leaderboard: ``errors.json`` (kind "classify-errors", version 1:
run, split, decision, n_scored, errors, rejected, cross_dataset) and ``errors.csv`` (one line per error
or rejected image, the eval stores' after the training stores': kind, dataset, id, path, true,
predicted, p_male, reason, groups, label_check).
"""
from __future__ import annotations

import csv
import json
import logging
from pathlib import Path

import numpy as np

from classify.headfile import SUFFIX
from classify.label_audit import label_doubts
from classify.model import GenderModel
from features.jsonfile import jsonable
from classify.run_analysis import error_rows
from features.dataset import SPLITS, DatasetError
from features.store import FeatureStore, Status, StoreError

log = logging.getLogger(__name__)

ERRORS_KIND = "classify-errors"
ERRORS_VERSION = 1
ERRORS_JSON, ERRORS_CSV = "errors.json", "errors.csv"


def error_analysis(run: dict, results_dir: Path, *, split: str = "test") -> dict:
    """The wrong and the rejected ``split`` rows of ``run`` (a results record in ``results_dir``)."""
    model = GenderModel.load(Path(results_dir) / f"{run['run']}{SUFFIX}")
    record, backbones, decision = model.record, model.names, model.decision

    errors, rejected, scored = [], [], 0
    trained_on = {entry.get("path"): entry.get("fingerprint") for entry in record.get("training_stores", [])}
    for store_path in record["config"]["stores"]:
        store = FeatureStore.open(store_path)
        if trained_on.get(str(store_path)) not in (None, store.fingerprint):
            raise StoreError(f"{store_path} now holds another dataset than {run['run']} was trained on")
        part = store.read(list(backbones), split)
        paths = image_paths(store)
        if len(part.gender):
            p_male = model.p_male(part.x)  # what predict would say
            attributes = {name: np.asarray(values)[part.index] for name, values in store.attributes.items()}
            rows = error_rows(store.ids[part.index], paths[part.index], part.gender, p_male,
                              threshold=decision.value, attributes=attributes)
            doubts = label_doubts(store.ids, store.gender, store.attributes.get("identity"))
            errors += [{"dataset": store.dataset_name, **row, "label_check": doubts.get(row["id"], "")}
                       for row in rows]
            scored += len(part.gender)
        rejected += rejected_rows(store, backbones, paths, split)
    errors.sort(key=lambda row: -abs(row["p_male"] - decision.value))  # stable: per-store order on ties
    return {"kind": ERRORS_KIND, "version": ERRORS_VERSION, "run": run["run"], "split": split,
            "decision": decision.to_json(), "n_scored": scored, "errors": errors, "rejected": rejected,
            "cross_dataset": cross_dataset_errors(run, model)}


def cross_dataset_errors(run: dict, model: GenderModel) -> dict:
    """{eval set label: {"rows", "n_scored", "errors", "rejected"}}: the run's errors on the rows each
    eval store reported (`classify.evaluate.error_list`, with both label checks); an eval store no
    longer at its recorded path is skipped with a warning."""
    from classify import protocol
    from classify.evaluate import error_list
    from classify.results import store_identity

    backbones = model.names
    out = {}
    for label, cross in run.get("cross_dataset", {}).items():
        try:
            store = FeatureStore.open(cross["path"])
            if store.fingerprint != cross["fingerprint"]:
                raise StoreError(f"{cross['path']} now holds another dataset than the run was evaluated on")
            data = protocol.read_eval_set(store, backbones, model.compatibility(), label=label,
                                          identity=store_identity(store), all_rows=cross["rows"] == "all")
        except (StoreError, protocol.ProtocolError, OSError) as error:
            log.warning("no error list on %s: %s", label, error)
            continue
        out[label] = {"rows": data.report_rows, "n_scored": len(data.report.gender),
                      **error_list(model, store, data, seed=model.record["config"]["seed"])}
    return out


def image_paths(store: FeatureStore) -> np.ndarray:
    """Each store row's image path, from the dataset at the recorded root ("" where it cannot be read)."""
    from features.datasets import load_dataset

    info = store.dataset_info
    try:
        dataset = load_dataset(store.dataset_name, info["root"], seed=info.get("split_seed") or 0)
    except (DatasetError, ValueError, OSError) as error:
        log.warning("no image paths for %s (%s): the error list has ids only", store.path, error)
        return np.full(store.n_rows, "", dtype=object)
    position = {image: row for row, image in enumerate(dataset.ids)}
    return np.array([str(dataset.paths[position[i]]) if i in position else "" for i in store.ids], dtype=object)


def rejected_rows(store: FeatureStore, backbones, paths: np.ndarray, split: str | None, *,
                  dataset: str | None = None) -> list[dict]:
    """Rows of ``split`` (None: every row) that a backbone of the run could not use, one per image,
    reasons joined; ``dataset`` names them (default: the store's dataset)."""
    from classify.images import status_text

    in_split = np.ones(store.n_rows, dtype=bool) if split is None else store.split == SPLITS.index(split)
    reasons: dict[int, list[str]] = {}
    for name in backbones:
        status = store.status(name)
        for row in np.flatnonzero(in_split & (status != Status.OK)):
            reasons.setdefault(int(row), []).append(f"{status_text(int(status[row]))} ({name})")
    return [{"dataset": dataset or store.dataset_name, "id": str(store.ids[row]), "path": str(paths[row]),
             "reason": "; ".join(texts)} for row, texts in sorted(reasons.items())]


def write_error_files(analysis: dict, directory: Path) -> list[Path]:
    """errors.json and errors.csv in ``directory``; returns their paths."""
    directory = Path(directory)
    json_path, csv_path = directory / ERRORS_JSON, directory / ERRORS_CSV
    json_path.write_text(json.dumps(jsonable(analysis), indent=1, allow_nan=False))
    cross = analysis.get("cross_dataset", {}).values()
    write_error_csv(analysis["errors"] + [row for part in cross for row in part["errors"]],
                    analysis["rejected"] + [row for part in cross for row in part["rejected"]], csv_path)
    return [json_path, csv_path]


def write_error_csv(errors: list[dict], rejected: list[dict], path: Path) -> None:
    """One line per wrong row (kind "error"), then one per rejected row (kind "rejected")."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "dataset", "id", "path", "true", "predicted", "p_male", "reason", "groups",
                         "label_check"])
        for row in errors:
            writer.writerow(["error", row["dataset"], row["id"], row["path"], row["true"], row["predicted"],
                             f"{row['p_male']:.4f}", "", "; ".join(f"{k}: {v}" for k, v in row["groups"].items()),
                             row.get("label_check", "")])
        for row in rejected:
            writer.writerow(["rejected", row["dataset"], row["id"], row["path"], "", "", "", row["reason"], "", ""])


def read_error_file(directory: Path) -> dict | None:
    """errors.json of a results folder, or None when there is none (or of another version)."""
    path = Path(directory) / ERRORS_JSON
    if not path.is_file():
        return None
    record = json.loads(path.read_text())
    return record if record.get("kind") == ERRORS_KIND and record.get("version") == ERRORS_VERSION else None
