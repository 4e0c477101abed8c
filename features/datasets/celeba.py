"""CelebA: the official split, `Male` as the gender label, the 40 attributes and identities.

The on-disk layouts (`LAYOUTS`, tried in order; the identity file is optional) are those of
docs/datasets.md. Images: the aligned release `img_align_celeba/` (178x218, faces at a known place,
alignment "celeba_aligned"), or else the in-the-wild originals `img_celeba/` in its place (un-cropped
photos, same file names, alignment "wild": the extractor detects the face); the release used is the
dataset's `images`. Rows come in the partition file's order. Attributes are stored 1/0 by name (`Male`
included), from the attribute file and every other `list_attr_celeba*.txt` beside it
(`merge_extra_attribute_files`), plus `identity` (int32) when the identity file is there.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from features.dataset import Dataset, DatasetError, describe_examples
from features.datasets.celeba_labels import (read_attribute_file, read_identity_file,
                                             read_partition_file)
from features.datasets.files import absolute_paths, dataset_root, require_files

IMAGE_FOLDER = "img_align_celeba"
WILD_IMAGE_FOLDER = "img_celeba"
ALIGNMENTS = {IMAGE_FOLDER: {"kind": "celeba_aligned", "size": [178, 218]}, WILD_IMAGE_FOLDER: {"kind": "wild"}}


@dataclass(frozen=True)
class CelebaLayout:
    """Where one layout keeps the label files and images, relative to the dataset root."""

    name: str
    attributes: str
    partition: str
    identity: str
    images: str


LAYOUTS = (
    CelebaLayout("flat", "list_attr_celeba.txt", "list_eval_partition.txt", "identity_CelebA.txt",
                 IMAGE_FOLDER),
    CelebaLayout("nested", "Anno/list_attr_celeba.txt", "Eval/list_eval_partition.txt",
                 "Anno/identity_CelebA.txt", f"Img/{IMAGE_FOLDER}"),
    CelebaLayout("csv", "list_attr_celeba.csv", "list_eval_partition.csv", "identity_CelebA.csv",
                 IMAGE_FOLDER),
)


def load_celeba(root, *, seed: int = 0) -> Dataset:
    """Read and validate a CelebA folder in any of `LAYOUTS`. `seed` is unused: the split is official."""
    root = dataset_root(root, "celeba")
    layout = find_layout(root)
    partition, attribute_file, identity_file = (root / layout.partition, root / layout.attributes,
                                                root / layout.identity)
    ids, split = read_partition_file(partition)
    attribute_ids, names, values = read_attribute_file(attribute_file)
    if "Male" not in names:
        raise DatasetError(f"{attribute_file}: no 'Male' column among the attributes {describe_examples(names)}")
    values = values[align_ids(ids, attribute_ids, partition, attribute_file)]
    attributes = {name: np.ascontiguousarray(values[:, column]) for column, name in enumerate(names)}
    merge_extra_attribute_files(attribute_file, ids, attributes)
    if identity_file.is_file():
        identity_ids, identity = read_identity_file(identity_file)
        attributes["identity"] = identity[align_ids(ids, identity_ids, partition, identity_file)]
    images = image_folder(root, layout)
    require_files(images, ids)
    return Dataset(name="celeba", root=str(root), ids=ids, paths=absolute_paths(images, ids),
                   gender=attributes["Male"].copy(), split=split, attributes=attributes,
                   images=images.name, alignment=dict(ALIGNMENTS[images.name]))


def find_layout(root: Path) -> CelebaLayout:
    """The first layout whose attribute and partition files both exist under `root`."""
    for layout in LAYOUTS:
        if (root / layout.attributes).is_file() and (root / layout.partition).is_file():
            return layout
    looked = "; ".join(f"{layout.name}: {layout.attributes} + {layout.partition}" for layout in LAYOUTS)
    found = [name for layout in LAYOUTS for name in (layout.attributes, layout.partition)
             if (root / name).is_file()]
    found_text = f" (found only {', '.join(found)})" if found else ""
    raise DatasetError(f"no CelebA label files under {root}{found_text}; looked for {looked}")


def image_folder(root: Path, layout: CelebaLayout) -> Path:
    """The layout's image folder (aligned release first, else `img_celeba` in its place), descending
    into Kaggle's doubled `img_align_celeba/img_align_celeba`."""
    aligned = root / layout.images
    for folder in (aligned, aligned.with_name(WILD_IMAGE_FOLDER)):
        if (folder / folder.name).is_dir():
            folder = folder / folder.name
        if folder.is_dir():
            return folder
    raise DatasetError(f"CelebA image folder {aligned} does not exist ({layout.name} layout; nor does "
                       f"{aligned.with_name(WILD_IMAGE_FOLDER).name}, the in-the-wild release, beside it)")


def align_ids(reference: np.ndarray, ids: np.ndarray, reference_path: Path, path: Path) -> np.ndarray:
    """Index that puts `ids` in `reference` order; raise if the two files list different images."""
    if np.array_equal(reference, ids):
        return np.arange(len(ids))
    only_reference, only_other = np.setdiff1d(reference, ids), np.setdiff1d(ids, reference)
    if only_reference.size or only_other.size:
        parts = [f"{describe_examples(names)} ids in {first.name} but not in {second.name}"
                 for names, first, second in ((only_reference, reference_path, path),
                                              (only_other, path, reference_path)) if names.size]
        raise DatasetError(f"{reference_path.parent}: label files disagree: {'; '.join(parts)}")
    order = np.argsort(ids)
    return order[np.searchsorted(ids[order], reference)]


MISSING_ATTRIBUTE = -1  # an attribute no attribute file gives for this image (groups skip it)


def merge_extra_attribute_files(main: Path, ids: np.ndarray, attributes: dict[str, np.ndarray]) -> None:
    """Add to `attributes`, in place, those of every other `list_attr_celeba*.txt` beside `main` (e.g. the 40
    attributes of part of the images): `MISSING_ATTRIBUTE` where a file does not list an image, rows of
    images outside the dataset ignored; a value contradicting another file (Male, say) raises."""
    position = {image: row for row, image in enumerate(ids)}
    for path in sorted(main.parent.glob("list_attr_celeba*.txt")):
        if path.name == main.name:
            continue
        extra_ids, names, values = read_attribute_file(path)
        rows = np.array([position.get(image, -1) for image in extra_ids], dtype=np.int64)
        keep = rows >= 0
        for column, name in enumerate(names):
            merged = attributes.setdefault(name, np.full(len(ids), MISSING_ATTRIBUTE, dtype=np.int8))
            known = keep & (merged[np.maximum(rows, 0)] != MISSING_ATTRIBUTE)
            clash = extra_ids[known][merged[rows[known]] != values[known, column]]
            if clash.size:
                raise DatasetError(f"{path}: {name!r} disagrees with the other attribute files for "
                                   f"{describe_examples(clash)} images")
            merged[rows[keep]] = values[keep, column]
