"""Checking that image files exist, fast enough for 200,000 of them (one directory listing, no stats)."""
from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO, Callable, TypeVar

import numpy as np

from features.dataset import DatasetError, describe_examples

T = TypeVar("T")


def dataset_root(root, kind: str) -> Path:
    """`root` made absolute; raise naming it if it is missing or not a folder."""
    root = Path(root).expanduser()
    if not root.is_dir():
        problem = "is not a folder" if root.exists() else "does not exist"
        raise DatasetError(f"{kind} dataset root {root} {problem}")
    return root.resolve()


def file_names(folder: Path) -> set[str]:
    """Names of the files directly inside `folder`, links followed (not folders, not broken links): a
    FIFO or device named like an image is listed, and its row is UNREADABLE when extract reads it."""
    try:
        with os.scandir(folder) as entries:
            return {entry.name for entry in entries
                    if entry.is_file() or (not entry.is_dir() and os.path.exists(entry.path))}
    except OSError as error:
        raise DatasetError(f"cannot list image folder {folder}: {error.strerror or error}") from None


def read_label_file(path: Path, read: Callable[[BinaryIO], T]) -> T:
    """``read(handle)`` of label file ``path`` if it is a regular file after links, else a `DatasetError` at
    once: opened without blocking and checked on the descriptor, so a FIFO cannot hang the reader."""
    try:
        descriptor = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as error:
        raise DatasetError(f"cannot read label file {path}: {error.strerror or error}") from None
    if not stat.S_ISREG(os.fstat(descriptor).st_mode):
        os.close(descriptor)
        raise DatasetError(f"label file {path} is not a regular file; give the file itself")
    with os.fdopen(descriptor, "rb") as handle:
        try:
            return read(handle)
        except OSError as error:
            raise DatasetError(f"cannot read label file {path}: {error.strerror or error}") from None


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
