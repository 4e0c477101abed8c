"""Writing a store crash-safely (the schema's "Creation is crash-safe"), a kill point between the steps:
the root and its table, each entry, a unit's rows before its done marker (`BackboneWriter`); and one
writer at a time (`writer_lock`)."""
from __future__ import annotations

import contextlib
import logging
import math
from datetime import datetime, timezone
from pathlib import Path

import filelock
import numpy as np
import zarr

from features.dataset import Dataset
from features.provenance import library_versions
from features.store import crash
from features.store.paths import is_local, location
from features.store.schema import (FINAL, IDS, SCHEMA_VERSION, STORE_KIND, Status, StoreError, checksum, encode_ids,
                                   entry_arrays)

log = logging.getLogger(__name__)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def build(path, dataset: Dataset, *, mode: str) -> zarr.Group:
    """The root (marked as ours), the table, then the `dataset` attribute that declares it complete."""
    n = len(dataset)
    if n == 0:
        raise StoreError(f"dataset {dataset.name!r} has no rows; nothing to store")
    group = zarr.open_group(location(path), mode=mode, attributes={
        "kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "created": now(),
        "library_versions": library_versions("numpy", "zarr")})
    crash.checkpoint("store:root")
    table = group.create_group("table")
    write_ids(group, dataset.ids)
    crash.checkpoint("store:table/ids")
    for name in ("gender", "split"):
        table.create_array(name, data=np.asarray(getattr(dataset, name), dtype=np.int8), chunks=(n,),
                           compressors=checksum())
        crash.checkpoint(f"store:table/{name}")
    attributes = table.create_group("attributes")
    for name, values in dataset.attributes.items():
        attributes.create_array(name, data=np.asarray(values), chunks=(n,), compressors=checksum())
        crash.checkpoint(f"store:table/attributes/{name}")
    group.create_group("backbones")
    crash.checkpoint("store:backbones")
    group.attrs.update({"dataset": {
        "name": dataset.name, "root": str(dataset.root), "fingerprint": dataset.fingerprint(),
        "n_rows": n, "split_seed": dataset.split_seed, "images": dataset.images,
        "alignment": dataset.alignment or {"kind": "wild"}}})
    crash.checkpoint("store:declared")
    return group


def write_ids(group: zarr.Group, ids, *, step: str = "") -> zarr.Array:
    """The ids array at `IDS` under the root `group`, written whole (one chunk); `step` names a
    checkpoint between its metadata and its chunk (the upgrade's kill tests stop there)."""
    encoded = encode_ids(ids)
    array = group.create_array(IDS, shape=encoded.shape, chunks=encoded.shape, dtype=np.uint8,
                               compressors=checksum(), fill_value=0,
                               attributes={"encoding": "utf-8", "width": encoded.shape[1]})
    if step:
        crash.checkpoint(step)
    array[...] = encoded
    return array


def create_backbone(parent: zarr.Group, name: str, *, n_rows: int, dim: int, dtype: str,
                    unit_rows: int, metadata: dict) -> None:
    """The group, its three arrays, then the attributes that declare it (a kill before them leaves a
    group `backbones()` does not list and `add_backbone` builds again)."""
    if unit_rows < 1:
        raise ValueError(f"unit_rows must be positive, not {unit_rows}")
    group = parent.create_group(name)
    crash.checkpoint("backbone:group")
    fill = {"embeddings": np.nan, "status": int(Status.PENDING), "done": False}
    for key, (shape, chunks, array_dtype) in entry_arrays(n_rows, dim, unit_rows, dtype).items():
        group.create_array(key, shape=shape, chunks=chunks, dtype=array_dtype, fill_value=fill[key],
                           compressors=checksum())
        crash.checkpoint(f"backbone:{key}")
    group.attrs.update({"name": name, "dim": int(dim), "dtype": np.dtype(dtype).name,
                        "unit_rows": int(unit_rows), "created": now(), "metadata": metadata})
    crash.checkpoint("backbone:declared")


