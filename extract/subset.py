"""--limit: a smaller table of the same dataset, each split keeping its share (a quick try)."""
from __future__ import annotations

from dataclasses import replace

import numpy as np

from features.dataset import Dataset


def limit_rows(dataset: Dataset, limit: int | None) -> Dataset:
    """`limit` rows, each split keeping its share (in table order); all of it when None or larger. Not
    simply the first rows: CelebA's table is in split order, so those would all be train rows."""
    if limit is None or limit >= len(dataset):
        return dataset
    keep = np.sort(np.concatenate([rows[:k] for rows, k in _rows_per_split(dataset.split, limit)]))
    return replace(dataset, ids=dataset.ids[keep], paths=dataset.paths[keep],
                   gender=dataset.gender[keep], split=dataset.split[keep],
                   attributes={name: values[keep] for name, values in dataset.attributes.items()})


def _rows_per_split(split: np.ndarray, limit: int) -> list[tuple[np.ndarray, int]]:
    """(rows of each split, how many to keep): limit * share rounded, at least 1 when limit allows."""
    groups = [np.flatnonzero(split == code) for code in np.unique(split)]
    sizes = np.array([len(rows) for rows in groups])
    # Rounding the cumulative shares keeps every split within a row of its share and the total at limit.
    keep = np.diff(np.round(limit * np.cumsum(sizes) / sizes.sum()).astype(int), prepend=0)
    if limit >= len(groups):
        for empty in np.flatnonzero(keep == 0):  # a small split rounded to nothing: one row from the largest
            keep[np.argmax(keep)] -= 1
            keep[empty] = 1
    return list(zip(groups, keep))
