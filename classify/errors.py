"""Error analysis of one run: its test images that are wrong, most confident first, and the rejected ones.

`error_analysis` reloads the run's head (every check of `GenderModel.load`), scores the test rows of each
training store with the recorded decision (what predict would say), and lists
- ``errors``: the wrong rows, most confident first (largest |p(male) - threshold|): dataset, id, image path
  ("" where the dataset at the store's root is gone), calibrated p(male), true and predicted gender, groups
  (`classify.groups.row_groups`), ``label_check``: why the label is in doubt (`classify.label_audit`) or "";
- ``rejected``: the test rows the run could not use, with the reason per backbone (unreadable, no face...);
- ``cross_dataset``: the same per eval store (by label) for the rows it reported, where ``label_check`` also
  carries the cross-validated check on that store's own labels (a cross-dataset error is often its label).

Files, beside the leaderboard, each written atomically: ``errors.json`` (kind "classify-errors", version 2:
run, head_sha256, split, decision, n_scored, errors, rejected, cross_dataset) and ``errors.csv`` (one line
per error or rejected image, the eval stores' last: kind, dataset, id, path, true, predicted, p_male,
reason, groups, label_check). Train writes them for the recommended run (`write_errors_for`); compare only
reads them, the reports compute them where missing. A reader ignores a file of another head (a kill between
train and compare), and train removes a run's lists before it replaces that run's head (`forget`).
"""
from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np

from classify import label_audit, protocol
from classify.calibration import CalibrationError
from classify.groups import row_groups
from classify.headfile import SUFFIX, HeadFileError
from classify.images import status_text
from classify.model import GenderModel
from classify.results import FieldReader, RunResult, store_identity
from features import atomic
from features.dataset import SPLITS, DatasetError
from features.datasets import load_dataset
from features.jsonfile import dumps, read_json
from features.store import FeatureStore, Status, StoreError
from features.tables import csv_row

log = logging.getLogger(__name__)

ERRORS_KIND = "classify-errors"
ERRORS_VERSION = 2  # 2: bound to the head by head_sha256
ERRORS_LIMIT = 256 << 20  # bytes of an errors.json that is read back
ERRORS_JSON, ERRORS_CSV = "errors.json", "errors.csv"


def error_analysis(run: RunResult, results_dir: Path) -> dict:
    """The wrong and the rejected test rows of ``run`` (a run of ``results_dir``)."""
    model = GenderModel.load(Path(results_dir) / f"{run.run}{SUFFIX}")
    errors, rejected, scored = [], [], 0
    trained_on = {ref.path: ref.fingerprint for ref in run.training_stores}
    for store_path in run.stores:
        store = FeatureStore.open(store_path)
        if trained_on.get(str(store_path)) not in (None, store.fingerprint):
            raise StoreError(f"{store_path} now holds another dataset than {run.run} was trained on")
        part = store.read(list(model.names), "test")
        paths = image_paths(store)
        if len(part.gender):
            doubts = label_audit.label_doubts(store.ids, store.gender, store.attributes.get("identity"))
            errors += wrong_rows(model, store, part, paths, store.dataset_name, doubts)
            scored += len(part.gender)
        rejected += rejected_rows(store, model.names, paths, "test")
    errors.sort(key=lambda row: -abs(row["p_male"] - model.decision.value))  # stable: per-store order on ties
    return {"kind": ERRORS_KIND, "version": ERRORS_VERSION, "run": run.run, "head_sha256": model.head_sha256,
            "split": "test", "decision": model.decision.to_json(), "n_scored": scored, "errors": errors,
            "rejected": rejected, "cross_dataset": cross_dataset_errors(run, model)}