class BackboneWriter:
    """Writes one backbone's embeddings unit by unit; a unit is marked done only after its rows."""

    def __init__(self, group: zarr.Group, *, store_path: str = ""):
        self._group = group
        self.name = group.attrs["name"]
        self.dim = int(group.attrs["dim"])
        self.rows_per_unit = int(group.attrs["unit_rows"])
        self.n_rows = group["status"].shape[0]
        self.n_units = math.ceil(self.n_rows / self.rows_per_unit)
        self._store_path = store_path

    def unit_rows(self, unit: int) -> tuple[int, int]:
        if not 0 <= unit < self.n_units:
            raise IndexError(f"unit {unit} out of range 0..{self.n_units - 1}")
        start = unit * self.rows_per_unit
        return start, min(start + self.rows_per_unit, self.n_rows)

    def pending_units(self) -> list[int]:
        """Units not marked done; a done marker whose chunk does not decode is a StoreError."""
        try:
            done = self._group["done"][:]
        except Exception as error:  # noqa: BLE001 - damage, named
            raise StoreError(f"{self._store_path}: backbone {self.name!r}: the done markers do not decode "
                             f"({type(error).__name__}: {error}); run `python -m extract verify --store "
                             f"{self._store_path} --repair`") from None
        return np.flatnonzero(~done).tolist()

    def write_unit(self, unit: int, embeddings: np.ndarray, status: np.ndarray) -> None:
        """Write the unit's rows (NaN where status is not OK), then its completion marker."""
        start, stop = self.unit_rows(unit)
        status = np.asarray(status, dtype=np.uint8)
        rows = np.array(embeddings, dtype=np.float32)  # a copy: invalid rows are overwritten with NaN below
        shape = (stop - start, self.dim)
        if rows.shape != shape or status.shape != shape[:1]:
            raise StoreError(f"backbone {self.name!r} unit {unit}: expected embeddings {shape} and status "
                             f"{shape[:1]}, got {rows.shape} and {status.shape}")
        known = np.isin(status, FINAL)
        if not known.all():
            raise StoreError(f"backbone {self.name!r} unit {unit}: status codes {sorted(set(status[~known]))} "
                             f"are not final; valid: {[Status(code).name for code in FINAL]}")
        ok = status == Status.OK
        bad = ok & ~np.isfinite(rows).all(axis=1)
        if bad.any():
            raise StoreError(f"backbone {self.name!r} unit {unit}: {int(bad.sum())} valid rows have non-finite "
                             "embeddings (try fp32 precision)")
        rows[~ok] = np.nan
        self._group["embeddings"][start:stop] = rows.astype(self._group["embeddings"].dtype)
        crash.checkpoint("unit:embeddings")
        self._group["status"][start:stop] = status
        crash.checkpoint("unit:status")
        self._group["done"][unit] = True
        crash.checkpoint("unit:done")


@contextlib.contextmanager
def writer_lock(path, name: str, *, wait: bool = False):
    """Hold the lock that lets one process at a time write `name` (a backbone, or "create" while the store
    is created or upgraded) in the local store at `path`, a file in the folder `<store>.locks/` beside it;
    a no-op on fsspec URLs (torchrun ranks write disjoint units). Not waiting, a held lock is a StoreError."""
    if not is_local(path):
        yield
        return
    folder = Path(str(Path(location(path))).rstrip("/") + ".locks")
    lock = filelock.FileLock(folder / f"{name}.lock")
    what = "the store" if name == "create" else f"backbone {name!r}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if not wait:
            raise StoreError(f"another process is writing {what} in {path} (lock {lock.lock_file}); wait "
                             "for it to finish, or pass --wait-lock to wait for it") from None
        log.info("another process is writing %s in %s; waiting for it to finish", what, path)
        lock.acquire()
    except OSError as error:  # a missing, read-only or special (/proc) location: no store can be written there
        raise StoreError(f"cannot write the store at {path}: its lock {lock.lock_file} cannot be created "
                         f"({error.strerror or error}); choose a store path in a writable folder") from None
    try:
        yield
    finally:
        lock.release()
