"""UTKFace: labels come from file names `[age]_[gender]_[race]_[datetime].jpg.chip.jpg`.

In the names gender is 0 male / 1 female; the Dataset stores 1 male / 0 female like every reader.
Race: 0 White, 1 Black, 2 Asian, 3 Indian, 4 Others, and -1 (`RACE_UNKNOWN`) for the 3 files of
the full release whose names have no race field (`39_1_20170116174525125.jpg.chip.jpg`): their
gender is known, so they stay. There is no official split: a seeded one stratified by gender is made.

A `.jpg` name must hold age 1 to 116 (`AGE_RANGE`, the release's range), gender 0 or 1, race 0 to 4 or
none, a 17-digit datetime (yyyymmddHHMMSSfff as in every name of the release, so `25_0_3.jpg.chip.jpg`
is not read as race absent, datetime 3), then anything but a digit or "_" (`39_1_5_2017...`, race 5,
must not pass as datetime 5), and end in ".jpg" (the release's ".jpg.chip.jpg", or its one variant
"jpg.chip.jpg"); and be valid UTF-8 (else it cannot be stored as an id). Any other name is an error
listing how many and the first few: its labels are unknown, and silently dropping images would change
the dataset behind the user's back.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from features.dataset import Dataset, DatasetError, describe_examples
from features.datasets.files import absolute_paths, dataset_root, file_names
from features.datasets.splits import stratified_split

NAME_PATTERN = re.compile(r"(\d{1,3})_([01])_(?:([0-4])_)?(\d{17})[^\d_].*\.jpg", re.IGNORECASE)
AGE_RANGE = (1, 116)
RACE_UNKNOWN = -1
SUBFOLDER = "UTKFace"


def load_utkface(root, *, seed: int = 0) -> Dataset:
    """Read `root/UTKFace/*.jpg` (or `root/*.jpg`), sorted by name, with a seeded 80/10/10 split."""
    root = dataset_root(root, "utkface")
    folder = root / SUBFOLDER if (root / SUBFOLDER).is_dir() else root  # the release's archive folder, or root
    names = np.array(sorted(name for name in file_names(folder)
                            if name.lower().endswith(".jpg") and not name.startswith(".")), dtype=str)
    _refuse_undecodable(names, folder)
    if names.size == 0:
        raise DatasetError(f"no UTKFace images (*.jpg) in {folder}")
    age, gender, race = parse_names(names, folder)
    return Dataset(name="utkface", root=str(root), ids=names, paths=absolute_paths(folder, names),
                   gender=gender, split=stratified_split(gender, seed=seed),
                   attributes={"age": age, "race": race}, split_seed=seed)


def parse_names(names: np.ndarray, folder: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(age int16, gender int8 1 male/0 female, race int8, -1 if absent) from the names; bad names raise."""
    matches = [NAME_PATTERN.fullmatch(name) for name in names]
    low, high = AGE_RANGE
    bad = [name for name, match in zip(names, matches)
           if match is None or not low <= int(match.group(1)) <= high]
    if bad:
        raise DatasetError(f"{folder}: {describe_examples(bad)} file names do not follow "
                           f"[age {low}..{high}]_[gender 0/1]_[race 0-4, or none]_[datetime, 17 digits]"
                           ".jpg.chip.jpg; rename or remove those files")
    fields = np.array([match.groups(default=str(RACE_UNKNOWN))[:3] for match in matches],
                      dtype=np.int64).reshape(-1, 3)
    return fields[:, 0].astype(np.int16), (1 - fields[:, 1]).astype(np.int8), fields[:, 2].astype(np.int8)


def _refuse_undecodable(names: np.ndarray, folder: Path) -> None:
    """Names the OS gave back with undecodable bytes (os.fsdecode's surrogate escapes) are refused."""
    shown = (name.encode("utf-8", "surrogateescape").decode("utf-8", "replace") for name in names)
    bad = [text for name, text in zip(names, shown) if text != name]  # an escaped byte became \ufffd
    if bad:
        raise DatasetError(f"{folder}: {describe_examples(bad)} file names are not valid UTF-8 "
                           "(shown with \ufffd); rename those files")