def cross_dataset_errors(run: RunResult, model: GenderModel) -> dict:
    """{eval set label: {"rows", "n_scored", "errors", "rejected"}} of the rows each eval store reported
    (`error_list`); an eval store no longer at its recorded path is skipped with a warning."""
    out = {}
    for label, cross in run.cross.items():
        try:
            store = FeatureStore.open(cross.path)
            if store.fingerprint != cross.fingerprint:
                raise StoreError(f"{cross.path} now holds another dataset than the run was evaluated on")
            data = protocol.read_eval_set(store, model.names, model.compatibility(), label=label,
                                          identity=store_identity(store), all_rows=cross.rows == "all")
        except (StoreError, protocol.ProtocolError, OSError) as error:
            log.warning("no error list on %s: %s", label, error)
            continue
        out[label] = {"rows": data.report_rows, "n_scored": len(data.report.gender),
                      **error_list(model, store, data, seed=run.seed)}
    return out


def error_list(model: GenderModel, store: FeatureStore, data: protocol.EvalSet, *, seed: int = 0) -> dict:
    """{"errors", "rejected"} of an eval set's report rows: the wrong rows, most confident first, with both
    label checks (`classify.label_audit`, the cross-validated one on the run's backbones), the unusable rows."""
    paths = image_paths(store)
    doubts = label_audit.merged(label_audit.store_doubts(store, model.names, seed=seed, required=False))
    return {"errors": wrong_rows(model, store, data.report, paths, data.label, doubts),
            "rejected": rejected_rows(store, model.names, paths, None if data.report_rows == "all" else "test",
                                      dataset=data.label)}


def wrong_rows(model: GenderModel, store: FeatureStore, part, paths: np.ndarray, dataset: str,
               doubts: dict[str, str]) -> list[dict]:
    """The rows of ``part`` (read from ``store``) the model's decision gets wrong, most confident first."""
    attributes = {name: np.asarray(values)[part.index] for name, values in store.attributes.items()}
    ids, paths, y_true = store.ids[part.index], paths[part.index], np.asarray(part.gender)
    p_male, threshold = np.asarray(model.p_male(part.x), dtype=np.float64), model.threshold
    pred = p_male > threshold
    wrong = np.flatnonzero(pred != (y_true == 1))
    names = ("female", "male")
    return [{"dataset": dataset, "id": str(ids[i]), "path": str(paths[i]), "p_male": float(p_male[i]),
             "true": names[int(y_true[i])], "predicted": names[int(pred[i])], "groups": row_groups(attributes, i),
             "label_check": doubts.get(str(ids[i]), "")}
            for i in wrong[np.argsort(-np.abs(p_male[wrong] - threshold), kind="stable")]]


def image_paths(store: FeatureStore) -> np.ndarray:
    """Each store row's image path, from the dataset at the recorded root ("" where it cannot be read)."""
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
    """Rows of ``split`` (None: every row) that a backbone of the run could not use, one per image, reasons joined."""
    in_split = np.ones(store.n_rows, dtype=bool) if split is None else store.split == SPLITS.index(split)
    reasons: dict[int, list[str]] = {}
    for name in backbones:
        status = store.status(name)
        for row in np.flatnonzero(in_split & (status != Status.OK)):
            reasons.setdefault(int(row), []).append(f"{status_text(int(status[row]))} ({name})")
    ids = store.ids  # decoded from the store on each access: once, not once per row
    return [{"dataset": dataset or store.dataset_name, "id": str(ids[row]), "path": str(paths[row]),
             "reason": "; ".join(texts)} for row, texts in sorted(reasons.items())]


def write_error_csv(errors: list[dict], rejected: list[dict], path: Path) -> None:
    """One line per wrong row (kind "error"), then one per rejected row (kind "rejected"); formulas quoted."""
    with atomic.atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["kind", "dataset", "id", "path", "true", "predicted", "p_male", "reason", "groups",
                         "label_check"])
        writer.writerows(csv_row(["error", row["dataset"], row["id"], row["path"], row["true"], row["predicted"],
                                  f"{row['p_male']:.4f}", "", "; ".join(f"{k}: {v}" for k, v in row["groups"].items()),
                                  row.get("label_check", "")]) for row in errors)
        writer.writerows(csv_row(["rejected", row["dataset"], row["id"], row["path"], "", "", "", row["reason"], "",
                                  ""]) for row in rejected)


