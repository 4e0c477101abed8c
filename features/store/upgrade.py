"""Upgrading an older store in place (`python -m extract upgrade`): version 2 -> 3 rewrites the ids
alone, from zarr-python's variable-length strings to the UTF-8 bytes every Zarr reader reads."""
from __future__ import annotations

import numpy as np
import zarr

from features.store import crash
from features.store.creation import now, write_ids, writer_lock
from features.store.paths import delete_prefix, open_group, refuse_foreign
from features.store.schema import IDS, OLD_IDS, SCHEMA_VERSION, STORE_KIND, StoreError, decode_ids


def upgrade(path) -> str:
    """Bring a version 2 store to version 3 in place, rewriting its ids alone; what was done, in words.

    Crash-safe at every instant: the new ids are written beside the old ones (version 2 readers do not
    look there) and read back; the root's `schema_version`, rewritten whole, is the commit; the old ids
    go last (version 3 readers do not look there). A rerun finishes whatever a kill left, and the
    embeddings, status and done markers are never touched."""
    refuse_foreign(path)
    open_group(path, "r")  # no store there: say so before making its lock folder
    with writer_lock(path, "create"):
        group = open_group(path, "r+")
        version = _upgradable_version(path, group.attrs)
        if version == SCHEMA_VERSION:
            if not delete_prefix(group, OLD_IDS):
                return f"{path} is at schema_version {SCHEMA_VERSION} already; nothing to do"
            return f"{path}: finished an interrupted upgrade (removed the old {OLD_IDS})"
        old = _old_ids(path, group)
        delete_prefix(group, IDS)  # a previous upgrade killed before its commit
        crash.checkpoint("upgrade:cleared")
        write_ids(group, old, step="upgrade:ids-declared")
        crash.checkpoint("upgrade:ids-written")
        if not np.array_equal(decode_ids(group[IDS][...], group[IDS].attrs.asdict()), old):
            raise StoreError(f"{path}: the rewritten ids do not read back equal; the store is unchanged")
        group.attrs.update({"schema_version": SCHEMA_VERSION, "upgraded": {"from": version, "at": now()}})
        crash.checkpoint("upgrade:declared")
        delete_prefix(group, OLD_IDS)
        crash.checkpoint("upgrade:cleaned")
    return f"{path}: upgraded from schema_version {version} to {SCHEMA_VERSION} ({len(old)} ids rewritten " \
           f"as {IDS}; embeddings untouched)"


def _upgradable_version(path, attrs) -> int:
    version = attrs.get("schema_version")
    if attrs.get("kind") != STORE_KIND:
        raise StoreError(f"{path} is a Zarr group but not a feature store (no kind={STORE_KIND!r})")
    if version not in (SCHEMA_VERSION - 1, SCHEMA_VERSION):
        raise StoreError(f"{path} has schema_version {version!r}; only version {SCHEMA_VERSION - 1} "
                         "upgrades in place: re-extract into a new store")
    if "dataset" not in attrs:
        raise StoreError(f"{path}: its creation was interrupted (no dataset table declared); rerun the "
                         "extract command into a new store")
    return version


def _old_ids(path, group: zarr.Group) -> np.ndarray:
    """Version 2's ids (variable-length strings), checked against the table's row count."""
    try:
        old = group[OLD_IDS][...].astype(object).astype(str)
    except Exception as error:  # noqa: BLE001 - missing or damaged: nothing to upgrade from
        raise StoreError(f"{path}: {OLD_IDS} cannot be read ({type(error).__name__}: {error}); the store "
                         "cannot be upgraded: re-extract into a new store") from None
    if old.shape != (int(group.attrs["dataset"]["n_rows"]),):
        raise StoreError(f"{path}: {OLD_IDS} has shape {old.shape}, not the table's rows; re-extract")
    return old
