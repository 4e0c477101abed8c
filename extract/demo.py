"""Generated demo images and a CelebA-layout demo dataset (drawn faces, random labels).

Nothing can be learnt from the images: face networks find no faces in drawings. Deterministic for given arguments.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes No_Beard "
    "Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling Straight_Hair "
    "Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace Wearing_Necktie Young"
).split()
CELEBA_SIZE = (178, 218)  # width, height of img_align_celeba
CELEBA_FILES = {  # layout -> (attributes, partition, identity, images)
    "flat": ("list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt", "img_align_celeba"),
    "nested": ("Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt", "Anno/identity_CelebA.txt",
               "Img/img_align_celeba"),
    "csv": ("list_attr_celeba.csv", "list_eval_partition.csv", "identity_CelebA.csv",
            "img_align_celeba/img_align_celeba"),
}


@dataclass(frozen=True)
class CelebaLabels:
    """The labels `make_celeba` writes: ids in partition order, split codes, 0/1 attributes."""

    ids: list[str]
    split: np.ndarray
    identity: np.ndarray
    names: tuple[str, ...]
    attributes: np.ndarray  # (n, len(names)) 0/1


def celeba_labels(n: int = 12, *, names=tuple(CELEBA_ATTRIBUTES), seed: int = 0) -> CelebaLabels:
    """Labels for n images: 60/20/20 split in id order, male on every other id, 3 images per identity."""
    rng = np.random.default_rng(seed)
    index = np.arange(n)
    split = np.where(index < 0.6 * n, 0, np.where(index < 0.8 * n, 1, 2)).astype(np.int8)
    attributes = rng.integers(0, 2, size=(n, len(names))).astype(np.int8)
    if "Male" in names:
        attributes[:, list(names).index("Male")] = index % 2
    return CelebaLabels(ids=[f"{i + 1:06d}.jpg" for i in index], split=split,
                        identity=(index // 3 + 1).astype(np.int32), names=tuple(names),
                        attributes=attributes)


def make_celeba(parent: Path, n: int = 12, layout: str = "flat", *, names=tuple(CELEBA_ATTRIBUTES),
                identity: bool = True, newline: str = "\r\n", seed: int = 0) -> Path:
    """A CelebA folder of n 178x218 JPEGs with label files in `layout` (see `CELEBA_FILES`)."""
    labels = celeba_labels(n, names=names, seed=seed)
    root = Path(parent) / f"celeba_{layout}"
    attributes_file, partition_file, identity_file, images = (root / name for name in CELEBA_FILES[layout])
    csv = layout == "csv"
    write_lines(attributes_file, attribute_lines(labels, csv=csv), newline=newline)
    files = [(partition_file, "partition", labels.split)]
    files += [(identity_file, "identity", labels.identity)] if identity else []
    for path, column, values in files:
        write_lines(path, (["image_id," + column] if csv else [])
                    + [f"{i},{v}" if csv else f"{i} {v}" for i, v in zip(labels.ids, values)], newline=newline)
    for number, image_id in enumerate(labels.ids):
        write_face(images / image_id, size=CELEBA_SIZE, seed=seed * 100_003 + number)
    return root


def attribute_lines(labels: CelebaLabels, *, csv: bool = False) -> list[str]:
    """The attribute file's lines: official (count, names, `id -1  1 ...`) or Kaggle CSV."""
    signed = labels.attributes * 2 - 1
    if csv:
        return [",".join(("image_id",) + labels.names)] + [
            ",".join([image_id, *map(str, row)]) for image_id, row in zip(labels.ids, signed)]
    return [str(len(labels.ids)), " ".join(labels.names)] + [
        image_id + " " + " ".join(f"{value:2d}" for value in row)
        for image_id, row in zip(labels.ids, signed)]


def face_image(size=CELEBA_SIZE, *, seed: int = 0) -> np.ndarray:
    """A BGR uint8 image (width, height = size) of a noisy face-like drawing: head, eyes, mouth."""
    rng = np.random.default_rng(seed)
    width, height = size
    image = rng.integers(0, 256, size=3).astype(np.uint8) * np.ones((height, width, 3), np.uint8)
    center = (width // 2 + int(rng.integers(-5, 6)), height // 2 + int(rng.integers(-5, 6)))
    skin = tuple(int(c) for c in rng.integers((60, 100, 150), (140, 180, 255)))
    cv2.ellipse(image, center, (width // 3, height * 2 // 5), 0, 0, 360, skin, -1)
    for side in (-1, 1):
        cv2.circle(image, (center[0] + side * width // 8, center[1] - height // 12), max(width // 30, 1),
                   (40, 30, 20), -1)
    cv2.ellipse(image, (center[0], center[1] + height // 7), (width // 9, height // 30), 0, 0, 180,
                (60, 40, 150), 2)
    noise = rng.normal(0, 8, image.shape)
    return np.clip(image + noise, 0, 255).astype(np.uint8)


def write_face(path: Path, *, size=CELEBA_SIZE, seed: int = 0) -> Path:
    """Write `face_image` encoded by the file's extension (jpg/jpeg/png/bmp/webp, any case)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    extension = path.suffix.lower() if path.suffix.lower() in (".png", ".bmp", ".webp") else ".jpg"
    ok, encoded = cv2.imencode(extension, face_image(size, seed=seed))
    assert ok, f"cv2 could not encode {extension}"
    path.write_bytes(encoded.tobytes())
    return path


def write_lines(path: Path, lines, *, newline: str = "\n") -> Path:
    """Write text lines with the given line ending (CelebA's own files use CRLF)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("".join(line + newline for line in lines).encode())
    return path
