"""The seeded, stratified train/val/test split for datasets that ship without an official one."""
from __future__ import annotations

import numpy as np

FRACTIONS = (0.8, 0.1, 0.1)  # train, val, test


def stratified_split(labels: np.ndarray, *, seed: int) -> np.ndarray:
    """int8 split codes (0 train, 1 val, 2 test) holding each label's share in every split: each class,
    in sorted order (so the result depends only on labels and seed), shuffled by one generator seeded by
    `seed` and cut by `FRACTIONS`; a class of 3 or more images puts at least one in val and one in test,
    so tiny datasets still evaluate."""
    labels = np.asarray(labels)
    rng = np.random.default_rng(seed)
    split = np.zeros(len(labels), dtype=np.int8)
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_val, n_test = (_share(len(members), fraction) for fraction in FRACTIONS[1:])
        split[members[len(members) - n_val - n_test:len(members) - n_test]] = 1
        split[members[len(members) - n_test:]] = 2
    return split


def _share(size: int, fraction: float) -> int:
    share = int(round(size * fraction))
    return max(share, 1) if size >= 3 else share
