"""Gender of new images with a saved head: its backbone(s) run through `extract` (imported lazily).

The head's sidecar names the backbone(s) and the weights each was extracted with; the same weights go
to `extract.embed_paths` ("random" for extract's seeded random init, else the recorded weight file,
which must exist here), and the embedding width must match the store's. An image
whose face the aligner cannot find, or that cannot be read, is reported as such and never guessed.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classify.results import load_head, sha256_file
from features.datasets.folder import IMAGE_EXTENSIONS
from features.store import Status

log = logging.getLogger(__name__)

STATUS_TEXT = {Status.OK: "ok", Status.UNREADABLE: "unreadable", Status.NO_FACE: "no face found"}


class PredictError(ValueError):
    """Inputs or backbone outputs that cannot be used for prediction."""


@dataclass(frozen=True)
class Prediction:
    path: str
    status: str
    gender: str = ""
    probability: float | None = None


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image files, and the image files of folders (recursively, sorted); a missing path raises."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        elif item.is_file():
            paths.append(item)
        else:
            raise PredictError(f"no such image or folder: {item}")
    if not paths:
        raise PredictError(f"no images found in {', '.join(inputs)} (suffixes: {', '.join(IMAGE_EXTENSIONS)})")
    return paths


def weights_argument(name: str, metadata: dict) -> str | None:
    """What to pass as ``embed_paths(weights=...)`` to rebuild the weights recorded in ``metadata``.

    The recorded weight file when it is here (its sha256 must match); else None, the backbone's default
    weights (a pip package's file on another machine, say), which `embed_paths` checks against the
    recorded identity through ``expect_weights``.
    """
    if metadata.get("weights") == "random":
        log.warning("backbone %s was extracted with extract's seeded random weights (a baseline, "
                    "not a trained network)", name)
        return "random"
    source = metadata.get("weights_source")
    if source is None or not Path(source).is_file():
        log.info("backbone %s: %s is not here; trying its default weights", name, source)
        return None
    found = f"sha256:{sha256_file(Path(source))}"
    if found != metadata.get("weights"):
        raise PredictError(f"backbone {name}: {source} is not the weight file the head was trained on "
                           f"(it is {found[:19]}..., the store recorded {str(metadata.get('weights'))[:19]}...)")
    return source


def embed(paths: list[Path], record: dict, *, device: str = "auto") -> tuple[np.ndarray, np.ndarray]:
    """Features of ``paths`` from the run's backbones, concatenated, and a status per image."""
    import extract  # lazy: classify must not import torch unless it predicts

    parts, status = [], np.full(len(paths), Status.OK, dtype=np.uint8)
    for name in record["config"]["backbones"]:  # the column order the head was trained on
        info = record["store"]["backbones"][name]
        metadata = info.get("metadata", {})
        weights = weights_argument(name, metadata)
        try:
            x, codes = extract.embed_paths([str(p) for p in paths], name, weights=weights, device=device,
                                           precision=metadata.get("precision", "fp32"),
                                           expect_weights=metadata.get("weights"))
        except (ValueError, RuntimeError) as error:  # unknown backbone, no device, other or no weights
            raise PredictError(f"backbone {name}: {error}") from None
        x, codes = np.asarray(x, dtype=np.float32), np.asarray(codes, dtype=np.uint8)
        if x.shape != (len(paths), info["dim"]) or codes.shape != (len(paths),):
            raise PredictError(f"backbone {name} returned features {x.shape} and status {codes.shape}, "
                               f"expected ({len(paths)}, {info['dim']}) and ({len(paths)},)")
        status = np.where(status == Status.OK, codes, status)
        parts.append(x)
    return np.concatenate(parts, axis=1), status


def predict_images(head_path: Path, inputs: list[str], *, device: str = "auto") -> list[Prediction]:
    """One `Prediction` per image, in input order."""
    head, record = load_head(head_path)
    paths = expand_inputs(inputs)
    x, status = embed(paths, record, device=device)
    ok = status == Status.OK
    proba = head.predict_proba(x[ok])[:, 1] if ok.any() else np.empty(0)
    male = iter(proba)
    out = []
    for path, code in zip(paths, status):
        if code != Status.OK:
            out.append(Prediction(str(path), STATUS_TEXT.get(int(code), f"status {int(code)}")))
            continue
        p = float(next(male))
        out.append(Prediction(str(path), "ok", "male" if p > 0.5 else "female", max(p, 1 - p)))
    return out


def write_predictions(predictions: list[Prediction], path: Path) -> None:
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "gender", "probability", "status"])
        for p in predictions:
            writer.writerow([p.path, p.gender, "" if p.probability is None else f"{p.probability:.4f}", p.status])


def format_predictions(predictions: list[Prediction]) -> str:
    """Human-readable lines: 'path  male  0.97' or 'path  no face found'."""
    width = max(len(p.path) for p in predictions)
    return "\n".join(f"{p.path:<{width}}  {p.gender} {p.probability:.4f}" if p.status == "ok"
                     else f"{p.path:<{width}}  {p.status}" for p in predictions)
