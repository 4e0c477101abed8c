"""Dataset readers: each turns a folder into a validated `features.dataset.Dataset`.

    load_dataset("celeba", "../shared/data/celeba")        # official split, Male + attributes
    load_dataset("utkface", path, seed=0)                   # seeded stratified split
    load_dataset("folder", path, seed=0)                    # root/male/*, root/female/*

Readers register under a kind name with `register`; `dataset_kinds()` lists them.
"""
from __future__ import annotations

from typing import Callable

from features.dataset import Dataset, DatasetError
from features.datasets.celeba import load_celeba
from features.datasets.folder import load_folder
from features.datasets.utkface import load_utkface

Loader = Callable[..., Dataset]
_LOADERS: dict[str, Loader] = {"celeba": load_celeba, "utkface": load_utkface, "folder": load_folder}

# Kinds whose image ids are the release's own file names: the same id is the same photo in every copy of
# the dataset (CelebA's aligned and in-the-wild releases share them). A folder's ids are its own paths.
RELEASE_IDS = frozenset({"celeba", "utkface"})


def register(kind: str) -> Callable[[Loader], Loader]:
    """Decorator adding a loader `f(root, *, seed: int) -> Dataset` under `kind`; it checks its root."""
    def add(loader: Loader) -> Loader:
        if kind in _LOADERS:
            raise ValueError(f"dataset kind {kind!r} is already registered")
        _LOADERS[kind] = loader
        return loader
    return add


def dataset_kinds() -> list[str]:
    """The registered dataset kinds, sorted."""
    return sorted(_LOADERS)


def load_dataset(kind: str, root, *, seed: int = 0) -> Dataset:
    """Read the dataset of `kind` at `root`; `seed` drives generated splits (CelebA's is official).
    `DatasetError` (a ValueError) for an unknown kind and for a missing or malformed dataset."""
    if kind not in _LOADERS:
        raise DatasetError(f"unknown dataset kind {kind!r}; valid: {', '.join(dataset_kinds())}")
    return _LOADERS[kind](root, seed=seed)
