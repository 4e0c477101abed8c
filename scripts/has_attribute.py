"""Exit 0 when a feature store records a binary attribute for enough rows to balance on it, else 1.

    .venv/bin/python scripts/has_attribute.py runs/celeba/features.zarr Young   # used by scripts/main.sh
"""
from __future__ import annotations

import sys

import numpy as np

from classify.balance import MIN_LABELLED
from features.store import FeatureStore


def main(store: str, attribute: str) -> int:
    values = FeatureStore.open(store).attributes.get(attribute)
    enough = values is not None and min(np.sum(values == 0), np.sum(values == 1)) >= MIN_LABELLED
    return 0 if enough else 1


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
