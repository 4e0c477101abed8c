"""Where a store is and what is there: local paths and fsspec URLs, opening the root group, telling a store
of ours, an interrupted creation of ours, and a foreign folder or file apart."""
from __future__ import annotations

import os
from pathlib import Path

import zarr
from zarr.core.sync import sync

from features.store.schema import SCHEMA_VERSION, STORE_KIND, StoreError


def location(path) -> str:
    """A local path, or an fsspec URL (s3://, gs://, memory://, ...) that zarr opens through fsspec;
    file:// URLs become plain paths: fsspec's local filesystem would not create the store's folders."""
    return str(path).removeprefix("file://")


def is_local(path) -> bool:
    return "://" not in location(path)


def open_group(path, mode: str, *, missing_ok: bool = False) -> zarr.Group | None:
    """The root group; None when there is none and `missing_ok`, else a StoreError saying so."""
    try:
        return zarr.open_group(location(path), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as error:
        if missing_ok:
            return None
        raise StoreError(f"no feature store at {path} ({type(error).__name__})") from None
    except (ValueError, TypeError, KeyError) as error:  # zarr.json that is not JSON or not Zarr metadata
        raise StoreError(f"{path}/zarr.json is not readable Zarr metadata ({type(error).__name__}: "
                         f"{error}); the store is damaged: move it away and extract into a new store") from None


def exists(path) -> bool:
    """Whether a Zarr root is there; one whose metadata does not read is a StoreError."""
    return open_group(path, "r", missing_ok=True) is not None


def refuse_foreign(path) -> None:
    """A StoreError for a local path holding no Zarr root: a file, or a folder with more in it than the
    leftovers of an interrupted creation (`_only_leftovers`), which `open_or_create` builds again."""
    if not is_local(path):
        return
    folder = Path(location(path))
    if folder.is_file():
        raise StoreError(f"--store {path} is an existing file, not a feature store; choose a new path")
    if _rootless(folder) and not _only_leftovers(folder):
        raise StoreError(f"--store {path} is an existing folder that is not a Zarr store (no zarr.json); "
                         "choose a new path (nothing in it was touched)")


def _only_leftovers(folder: Path) -> bool:
    """Whether a folder without a root zarr.json holds only what a creation of ours killed before that file
    existed leaves (the schema's "Creation is crash-safe"): zarr's `*.partial` files, and `table/`,
    `backbones/` holding only zarr.json files, their `*.partial` temporaries and chunks (`c/...`)."""
    return all((entry.is_file() and entry.name.startswith("zarr.") and entry.name.endswith(".partial"))
               or (entry.is_dir() and entry.name in ("table", "backbones") and _only_zarr_files(entry))
               for entry in folder.iterdir())


def _only_zarr_files(folder: Path) -> bool:
    return all(name == "zarr.json" or name.endswith(".partial") or "c" in Path(parent).relative_to(folder).parts
               for parent, _, files in os.walk(folder) for name in files)


def interrupted_creation(path) -> bool:
    """A local store path left by a creation killed before its root zarr.json existed."""
    folder = Path(location(path))
    return is_local(path) and _rootless(folder) and _only_leftovers(folder)


def _rootless(folder: Path) -> bool:
    """A folder holding something but no root zarr.json."""
    return folder.is_dir() and not (folder / "zarr.json").exists() and any(folder.iterdir())


def half_created(path) -> bool:
    """A root marked as a feature store whose `dataset` (written last) never came: ours, interrupted."""
    attrs = open_group(path, "r").attrs
    return attrs.get("kind") == STORE_KIND and attrs.get("schema_version") == SCHEMA_VERSION \
        and "dataset" not in attrs


async def _lists_anything(prefix) -> bool:
    """Whether the store holds any key under the StorePath `prefix`."""
    async for _ in prefix.store.list_prefix(prefix.path + "/"):
        return True
    return False


def delete_prefix(group: zarr.Group, key: str) -> bool:
    """Delete every key under `key` of `group` (local or fsspec), whatever is there; whether there was any."""
    prefix = group.store_path / key
    if not sync(_lists_anything(prefix)):
        return False
    sync(prefix.delete_dir())
    return True
