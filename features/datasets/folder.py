"""A user's own images sorted into `root/male/` and `root/female/` (subfolders allowed).

Class folder names match case-insensitively; image files are recognised by extension (`IMAGE_EXTENSIONS`,
any case); hidden files and folders are skipped, other files are ignored with a log line. ids are paths
relative to root with "/" separators. The split is seeded and stratified.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from features.dataset import FEMALE, MALE, Dataset, DatasetError, describe_examples
from features.datasets.files import dataset_root
from features.datasets.splits import stratified_split

log = logging.getLogger(__name__)

CLASS_FOLDERS = {"male": MALE, "female": FEMALE}
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff")  # what cv2.imread decodes


def load_folder(root, *, seed: int = 0) -> Dataset:
    """Read `root/male/**` and `root/female/**` images with a seeded 80/10/10 split per class."""
    root = dataset_root(root, "folder")
    ids, gender = [], []
    for name, label in CLASS_FOLDERS.items():
        folder = class_folder(root, name)
        images = list_images(folder, root)
        if not images:
            raise DatasetError(f"class folder {folder} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        ids += images
        gender += [label] * len(images)
    order = np.argsort(ids, kind="stable")
    ids, gender = np.array(ids, dtype=str)[order], np.array(gender, dtype=np.int8)[order]
    return Dataset(name="folder", root=str(root), ids=ids,
                   paths=np.array([str(root / image_id) for image_id in ids], dtype=str),
                   gender=gender, split=stratified_split(gender, seed=seed), split_seed=seed)


def class_folder(root: Path, name: str) -> Path:
    """root's subfolder called `name`, in any letter case; exactly one must exist."""
    folders = sorted(entry for entry in os.listdir(root) if (root / entry).is_dir())
    matches = [entry for entry in folders if entry.lower() == name]
    if len(matches) != 1:
        problem = f"{len(matches)} folders named {name!r} ({', '.join(matches)})" if matches else \
            f"no {name!r} folder"
        raise DatasetError(f"{root}: {problem}; expected one 'male' and one 'female' folder, "
                           f"found folders: {describe_examples(folders) if folders else 'none'}")
    return root / matches[0]


def list_images(folder: Path, root: Path) -> list[str]:
    """Image files under `folder` (recursively), as sorted '/'-separated paths relative to root."""
    images, skipped = [], []
    for directory, subfolders, files in os.walk(folder):
        subfolders[:] = [name for name in subfolders if not name.startswith(".")]
        for name in files:
            if name.startswith("."):
                continue
            relative = Path(directory, name).relative_to(root).as_posix()
            (images if name.lower().endswith(IMAGE_EXTENSIONS) else skipped).append(relative)
    if skipped:
        log.info("%s: ignored %s non-image files", folder, describe_examples(sorted(skipped)))
    return sorted(images)