def read_error_file(directory: Path, run: RunResult) -> dict | None:
    """errors.json of a results folder if it lists ``run``'s current head. None when it is missing or of another
    run; None with a warning when it is unreadable (not a regular file, torn, not strict JSON), of another
    version or head, or with a field the reports could not read (`_check`)."""
    path = Path(directory) / ERRORS_JSON
    if not path.exists():
        return None
    try:
        record = read_json(path, limit=ERRORS_LIMIT, what="error list")
        if isinstance(record, dict) and record.get("kind") == ERRORS_KIND and record.get("run") != run.run:
            return None  # another run's list: absent for this one, not damage (its head is not this run's)
        _check(record, path, run.head_sha256)
    except ValueError as error:  # RunResultError too
        log.warning("ignoring %s", error)
        return None
    return record


_ERROR_FIELDS = {"dataset": str, "id": str, "path": str, "p_male": (int, float), "true": str, "predicted": str,
                 "groups": dict, "label_check": str}
_REJECTED_FIELDS = {"dataset": str, "id": str, "path": str, "reason": str}


def _check(record, path: Path, head_sha256: str) -> None:
    """A ValueError ("<path>: ...") unless ``record`` is an error list of this version and head with every
    field the reports read: a crafted file is ignored as a torn one is, never a traceback in compare or report."""
    if not isinstance(record, dict) or record.get("kind") != ERRORS_KIND or record.get("version") != ERRORS_VERSION:
        raise ValueError(f"{path}: not an error list of version {ERRORS_VERSION}")
    if record.get("head_sha256") != head_sha256:
        raise ValueError(f"{path}: it lists the errors of another head than {str(record.get('run'))[:200]}'s "
                         "current one")
    reader = FieldReader(record, str(path))
    reader.get("run", str)
    reader.get("split", str)
    cross = [reader.sub(("cross_dataset", label)) for label in reader.get("cross_dataset", dict)]
    for part in cross:
        part.get("rows", str)
    for part in [reader, *cross]:
        part.get("n_scored", int)
        for key, fields in (("errors", _ERROR_FIELDS), ("rejected", _REJECTED_FIELDS)):
            for i in range(len(part.get(key, list))):
                row = part.sub((key, i))
                for name, kind in fields.items():
                    row.get(name, kind)


def forget(directory: Path, run: str) -> None:
    """Remove the error lists of ``run`` (before its head is replaced: they would describe the old one)."""
    path = Path(directory) / ERRORS_JSON
    if not path.exists():
        return
    try:
        listed = read_json(path, limit=ERRORS_LIMIT, what="error list").get("run")
    except (ValueError, AttributeError):
        listed = run  # unreadable: not worth keeping either
    if listed == run:
        for stale in (ERRORS_JSON, ERRORS_CSV):
            (Path(directory) / stale).unlink(missing_ok=True)


def write_errors_for(run: RunResult, directory: Path) -> tuple[list[Path], dict | None]:
    """errors.json/.csv of ``run`` (of ``directory``), each atomically, and the analysis; when its head or store
    is not at hand (a results folder copied elsewhere), a warning, and no older lists are left to pass for it."""
    paths = [Path(directory) / ERRORS_JSON, Path(directory) / ERRORS_CSV]
    try:
        analysis = error_analysis(run, directory)
        cross = analysis["cross_dataset"].values()
        write_error_csv(analysis["errors"] + [row for part in cross for row in part["errors"]],
                        analysis["rejected"] + [row for part in cross for row in part["rejected"]], paths[1])
        atomic.write_text(paths[0], dumps(analysis))  # last: the JSON says the pair is complete
        return paths, analysis
    except (HeadFileError, StoreError, CalibrationError, OSError) as error:
        log.warning("no error analysis for %s: %s", run.run, error)
        for path in paths:
            path.unlink(missing_ok=True)
        return [], None
