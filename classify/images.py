"""Images in, one feature row per face out: the backbones of a model run through `extract` (imported lazily).

The model's backbones go to ONE `extract.embed_images` call, each with the weights, precision and
test-time augmentation it was extracted with (`weights_argument`), so each image is decoded and its
faces detected once, as in `python -m extract`; the embedding widths must match the store's. An image
that cannot be read, or without a face the detector finds, keeps its status (with the reason: empty
file, not an image, damaged image) and is never guessed.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.datasets.folder import IMAGE_EXTENSIONS
from features.jsonfile import regular_file
from features.provenance import sha256_file
from features.store import Status

log = logging.getLogger(__name__)


def status_text(code: int) -> str:
    """'no face found', 'unreadable', or the status's name for others (e.g. 'too large')."""
    if code == Status.NO_FACE:
        return "no face found"
    try:
        return Status(code).name.lower().replace("_", " ")
    except ValueError:
        return f"status {code}"


class PredictError(ValueError):
    """Inputs or backbone outputs that cannot be used for prediction."""


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one face (or one image without a usable face)."""

    path: str
    status: str  # "ok", or why there is no prediction: "unreadable", "no face found", "too large", ...
    gender: str | None = None  # "male" / "female"; None when status is not "ok"
    probability: float | None = None  # calibrated, of ``gender`` (below 0.5 only if the threshold is not 0.5)
    p_male: float | None = None  # calibrated p(male), what the threshold is applied to
    reason: str = ""  # why an image has no prediction
    face: int | None = None  # index of the face in its image, 0 the largest; None when no face
    box: tuple[float, float, float, float] | None = None  # x, y, w, h in original-image pixels


_SIGNATURES = (b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n", b"BM", b"GIF8", b"II*\0", b"MM\0*", b"RIFF")


def unreadable_reason(path: Path) -> str:
    """Why an image could not be read, from its first bytes: empty, not an image, or damaged."""
    try:
        with open(path, "rb") as handle:
            head = handle.read(16)
    except OSError as error:
        return f"cannot open ({error.strerror})"
    if not head:
        return "empty file"
    if not head.startswith(_SIGNATURES):
        return "not an image (unknown file content)"
    return "damaged image (cannot be decoded)"


def expand_inputs(inputs: list[str]) -> list[Path]:
    """Image files, and the image files of folders (recursively, sorted); a missing path raises."""
    paths = []
    for item in map(Path, inputs):
        if item.is_dir():
            paths += sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS and regular_file(p))
        elif regular_file(item):
            paths.append(item)
        else:
            raise PredictError(f"no such image or folder (or not a regular file): {item}")
    if not paths:
        raise PredictError(f"no images found in {', '.join(inputs)} (suffixes: {', '.join(IMAGE_EXTENSIONS)})")
    return paths


def weights_argument(name: str, metadata: dict) -> str | None:
    """The ``weights`` option that rebuilds the weights recorded in ``metadata``: "random", the recorded
    weight file when it is here (its sha256 must match), else None, the backbone's default weights (a pip
    package's file on another machine, say), which extract checks against the recorded identity."""
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


def embed(paths: list[Path], infos: dict[str, dict], *, device: str = "auto", all_faces: bool = False):
    """Features of ``paths`` from the backbones ``infos`` (name -> recorded {dim, metadata}, in the head's
    column order): the largest face of each image, or every face with ``all_faces``. Returns extract's
    `FaceRows` (image index, box, status per row) and the rows' features concatenated, (K, sum of dims)."""
    import extract  # lazy: classify must not import torch unless it predicts

    options = {}
    for name, info in infos.items():  # how extract must load each to rebuild what the store recorded
        metadata = info.get("metadata", {})
        options[name] = {"weights": weights_argument(name, metadata), "precision": metadata.get("precision", "fp32"),
                         "tta": metadata.get("tta", "none"), "expect_weights": metadata.get("weights")}
    try:
        rows = extract.embed_images([str(p) for p in paths], options, all_faces=all_faces, device=device)
    except (ValueError, RuntimeError) as error:  # unknown backbone, no device, other or no weights
        raise PredictError(str(error)) from None
    _check_images(np.asarray(rows.image, dtype=np.int64), len(paths), all_faces=all_faces)
    parts = []
    for name, info in infos.items():
        x = np.asarray(rows.embeddings[name], dtype=np.float32)
        if x.shape != (len(rows.image), info["dim"]):
            raise PredictError(f"backbone {name} returned features {x.shape}, expected ({len(rows.image)}, "
                               f"{info['dim']})")
        parts.append(x)
    return rows, np.concatenate(parts, axis=1)


def _check_images(image: np.ndarray, n_paths: int, *, all_faces: bool) -> None:
    """Every image has its rows (one, or at least one with ``all_faces``), consecutive and in order."""
    counts = np.bincount(image, minlength=n_paths) if image.size and image.min() >= 0 else np.zeros(n_paths, int)
    one_each = (counts >= 1).all() if all_faces else (counts == 1).all()
    if len(counts) != n_paths or not one_each or (np.diff(image) < 0).any():
        raise PredictError(f"the backbones returned rows for images {image.tolist()[:20]}, expected "
                           f"{'at least ' if all_faces else ''}one per image of {n_paths}, in order")


def face_indices(image: np.ndarray) -> np.ndarray:
    """The index of each row's face within its image (rows of one image are consecutive)."""
    starts = np.flatnonzero(np.r_[True, image[1:] != image[:-1]]) if image.size else np.empty(0, int)
    return np.arange(len(image)) - np.repeat(starts, np.diff(np.r_[starts, len(image)]))
