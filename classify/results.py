"""Results files: one ``<run>.json`` per (backbone(s), head) run, and the fitted head beside it.

``<run>.json`` holds the metrics, the full `RunConfig`, the store's identity (path, dataset fingerprint,
each backbone's metadata incl. its weights identity and source), library versions and timings. It is
also the sidecar of ``<run>.joblib``, the fitted head: ``head_file.sha256`` is checked before the joblib
file is unpickled, and a file that does not match is refused (unpickling runs code: never load a file
that was changed after training).
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import platform
import re
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

import joblib

from classify.heads import Head
from classify.protocol import RunConfig

log = logging.getLogger(__name__)

RESULTS_KIND = "classify-run"
RESULTS_VERSION = 1
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
    import matplotlib
    import numpy
    import scipy
    import sklearn
    import zarr

    return {"python": platform.python_version(), "numpy": numpy.__version__, "scipy": scipy.__version__,
            "scikit-learn": sklearn.__version__, "joblib": joblib.__version__, "zarr": zarr.__version__,
            "matplotlib": matplotlib.__version__}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def store_identity(store, backbones: tuple[str, ...]) -> dict:
    """Path, dataset and fingerprint of the store, and the metadata of each backbone used."""
    return {"path": str(store.path), "dataset": store.dataset_name, "fingerprint": store.fingerprint,
            "n_rows": store.n_rows, "backbones": {name: store.backbone_info(name) for name in backbones}}


def write_run(out_dir: Path, config: RunConfig, head: Head, results: dict, *, store_info: dict) -> Path:
    """Save the head (joblib) and its results/sidecar JSON; returns the JSON path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    name = run_name(config)
    head_path = out_dir / f"{name}.joblib"
    joblib.dump(head, head_path)
    record = {"kind": RESULTS_KIND, "version": RESULTS_VERSION, "run": name,
              "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "config": asdict(config), "store": store_info, **results,
              "library_versions": library_versions(),
              "head_file": {"name": head_path.name, "sha256": sha256_file(head_path)}}
    json_path = out_dir / f"{name}.json"
    json_path.write_text(json.dumps(_jsonable(record), indent=1, allow_nan=False))
    return json_path


def _jsonable(value):
    """NaN/inf -> None (strict JSON), tuples -> lists, numpy scalars -> Python."""
    if isinstance(value, dict):
        return {str(key): _jsonable(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(item) for item in value]
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
    if not isinstance(record, dict) or record.get("kind") != RESULTS_KIND:
        raise HeadFileError(f"{path} is not a classify results file (no kind={RESULTS_KIND!r})")
    if record.get("version") != RESULTS_VERSION:
        raise HeadFileError(f"{path} is a results file of version {record.get('version')}; this tool reads "
                            f"version {RESULTS_VERSION}: retrain")
    return record


def load_runs(directory: Path) -> list[dict]:
    """Every results file in ``directory`` (other JSON files are ignored)."""
    runs = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            runs.append(read_run(path))
        except HeadFileError as error:
            log.warning("skipping %s", error)
    return runs


def load_head(head_path: Path) -> tuple[Head, dict]:
    """The fitted head and its sidecar record, after checking the file's sha256 against the sidecar."""
    head_path = Path(head_path)
    if head_path.suffix != ".joblib":
        raise HeadFileError(f"{head_path} is not a head file: pass the <run>.joblib written by train")
    if not head_path.is_file():
        raise HeadFileError(f"no head file at {head_path}")
    sidecar = head_path.with_suffix(".json")
    if not sidecar.is_file():
        raise HeadFileError(f"head {head_path} has no sidecar {sidecar.name} beside it; cannot verify it")
    record = read_run(sidecar)
    expected = record.get("head_file", {}).get("sha256")
    actual = sha256_file(head_path)
    if actual != expected:
        raise HeadFileError(f"head file {head_path} does not match its sidecar (sha256 {actual[:16]}... "
                            f"expected {str(expected)[:16]}...): refusing to load a modified file")
    head = joblib.load(head_path)
    if not isinstance(head, Head):
        raise HeadFileError(f"{head_path} holds a {type(head).__name__}, not a classify head")
    return head, record
