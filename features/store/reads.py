"""Reading features: the valid rows of a split, backbones concatenated, decoded a block of whole chunks
at a time into the result so memory stays bounded."""
from __future__ import annotations

import numpy as np
from zarr.core.buffer.cpu import NDBuffer

from features.store.integrity import Entry
from features.store.schema import SplitFeatures, Status

READ_BLOCK_BYTES = 64 << 20  # rows read per call: several chunks decode concurrently, memory stays bounded


def read_split(entries: list[Entry], in_split: np.ndarray, gender: np.ndarray, *,
               out: np.ndarray | None = None) -> SplitFeatures:
    """The rows of `in_split` valid in every entry, entries concatenated column-wise as float32 (into ``out``)."""
    statuses = [entry.status() for entry in entries]
    valid = in_split & np.logical_and.reduce([status == Status.OK for status in statuses])
    index = np.flatnonzero(valid)
    dims = [int(entry.group.attrs["dim"]) for entry in entries]
    shape = (len(index), sum(dims))
    if out is not None and (out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous):
        raise ValueError(f"read into: expected a C-contiguous float32 {shape} array, got {out.dtype} {out.shape}")
    x = np.empty(shape, dtype=np.float32) if out is None else out
    offsets = np.cumsum([0] + dims)
    for entry, start, dim in zip(entries, offsets, dims):
        try:
            _read_rows_into(entry.group["embeddings"], index, x, column=int(start))
        except Exception as error:  # noqa: BLE001 - locate the chunk that does not decode
            raise entry.undecodable("embeddings", np.unique(index // entry.unit_rows)) or error from None
        entry.check_finite(index, x[:, int(start):int(start + dim)])
    return SplitFeatures(x=x, gender=gender[index], index=index, n_invalid=_count_invalid(statuses, in_split))


def _read_rows_into(array, index: np.ndarray, out: np.ndarray, *, column: int) -> None:
    """Copy `array[index]` into `out[:, column:column + D]`, a block of whole chunks at a time, decoded
    straight into `out` where a block's rows are contiguous and fill its width, else into one reused
    buffer that is then gathered."""
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
            array.get_basic_selection((slice(first, last),), out=NDBuffer.from_numpy_array(out[target]))
            continue
        if buffer is None:
            buffer = np.empty((block_rows, dim), dtype=array.dtype)
        block = buffer[:last - first]
        array.get_basic_selection((slice(first, last),), out=NDBuffer.from_numpy_array(block))
        out[target, column:column + dim] = block if len(rows) == len(block) else block[rows - first]


def _count_invalid(statuses: list[np.ndarray], in_split: np.ndarray) -> dict[str, int]:
    """Rows of the split dropped, by the first non-OK reason across backbones."""
    reason = np.full(len(in_split), Status.OK, dtype=np.uint8)
    for status in statuses:
        reason = np.where(reason == Status.OK, status, reason)
    counts = np.bincount(reason[in_split], minlength=len(Status))
    return {Status(code).name.lower(): int(count) for code, count in enumerate(counts)
            if code != Status.OK and count}
