"""Writing one backbone's rows: a unit's embeddings and status first, its done marker last."""
from __future__ import annotations

import math

import numpy as np
import zarr

from features.store import crash
from features.store.schema import FINAL, Status, StoreError


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
        rows = _checked_unit_rows(self.name, unit, embeddings, status, (stop - start, self.dim))
        self._group["embeddings"][start:stop] = rows.astype(self._group["embeddings"].dtype)
        crash.checkpoint("unit:embeddings")
        self._group["status"][start:stop] = status
        crash.checkpoint("unit:status")
        self._group["done"][unit] = True
        crash.checkpoint("unit:done")


def _checked_unit_rows(name: str, unit: int, embeddings, status: np.ndarray, shape: tuple) -> np.ndarray:
    rows = np.array(embeddings, dtype=np.float32)  # a copy: invalid rows are overwritten with NaN below
    if rows.shape != shape or status.shape != shape[:1]:
        raise StoreError(f"backbone {name!r} unit {unit}: expected embeddings {shape} and status "
                         f"{shape[:1]}, got {rows.shape} and {status.shape}")
    known = np.isin(status, FINAL)
    if not known.all():
        raise StoreError(f"backbone {name!r} unit {unit}: status codes {sorted(set(status[~known]))} are "
                         f"not final; valid: {[Status(code).name for code in FINAL]}")
    ok = status == Status.OK
    bad = ok & ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise StoreError(f"backbone {name!r} unit {unit}: {int(bad.sum())} valid rows have non-finite "
                         "embeddings (try fp32 precision)")
    rows[~ok] = np.nan
    return rows
