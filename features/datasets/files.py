"""Checking that image files exist, fast enough for 200,000 of them (one directory listing, no stats)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from features.dataset import DatasetError, describe_examples


def dataset_root(root, kind: str) -> Path:
    """`root` made absolute; raise naming it if it is missing or not a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{kind} dataset root {root} {problem}")
    return root.resolve()


def file_names(folder: Path) -> set[str]:
    """Names of the regular files (or links to them) directly inside `folder`."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries if entry.is_file()}
    except OSError as error:
        raise DatasetError(f"cannot list image folder {folder}: {error.strerror or error}") from None


def require_files(folder: Path, names: np.ndarray) -> None:
    """Raise naming how many of `names` are missing from `folder`, and the first few."""
    present = file_names(folder)
    missing = [name for name in names if name not in present]
    if missing:
        raise DatasetError(f"image files listed in the labels are missing from {folder}: "
                           f"{describe_examples(missing)}")


def absolute_paths(folder: Path, names: np.ndarray) -> np.ndarray:
    """folder/name for every name, as a str array."""
    return np.char.add(str(folder) + os.sep, np.asarray(names, dtype=str))
