"""Results files: one ``<run>.json`` per (backbone(s), head) run, and the fitted head beside it.

``<run>.json`` (kind "classify-run", version 3) holds the metrics (``metrics`` val/test in domain,
``cross_dataset`` per eval store; each with ``groups``, ``calibration`` before/after and ``recalls`` as
`classify.protocol.score_split` writes them), ``decision`` (the calibrator and threshold chosen on val,
`classify.decision`; the head file holds the same), the full `RunConfig`, ``store`` (the first
training store's identity: path, dataset fingerprint, each backbone's metadata incl. its weights identity and source),
``training_stores`` (path, dataset, fingerprint, n_rows of each pooled store), ``treatment`` (chosen and
tried), library versions and timings. Version 2 (no decision, no groups or calibration) is refused
with one line: retrain. It is also the sidecar of ``<run>.npz``, the fitted head (`classify.headfile`),
which `classify.model.GenderModel.load` checks against it before anything runs.
"""
from __future__ import annotations

import logging
import platform
import re
from dataclasses import asdict, replace
from datetime import datetime, timezone
from pathlib import Path

from classify.headfile import RESULTS_KIND, RESULTS_VERSION, SUFFIX, HeadFileError
from classify.model import SIDECAR_LIMIT, GenderModel
from classify.protocol import RunConfig
from classify.runresult import RunResult, RunResultError
from features import provenance
from features.jsonfile import read_json, regular_file

log = logging.getLogger(__name__)

_SAFE_NAME = re.compile(r"^[A-Za-z0-9_.+-]+$")


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


def write_run(out_dir: Path, config: RunConfig, model: GenderModel, results: dict, *, store_info: dict,
              training_stores: list[dict]) -> Path:
    """Save the model: its head (.npz, `classify.headfile`) and the results/sidecar JSON; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(config)
    record = {"kind": RESULTS_KIND, "version": RESULTS_VERSION, "run": name,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config": asdict(config), "store": store_info, "training_stores": training_stores, **results,
              "library_versions": library_versions()}
    backbones = {b: store_info["backbones"][b] for b in config.backbones}
    return replace(model, backbones=backbones, record=record).save(out_dir / f"{name}{SUFFIX}")


def read_result(path: Path) -> RunResult:
    """One results file as a `RunResult`; HeadFileError naming the file and the field if it is not one."""
    record = read_json(path, limit=SIDECAR_LIMIT, error=HeadFileError, what="results file")
    try:
        return RunResult.from_json(record, path)
    except RunResultError as error:
        raise HeadFileError(str(error)) from None


def load_results(directory: Path) -> list[RunResult]:
    """Every results file in ``directory``; other JSON files (errors.json silently), files that are not
    regular files (a FIFO would block the read) and malformed results are skipped with a warning."""
    runs = []
    for path in sorted(Path(directory).glob("*.json")):
        if path.name == "errors.json" or path.name.startswith("errors."):  # `classify.errors`' files
            continue
        if not regular_file(path):
            log.warning("skipping %s: not a regular file", path)
            continue
        try:
            runs.append(read_result(path))
        except HeadFileError as error:
            log.warning("skipping %s", error)
    return runs
