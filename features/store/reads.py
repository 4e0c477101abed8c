"""Reading entries with their damage named, and the valid rows of a split.

`Entry`: one entry (a backbone or the faces pass) with the per-unit checks run on read and by `python -m
extract verify`, each a one-line StoreError naming the backbone, unit and chunk. `read_split`: the valid
rows, backbones concatenated, decoded a block of whole chunks at a time into the result so memory stays
bounded."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import zarr
from zarr.core.buffer.cpu import NDBuffer

from features.store.schema import FINAL, SplitFeatures, Status, StoreError

FINITE_BLOCK_ROWS = 4096  # rows checked for NaN at a time: one bool per value of a whole split is 0.33 GB
READ_BLOCK_BYTES = 64 << 20  # rows read per call: several chunks decode concurrently, memory stays bounded


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
        """Every damaged unit -> what is wrong, reading the whole entry unit by unit (`extract verify`).

        Damaged: a chunk that does not decode (checksum, size), a done unit with pending rows or status
        codes that do not exist, rows marked OK that are not finite, invalid rows that are not NaN, a
        done marker that does not decode.
        """
        return {unit: problem for unit in range(self.n_units)
                if (problem := unit_problem(self.group, unit, self.unit_rows)) is not None}

    def unmark(self, units) -> None:
        """Mark `units` not done, so that the extract command embeds them again (and only them)."""
        for unit in units:
            self.group["done"][int(unit)] = False


def unit_problem(group: zarr.Group, unit: int, unit_rows: int) -> str | None:
    """What is wrong with one unit (None: nothing, or not done yet and so to be written anyway)."""
    rows = slice(unit * unit_rows, (unit + 1) * unit_rows)
    try:
        done = bool(group["done"][unit])
    except Exception as error:  # noqa: BLE001
        return f"done/c/{unit}: does not decode ({type(error).__name__})"
    if not done:
        return None
    for array in ("status", "embeddings"):
        try:
            values = group[array][rows]
        except Exception as error:  # noqa: BLE001
            return f"{chunk_key(array, unit)}: does not decode ({type(error).__name__}: {error})"
        if array == "status":
            status = values
            continue
        known = np.isin(status, FINAL)
        if not known.all():
            return f"status/c/{unit}: {int((~known).sum())} rows pending or of unknown status in a done unit"
        ok = status == Status.OK
        if not np.isfinite(values[ok]).all():
            return f"embeddings/c/{unit}/0: {int((~np.isfinite(values[ok]).all(axis=1)).sum())} rows " \
                   "marked OK are not finite"
        if not np.isnan(values[~ok]).all():
            return f"embeddings/c/{unit}/0: invalid rows are not NaN"
    return None


def read_split(entries: list[Entry], in_split: np.ndarray, gender: np.ndarray, *,
               out: np.ndarray | None = None) -> SplitFeatures:
    """The rows of `in_split` valid in every entry, entries concatenated column-wise as float32 (into
    ``out`` when given: see `destination`)."""
    statuses = [entry.status() for entry in entries]
    valid = in_split & np.logical_and.reduce([status == Status.OK for status in statuses])
    index = np.flatnonzero(valid)
    dims = [int(entry.group.attrs["dim"]) for entry in entries]
    x = destination(out, (len(index), sum(dims)))
    offsets = np.cumsum([0] + dims)
    for entry, start, dim in zip(entries, offsets, dims):
        columns = slice(int(start), int(start + dim))
        try:
            _read_rows_into(entry.group["embeddings"], index, x, column=int(start))
        except Exception as error:  # noqa: BLE001 - locate the chunk that does not decode
            raise entry.undecodable("embeddings", np.unique(index // entry.unit_rows)) or error from None
        entry.check_finite(index, x[:, columns])
    return SplitFeatures(x=x, gender=gender[index], index=index, n_invalid=_count_invalid(statuses, in_split))


def _read_rows_into(array, index: np.ndarray, out: np.ndarray, *, column: int) -> None:
    """Copy `array[index]` into `out[:, column:column + D]`, a block of whole chunks at a time.

    Zarr decodes straight into the destination (`out=`): into `out` itself when a block's rows are
    contiguous and fill its full width, else into one reused block buffer that is then gathered.
    """
    if len(index) == 0:
        return
    dim = array.shape[1]
    chunk_rows = array.chunks[0]
    block_rows = max(chunk_rows, READ_BLOCK_BYTES // (dim * array.dtype.itemsize) // chunk_rows * chunk_rows)
    direct = column == 0 and out.shape[1] == dim and array.dtype == out.dtype
    buffer = None
    bounds = np.flatnonzero(np.diff(index // block_rows)) + 1
    for positions in np.split(np.arange(len(index)), bounds):
        rows = index[positions]
        first, last = int(rows[0]), int(rows[-1]) + 1
        target = slice(positions[0], positions[-1] + 1)
        if direct and len(rows) == last - first:
            _read_into(array, first, last, out[target])
            continue
        if buffer is None:
            buffer = np.empty((block_rows, dim), dtype=array.dtype)
        block = buffer[:last - first]
        _read_into(array, first, last, block)
        out[target, column:column + dim] = block if len(rows) == len(block) else block[rows - first]


def _read_into(array, first: int, last: int, destination: np.ndarray) -> None:
    array.get_basic_selection((slice(first, last),), out=NDBuffer.from_numpy_array(destination))


def _count_invalid(statuses: list[np.ndarray], in_split: np.ndarray) -> dict[str, int]:
    """Rows of the split dropped, by the first non-OK reason across backbones."""
    reason = np.full(len(in_split), Status.OK, dtype=np.uint8)
    for status in statuses:
        reason = np.where(reason == Status.OK, status, reason)
    counts = np.bincount(reason[in_split], minlength=len(Status))
    return {Status(code).name.lower(): int(count) for code, count in enumerate(counts)
            if code != Status.OK and count}


def destination(out: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A new float32 array of ``shape``, or ``out`` once checked to be one."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"read into: expected a C-contiguous float32 {shape} array, got {out.dtype} {out.shape}")
    return out
