"""The in-memory dataset table that every reader returns and the feature store records.

A `Dataset` is one row per image, in a fixed order: row ``i`` of every array (and of every embedding
array in the store) is image ``ids[i]``. Readers live in `features.datasets`; they validate their input
and raise `DatasetError` with a message that names the problem, how many rows it hits and the first few.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np

SPLITS = ("train", "val", "test")
MALE, FEMALE = 1, 0


class DatasetError(ValueError):
    """A dataset on disk is missing, malformed or inconsistent. The message is meant for the user."""


def split_code(split: str) -> int:
    """The int8 code of a split name; ValueError naming the valid ones."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
    return SPLITS.index(split)


def describe_examples(items, *, limit: int = 5) -> str:
    """'N (first: a, b, c)' for error messages that must say how many and show the first few."""
    items = list(items)
    shown = ", ".join(str(item) for item in items[:limit])
    more = ", ..." if len(items) > limit else ""
    return f"{len(items)} (first: {shown}{more})"


@dataclass(frozen=True, eq=False)
class Dataset:
    """Images with their gender label, split and per-image attributes, one row per image.

    gender, split and attributes are coded as the store holds them (`features.store.schema`).
    split_seed: the seed of a generated split, None for an official one. images: which image release
    the paths point at when a dataset has several (CelebA: "img_align_celeba" or "img_celeba");
    alignment: where the faces are, {"kind": "wild"} (detect them) or an aligned release's known
    landmarks ({"kind", "size", "landmarks"}).
    """

    name: str
    root: str
    ids: np.ndarray
    paths: np.ndarray
    gender: np.ndarray
    split: np.ndarray
    attributes: dict[str, np.ndarray] = field(default_factory=dict)
    split_seed: int | None = None
    images: str | None = None
    alignment: dict = field(default_factory=dict)

    def __post_init__(self):
        n = len(self.ids)
        columns = {"paths": self.paths, "gender": self.gender, "split": self.split, **self.attributes}
        wrong = {key: len(value) for key, value in columns.items() if len(value) != n}
        if wrong:
            raise DatasetError(f"dataset {self.name!r}: columns {wrong} do not have {n} rows like ids")

    def __len__(self) -> int:
        return len(self.ids)

    def fingerprint(self) -> str:
        """sha256 over ids, labels and split: two stores of the same table share it."""
        digest = hashlib.sha256(self.name.encode())
        digest.update("\n".join(map(str, self.ids)).encode())
        digest.update(np.ascontiguousarray(self.gender, dtype=np.int8).tobytes())
        digest.update(np.ascontiguousarray(self.split, dtype=np.int8).tobytes())
        if self.images not in (None, "img_align_celeba"):
            # another release of the same ids (CelebA's in-the-wild photos) is another dataset; the
            # aligned release adds nothing, so stores made before this field keep their fingerprint
            digest.update(f"images={self.images}".encode())
        return digest.hexdigest()
