"""Results files: one ``<run>.json`` per (backbone(s), head) run, and the fitted head beside it.

``<run>.json`` (kind "classify-run", version 3) holds the metrics (``metrics`` val/test in domain,
``cross_dataset`` per eval store; each with ``groups``, ``calibration`` before/after and ``recalls`` as
`classify.protocol.score_split` writes them), ``decision`` (the calibrator and threshold chosen on val,
`classify.decision`; the head file holds the same), the full `RunConfig`, ``store`` (the first
training store's identity: path, dataset fingerprint, each backbone's metadata incl. its weights identity and source),
``training_stores`` (path, dataset, fingerprint, n_rows of each pooled store), ``treatment`` (chosen and
tried), library versions and timings. Version 2 (no decision, no groups or calibration) is refused
with one line: retrain. It is also the sidecar of ``<run>.npz``, the fitted head
(`classify.headfile`): before anything runs, `load_head` checks the sidecar's fields, the file's sha256,
and that the head file's header and arrays agree with the sidecar's backbones, dims, head and treatment.
Nothing is unpickled; version-1 heads (``.joblib``) are refused with a request to retrain.
"""
from __future__ import annotations

import json
import logging
import math
import platform
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from classify import treatment
from classify.calibration import CalibrationError
from classify.decision import Decision
from classify.headfile import (SUFFIX, HeadFormatError, check_kind_and_version, read_head_file, sha256_file,
                              write_head_file)
from classify.heads import Head, get_head_class
from classify.protocol import RunConfig
from features import provenance

log = logging.getLogger(__name__)

RESULTS_KIND = "classify-run"
RESULTS_VERSION = 3
_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


class HeadFileError(ValueError):
    """A saved head is missing, has no sidecar, or does not match its recorded sha256."""


def run_name(config: RunConfig) -> str:
    """File stem of a run: '<backbone>[+<backbone>...]__<head>'."""
    name = f"{config.backbone_spec}__{config.head}"
    if not _SAFE_NAME.match(name):
        raise ValueError(f"run name {name!r} is not a safe file name (letters, digits, _ . + - only)")
    return name


def library_versions() -> dict[str, str]:
    """Versions of the libraries that produce the numbers (torch is deliberately not imported)."""
    return {"python": platform.python_version(),
            **provenance.library_versions("numpy", "scipy", "scikit-learn", "zarr", "matplotlib")}


def store_identity(store, backbones: tuple[str, ...] = ()) -> dict:
    """Path, dataset and fingerprint of the store, and the metadata of each backbone used."""
    identity = {"path": str(store.path), "dataset": store.dataset_name, "fingerprint": store.fingerprint,
                "n_rows": store.n_rows}
    return {**identity, "backbones": {name: store.backbone_info(name) for name in backbones}} if backbones \
        else identity


def write_run(out_dir: Path, config: RunConfig, head: Head, results: dict, *, store_info: dict,
              training_stores: list[dict]) -> Path:
    """Save the head (.npz, `classify.headfile`) and its results/sidecar JSON; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(config)
    head_path = out_dir / f"{name}{SUFFIX}"
    chosen = results["treatment"]["chosen"]
    fitted, arrays = head.to_arrays()
    backbones = [{"name": b, "dim": store_info["backbones"][b]["dim"],
                  "weights": store_info["backbones"][b].get("metadata", {}).get("weights")} for b in config.backbones]
    write_head_file(head_path, jsonable({"head": config.head, "fitted": fitted, "backbones": backbones,
                                          "n_features": head.n_features_in_, "treatment": chosen,
                                          "training_stores": training_stores, "decision": results["decision"]}),
                    arrays)
    record = {"kind": RESULTS_KIND, "version": RESULTS_VERSION, "run": name,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config": asdict(config), "store": store_info, "training_stores": training_stores, **results,
              "library_versions": library_versions(),
              "head_file": {"name": head_path.name, "sha256": sha256_file(head_path)}}
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(jsonable(record), indent=1, allow_nan=False))
    return json_path


def jsonable(value):
    """NaN/inf -> None (strict JSON), tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(key): jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(item) for item in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def read_run(path: Path) -> dict:
    """One results file; HeadFileError if it is not one."""
    try:
        record = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as error:
        raise HeadFileError(f"cannot read results file {path}: {error}") from None
    check_kind_and_version(record, path, kind=RESULTS_KIND, version=RESULTS_VERSION,
                           what="classify results file",
                           news="with calibration, threshold and per-group metrics", error=HeadFileError)
    return record


def load_runs(directory: Path) -> list[dict]:
    """Every results file in ``directory`` (other JSON files are ignored; errors.json silently)."""
    runs = []
    for path in sorted(Path(directory).glob("*.json")):
        if path.name == "errors.json":  # `classify.errors`, written by compare beside the runs
            continue
        try:
            runs.append(read_run(path))
        except HeadFileError as error:
            log.warning("skipping %s", error)
    return runs


