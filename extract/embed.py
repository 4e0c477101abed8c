"""Store-less embedding (classify's predict, scripts): a handful of image files through the same face
front end as extract (`extract.faces`), one detection per image serving every backbone, and the same
model step as the store loop (`extract.pipeline.start_embedding`); no store, no units, no resume."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from extract.backbones import Backbone, load_backbone
from extract.decode import decode
from extract.device import resolve_device
from extract.face_row import BOX, scaled
from extract.images import (INVALID_ROW_ERRORS, invalid_status, make_loader, quiet_opencv, start_workers,
                            unit_batches)
from extract.pipeline import start_embedding
from features.store import Status


@dataclass(frozen=True)
class FaceRows:
    """Per-face results of `embed_faces`: one row per face found (all faces, or the largest), and one
    row with the reason for an image without a usable face (status not OK, NaN box and embeddings).
    image: (K,) int64 index into the paths; box: (K, 4) float32 x, y, w, h in original-image pixels
    (NaN without a face detector, or none found); status: (K,) uint8; embeddings: name -> (K, dim)."""

    image: np.ndarray
    box: np.ndarray
    status: np.ndarray
    embeddings: dict[str, np.ndarray]


class _ImageFaces(torch.utils.data.Dataset):
    """Path i -> [(i, box, status, {backbone: input array})], one tuple per face: decoded and
    detected once, then cut for every backbone."""

    def __init__(self, paths: Sequence[str], backbones: Sequence[Backbone], *, all_faces: bool):
        self.paths, self.all_faces = list(paths), all_faces
        self.preprocessors = {b.name: b.preprocessor for b in backbones}
        self.detector = next((b.preprocessor.detector for b in backbones if b.uses_faces), None)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> list:
        no_box = np.full(4, np.nan, dtype=np.float32)
        try:
            decoded = decode(self.paths[index])
            # backbones that take the whole image (and may have their own aligner)
            whole = {name: p(decoded.image) for name, p in self.preprocessors.items() if not hasattr(p, "align")}
        except INVALID_ROW_ERRORS as error:
            return [(index, no_box, invalid_status(error), {})]
        if self.detector is None:
            return [(index, no_box, int(Status.OK), whole)]
        faces = self.detector.faces(decoded.image)
        if not len(faces):
            return [(index, no_box, int(Status.NO_FACE), {})]
        return [(index, scaled(face, 1.0 / decoded.scale)[BOX], int(Status.OK),
                 {**whole, **{name: p.align(decoded.image, face) for name, p in self.preprocessors.items()
                              if hasattr(p, "align")}})
                for face in (faces if self.all_faces else faces[:1])]


def _flatten(items: list[list]) -> list:
    return [face for image in items for face in image]


def embed_faces(paths: Sequence[str], backbones: Sequence[Backbone], *, all_faces: bool = False,
                batch_size: int = 32, workers: int | None = None) -> FaceRows:
    """Embed image files without a store, with loaded `backbones`: one face detection per image serves
    every backbone (the largest face, or each face with `all_faces`). workers: as `make_loader`'s."""
    paths = [str(p) for p in paths]
    gpu = any(b.uses_torch_device and b.device.type == "cuda" for b in backbones)
    loader = make_loader(_ImageFaces(paths, backbones, all_faces=all_faces),
                         unit_batches([(0, len(paths))], batch_size), workers=workers, gpu=gpu, collate=_flatten)
    image, box, status = [], [np.empty((0, 4), np.float32)], [np.empty(0, np.uint8)]
    parts = {b.name: [np.empty((0, b.dim), np.float32)] for b in backbones}  # the rows of no image at all
    for faces in start_workers(loader):
        codes = np.array([face[2] for face in faces], dtype=np.uint8)
        image += [face[0] for face in faces]
        box.append(np.stack([face[1] for face in faces]).astype(np.float32))
        status.append(codes)
        for backbone in backbones:
            placeholder = np.zeros(backbone.input_shape, dtype=backbone.input_dtype)
            batch = np.stack([face[3].get(backbone.name, placeholder) for face in faces])
            pending = start_embedding(backbone, torch.from_numpy(batch), torch.from_numpy(codes))
            parts[backbone.name].append(pending.result())
    return FaceRows(np.asarray(image, dtype=np.int64), np.concatenate(box), np.concatenate(status),
                    {name: np.concatenate(rows) for name, rows in parts.items()})


def load_checked(name: str, *, weights: str | None = None, device: str = "auto", precision: str = "fp32",
                 tta: str = "none", expect_weights: str | None = None) -> Backbone:
    """`load_backbone`, then a ValueError unless its weights identity is ``expect_weights`` (when given:
    "sha256:..." or "random", what a store recorded)."""
    model = load_backbone(name, weights=weights, device=resolve_device(device), precision=precision, tta=tta)
    if expect_weights is not None and model.metadata["weights"] != expect_weights:
        raise ValueError(f"{name} loaded weights {model.metadata['weights'][:19]}..., not the "
                         f"{expect_weights[:19]}... the caller needs")
    return model


def embed_images(paths: Sequence[str], backbones: Mapping[str, Mapping], *, all_faces: bool = False,
                 device: str = "auto", batch_size: int = 32, workers: int | None = None) -> FaceRows:
    """Embed image files without a store with several backbones at once (classify's predict): each loaded
    by `load_checked` with its options, then ONE `embed_faces` pass; a ValueError names one that fails."""
    quiet_opencv()  # callers like classify's predict print results, not OpenCV's per-net warnings
    models = []
    for name, options in backbones.items():
        try:
            models.append(load_checked(name, device=device, **options))
        except (ValueError, RuntimeError) as error:  # unknown backbone, no device, other or no weights
            raise ValueError(f"backbone {name}: {error}") from None
    return embed_faces(paths, models, all_faces=all_faces, batch_size=batch_size, workers=workers)


def embed_paths(paths: Sequence[str], backbone: str, *, weights: str | None = None,
                device: str = "auto", batch_size: int = 32, workers: int | None = None,
                precision: str = "fp32", expect_weights: str | None = None,
                tta: str = "none") -> tuple[np.ndarray, np.ndarray]:
    """Embed image files without a store with one backbone (its largest face per image, options as
    `load_checked`'s): ((N, dim) float32 with NaN rows, (N,) uint8 `Status`)."""
    quiet_opencv()
    model = load_checked(backbone, weights=weights, device=device, precision=precision, tta=tta,
                         expect_weights=expect_weights)
    rows = embed_faces(paths, [model], batch_size=batch_size, workers=workers)  # the largest face: a row per path
    return rows.embeddings[model.name], rows.status
