"""Gender of new images with a saved head: its backbone(s) run through `extract` (imported lazily).

The head's sidecar names the backbone(s) and the weights each was extracted with; the same weights go
to `extract.embed_paths` ("random" for extract's seeded random init, else the recorded weight file,
which must exist here), and the embedding width must match the store's. An image
whose face the aligner cannot find, or that cannot be read, is reported as such (with the reason:
empty file, not an image, damaged image) and never guessed. The head's feature treatment
(`classify.treatment`) is applied to the features as in training.

Seam for several faces per image: `predict_images` gets features from `embed` (one row per image,
today through `extract.embed_paths`, the largest face). A front end that returns every face with its
box plugs in there: one `Prediction` per face, ``face`` its index and ``box`` (x, y, w, h).
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from classify import treatment
from classify.decision import Decision
from classify.headfile import sha256_file
from classify.results import load_head
from features.datasets.folder import IMAGE_EXTENSIONS
from features.store import Status

log = logging.getLogger(__name__)

STATUS_TEXT = {Status.OK: "ok", Status.UNREADABLE: "unreadable", Status.NO_FACE: "no face found"}


def status_text(code: int) -> str:
    """'no face found', 'unreadable', or the status's name for others (e.g. 'too large')."""
    if code in STATUS_TEXT:
        return STATUS_TEXT[code]
    try:
        return Status(code).name.lower().replace("_", " ")
    except ValueError:
        return f"status {code}"


class PredictError(ValueError):
    """Inputs or backbone outputs that cannot be used for prediction."""


@dataclass(frozen=True)
class Prediction:
    path: str
    status: str
    gender: str = ""
    probability: float | None = None  # calibrated, of the predicted gender (below 0.5 only when the
    # recorded threshold is not 0.5), not of "male"
    reason: str = ""  # why an image has no prediction


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
        # test-time augmentation as recorded (stores of extract --tta); passed only when used
        tta = {"tta": metadata["tta"]} if metadata.get("tta", "none") != "none" else {}
        try:
            x, codes = extract.embed_paths([str(p) for p in paths], name, weights=weights, device=device,
                                           precision=metadata.get("precision", "fp32"),
                                           expect_weights=metadata.get("weights"), **tta)
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
    head, record = load_head(head_path)  # every check of the head and its sidecar, before any backbone
    paths = expand_inputs(inputs)
    x, status = embed(paths, record, device=device)
    ok = status == Status.OK
    backbones = tuple(record["config"]["backbones"])
    dims = {name: record["store"]["backbones"][name]["dim"] for name in backbones}
    x = treatment.apply(x[ok], record["treatment"]["chosen"], backbones, dims)
    # the recorded decision, as in training: calibrated p(male), male when above the recorded threshold
    decision = Decision.from_json(record["decision"])
    proba = decision.p_male(head.predict_proba(x)[:, 1]) if ok.any() else np.empty(0)
    male = iter(proba)
    out = []
    for path, code in zip(paths, status):
        if code != Status.OK:
            reason = unreadable_reason(path) if code == Status.UNREADABLE else ""
            out.append(Prediction(str(path), status_text(int(code)), reason=reason))
            continue
        p = float(next(male))
        is_male = bool(decision.is_male(p))
        out.append(Prediction(str(path), "ok", "male" if is_male else "female", p if is_male else 1 - p))
    return out


def write_predictions(predictions: list[Prediction], path: Path) -> None:
    """CSV: path, gender, probability (of that gender), status, reason."""
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "gender", "probability", "status", "reason"])
        for p in predictions:
            writer.writerow([p.path, p.gender, "" if p.probability is None else f"{p.probability:.4f}", p.status,
                             p.reason])


def format_predictions(predictions: list[Prediction]) -> str:
    """A header, one line per image ('path  male  0.97' or 'path  unreadable: empty file'), totals."""
    width = max(len(p.path) for p in predictions + [Prediction("image", "")])
    lines = [f"{'image':<{width}}  gender  probability of that gender"]
    for p in predictions:
        if p.status == "ok":
            lines.append(f"{p.path:<{width}}  {p.gender:<6}  {p.probability:.4f}")
        else:
            lines.append(f"{p.path:<{width}}  {p.status}{': ' + p.reason if p.reason else ''}")
    return "\n".join(lines + [totals(predictions)])


def totals(predictions: list[Prediction]) -> str:
    """'12 images: 5 male, 4 female, 2 no face found, 1 unreadable'."""
    counts: dict[str, int] = {}
    for p in predictions:
        key = p.gender if p.status == "ok" else p.status
        counts[key] = counts.get(key, 0) + 1
    order = ["male", "female"] + sorted(set(counts) - {"male", "female"})
    parts = [f"{counts.get(key, 0)} {key}" for key in order if key in counts or key in ("male", "female")]
    return f"{len(predictions)} images: " + ", ".join(parts)
