"""Finding damage: per-unit checks of one entry (a backbone or the faces pass) on read and in
`python -m extract verify`, each a one-line StoreError naming the backbone, unit and chunk."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr

from features.store.schema import FINAL, Status, StoreError

FINITE_BLOCK_ROWS = 4096  # rows checked for NaN at a time: one bool per value of a whole split is 0.33 GB


def chunk_key(array: str, unit: int) -> str:
    """The key of unit `unit`'s chunk of `array` inside its entry (embeddings chunks are 2-d)."""
    return f"{array}/c/{unit}" + ("/0" if array == "embeddings" else "")


@dataclass(frozen=True)
class Entry:
    """One finished entry under /backbones of the store at `path`, read with its damage named."""

    path: str
    name: str
    group: zarr.Group

    @property
    def unit_rows(self) -> int:
        return int(self.group.attrs["unit_rows"])

    @property
    def n_units(self) -> int:
        return self.group["done"].shape[0]

    def damage(self, unit: int, array: str, what: str, *, more: int = 0) -> StoreError:
        """The one-line error for a damaged unit: backbone, unit, chunk, and what to do."""
        others = f" (and {more} more damaged units)" if more else ""
        return StoreError(f"{self.path}: backbone {self.name!r} unit {unit}, chunk backbones/{self.name}/"
                          f"{chunk_key(array, unit)}: {what}{others}; run `python -m extract verify --store "
                          f"{self.path} --repair`, then the same extract command to re-embed the damaged units")

    def undecodable(self, array: str, units) -> StoreError | None:
        """The damage of the first of `units` whose chunk of `array` does not decode; None when all do."""
        rows = 1 if array == "done" else self.unit_rows  # `validation.check_entry` checked the chunks
        for unit in units:
            try:
                self.group[array][unit * rows:(unit + 1) * rows]
            except Exception as error:  # noqa: BLE001 - any decode failure is damage
                return self.damage(int(unit), array, f"does not decode ({type(error).__name__}: {error})")
        return None

    def whole(self, array: str) -> np.ndarray:
        """A whole per-unit array (status, done, the faces' rows); a chunk that does not decode is named."""
        try:
            return self.group[array][:]
        except Exception:  # noqa: BLE001 - locate the chunk
            damaged = self.undecodable(array, range(self.n_units))
            if damaged is None:
                raise
            raise damaged from None

    def done(self) -> np.ndarray:
        return self.whole("done")

    def status(self) -> np.ndarray:
        """The status array, after checking that no done unit has a pending row (a lost status chunk)."""
        status = self.whole("status")
        done = self.done()
        pending_units = np.unique(np.flatnonzero(status == Status.PENDING) // self.unit_rows)
        damaged = [int(u) for u in pending_units if done[u]]
        if damaged:
            raise self.damage(damaged[0], "status", "a unit marked done has pending rows "
                              "(its status chunk is missing or was overwritten)", more=len(damaged) - 1)
        return status

    def check_finite(self, index: np.ndarray, x: np.ndarray) -> None:
        """Rows `index` read into `x` that are marked OK must be finite (a lost chunk reads as NaN)."""
        bad = np.zeros(len(x), dtype=bool)
        for first in range(0, len(x), FINITE_BLOCK_ROWS):
            rows = slice(first, first + FINITE_BLOCK_ROWS)
            bad[rows] = ~np.isfinite(x[rows]).all(axis=1)
        if bad.any():
            units = np.unique(index[bad] // self.unit_rows)
            raise self.damage(int(units[0]), "embeddings", f"{int(bad.sum())} rows marked OK are not "
                              "finite (the chunk is missing or was overwritten)", more=len(units) - 1)

    def damaged_units(self) -> dict[int, str]:
        """Every damaged unit -> what is wrong (`unit_problem`), reading the entry unit by unit."""
        return {unit: problem for unit in range(self.n_units)
                if (problem := unit_problem(self.group, unit, self.unit_rows)) is not None}

    def unmark(self, units) -> None:
        """Mark `units` not done, so that the extract command embeds them again (and only them)."""
        for unit in units:
            self.group["done"][int(unit)] = False


def unit_problem(group: zarr.Group, unit: int, unit_rows: int) -> str | None:
    """What is wrong with one unit: a done marker or chunk that does not decode (checksum, size), pending
    or unknown status codes in a done unit, rows marked OK that are not finite, invalid rows that are not
    NaN; None when nothing is, or the unit is not done (it is to be written anyway)."""
    rows = slice(unit * unit_rows, (unit + 1) * unit_rows)
    try:
        done = bool(group["done"][unit])
    except Exception as error:  # noqa: BLE001
        return f"{chunk_key('done', unit)}: does not decode ({type(error).__name__})"
    if not done:
        return None
    read = {}
    for array in ("status", "embeddings"):
        try:
            read[array] = group[array][rows]
        except Exception as error:  # noqa: BLE001
            return f"{chunk_key(array, unit)}: does not decode ({type(error).__name__}: {error})"
    status, embeddings = read["status"], read["embeddings"]
    known = np.isin(status, FINAL)
    if not known.all():
        return f"{chunk_key('status', unit)}: {int((~known).sum())} rows pending or of unknown status in a done unit"
    ok = status == Status.OK
    not_finite = ~np.isfinite(embeddings[ok]).all(axis=1)
    if not_finite.any():
        return f"{chunk_key('embeddings', unit)}: {int(not_finite.sum())} rows marked OK are not finite"
    if not np.isnan(embeddings[~ok]).all():
        return f"{chunk_key('embeddings', unit)}: invalid rows are not NaN"
    return None