def recorded_treatment(record: dict):
    """The feature treatment a saved run chose (``record``: its sidecar), as ``x -> treated x`` over the
    run's backbones concatenated: what predict, evaluate and the error lists apply before the head."""
    backbones = tuple(record["config"]["backbones"])
    dims = {name: record["store"]["backbones"][name]["dim"] for name in backbones}
    chosen = record["treatment"]["chosen"]
    return lambda x: treatment.apply(x, chosen, backbones, dims)


def load_head(head_path: Path) -> tuple[Head, dict]:
    """The fitted head and its sidecar record, every check made before any backbone could run."""
    head_path = Path(head_path)
    if head_path.suffix == ".joblib":
        raise HeadFileError(f"{head_path} is a head of the old pickle format, which this version never loads "
                            "(a pickle can run code): retrain with `python -m classify train`")
    if head_path.suffix != SUFFIX:
        raise HeadFileError(f"{head_path} is not a head file: pass the <run>{SUFFIX} written by train")
    if not head_path.is_file():
        raise HeadFileError(f"no head file at {head_path}")
    sidecar = head_path.with_suffix(".json")
    if not sidecar.is_file():
        raise HeadFileError(f"head {head_path} has no sidecar {sidecar.name} beside it; cannot verify it")
    record = read_run(sidecar)
    problem = sidecar_problem(record, head_path.name)
    if problem:
        raise HeadFileError(f"{sidecar}: {problem}; this sidecar does not describe a head train wrote: retrain")
    expected, actual = record["head_file"]["sha256"], sha256_file(head_path)
    if actual != expected:
        raise HeadFileError(f"head file {head_path} does not match its sidecar (sha256 {actual[:16]}... "
                            f"expected {str(expected)[:16]}...): refusing a modified file")
    try:
        header, arrays = read_head_file(head_path)
        head = _rebuild(header, arrays, record)
    except (HeadFormatError, ValueError, KeyError, TypeError) as error:
        raise HeadFileError(f"{head_path}: {error}: retrain") from None
    return head, record


def sidecar_problem(record: dict, file_name: str) -> str | None:
    """What makes a sidecar unusable (None when it is sound): fields, names and dims, checked as data."""
    config, store = record.get("config"), record.get("store")
    if not isinstance(config, dict) or not isinstance(store, dict) or not isinstance(store.get("backbones"), dict):
        return "no config or store record"
    head_name, backbones = config.get("head"), config.get("backbones")
    if not isinstance(head_name, str):
        return "no head kind"
    try:
        get_head_class(head_name)
    except ValueError as error:
        return str(error)
    if (not isinstance(backbones, list) or not backbones
            or not all(isinstance(b, str) and _SAFE_NAME.match(b) for b in backbones)):
        return "config.backbones must be a non-empty list of backbone names"
    for name in backbones:
        info = store["backbones"].get(name)
        if not isinstance(info, dict) or not isinstance(info.get("dim"), int) or info["dim"] < 1:
            return f"no positive dim recorded for backbone {name!r}"
        if not isinstance(info.get("metadata", {}), dict):
            return f"the metadata recorded for backbone {name!r} is not a record"
    training_stores = record.get("training_stores", [])
    if not isinstance(training_stores, list) or not all(isinstance(entry, dict) for entry in training_stores):
        return "training_stores must be a list of store records"
    if not isinstance(record.get("treatment"), dict):
        return "no treatment record"
    problem = treatment.check(record["treatment"].get("chosen"), tuple(backbones))
    if problem:
        return problem
    try:
        Decision.from_json(record.get("decision"))
    except CalibrationError as error:
        return f"decision: {error}"
    head_file = record.get("head_file")
    if not isinstance(head_file, dict) or head_file.get("name") != file_name or not head_file.get("sha256"):
        return f"head_file must name {file_name} and its sha256"
    return None


def _rebuild(header: dict, arrays: dict, record: dict) -> Head:
    """The head from its file, after checking the file says what the sidecar says."""
    config = record["config"]
    backbones = record["store"]["backbones"]
    recorded = [{"name": b, "dim": backbones[b]["dim"], "weights": backbones[b].get("metadata", {}).get("weights")}
                for b in config["backbones"]]
    in_file = [{key: b.get(key) for key in ("name", "dim", "weights")} for b in header.get("backbones", [])]
    if in_file != recorded:
        raise HeadFormatError(f"the head file was fitted on backbones {in_file}, the sidecar names {recorded}")
    if header.get("head") != config["head"]:
        raise HeadFormatError(f"the head file holds a {header.get('head')!r} head, the sidecar says "
                              f"{config['head']!r}")
    if header.get("treatment") != record["treatment"]["chosen"]:
        raise HeadFormatError("the head file's feature treatment differs from the sidecar's")
    if header.get("decision") != record["decision"]:
        raise HeadFormatError("the head file's calibrator or decision threshold differs from the sidecar's")
    head = get_head_class(config["head"]).from_arrays(header["fitted"], arrays)
    if head.n_features_in_ != sum(b["dim"] for b in recorded) or header.get("n_features") != head.n_features_in_:
        raise HeadFormatError(f"the head's arrays take {head.n_features_in_} features, the backbones give "
                              f"{sum(b['dim'] for b in recorded)}")
    return head
