"""Fast reading of whitespace- or comma-separated label tables (CelebA's list files and CSVs).

The full CelebA files have 202,599 rows (8 million fields for the attribute file), so rows are not
parsed one by one in Python: the field boundaries of the whole body are found with numpy over the
raw bytes, every line's field count is checked (to name malformed lines), and columns are cut out
of the bytes as fixed-width numpy byte strings.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from features.dataset import DatasetError, describe_examples
from features.datasets.files import read_label_file


class Table:
    """The body of a label file: `rows` lines of `width` fields, cut out of the bytes on demand."""

    def __init__(self, body: bytes, starts: np.ndarray, ends: np.ndarray, width: int):
        # padded so that reading past the last field's end stays inside the buffer
        self._padded = np.frombuffer(body + bytes(int((ends - starts).max(initial=0))), dtype=np.uint8)
        self._starts = starts.reshape(-1, width)
        self._ends = ends.reshape(-1, width)
        self.rows, self.width = self._starts.shape

    def columns(self, columns) -> np.ndarray:
        """Fields of the given column index (or slice) as a numpy bytes array, (rows,) or (rows, k)."""
        starts, lengths = self._starts[:, columns], self._ends[:, columns] - self._starts[:, columns]
        size = int(lengths.max(initial=1))
        cut = np.zeros(starts.shape + (size,), dtype=np.uint8)
        for offset in range(size):  # one gather per byte position: fields are short
            cut[..., offset] = np.where(lengths > offset, self._padded[starts + offset], 0)
        return cut.view(f"S{size}")[..., 0]


def read_table(path: Path, *, header_lines: int, width: int, sep: str | None = None) -> Table:
    """The body of a label file, after its `header_lines` (its reader parses those itself).

    sep: None for whitespace-separated files, "," for CSV (fields must not be empty or hold spaces).
    Blank lines are skipped; a line with another number of fields raises `DatasetError`.
    """
    data = read_label_file(path, lambda handle: handle.read())
    body = _skip_header(data, header_lines, path)
    raw = np.frombuffer(body, dtype=np.uint8)
    separator = raw <= ord(" ")  # space, tab, CR, LF (and other control bytes)
    if sep is not None:
        separator |= raw == ord(sep)
    starts = np.flatnonzero(~separator & np.r_[True, separator[:-1]])
    ends = np.flatnonzero(~separator & np.r_[separator[1:], True]) + 1
    _check_field_counts(body, raw, starts, width, path, first_line=header_lines + 1)
    return Table(body, starts, ends, width)


def _skip_header(data: bytes, header_lines: int, path: Path) -> bytes:
    offset = 0
    for _ in range(header_lines):
        if offset >= len(data):
            raise DatasetError(f"{path}: expected {header_lines} header line(s), the file ends first")
        end = data.find(b"\n", offset)
        offset = (len(data) if end < 0 else end) + 1
    return data[offset:]


def _check_field_counts(body: bytes, raw: np.ndarray, starts: np.ndarray, width: int, path: Path,
                        *, first_line: int) -> None:
    line_ends = np.r_[np.flatnonzero(raw == ord("\n")), len(raw)]
    counts = np.diff(np.searchsorted(starts, line_ends), prepend=0)
    bad = np.flatnonzero((counts != width) & (counts != 0))
    if bad.size:
        lines = body.split(b"\n")
        shown = [f"line {first_line + i}: {_shorten(lines[i])!r}" for i in bad[:3]]
        raise DatasetError(f"{path}: {bad.size} malformed line(s), each should have {width} fields "
                           f"({'; '.join(shown)})")


def _shorten(line: bytes, limit: int = 80) -> str:
    text = line.decode(errors="replace").strip()
    return text if len(text) <= limit else text[:limit] + "..."


def check_unique(ids: np.ndarray, path: Path) -> None:
    """Raise naming the duplicated ids of a label file."""
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size != ids.size:
        raise DatasetError(f"{path}: duplicate ids: {describe_examples(unique[counts > 1])}")


def decode_codes(fields: np.ndarray, codes: dict[bytes, int], *, what: str, ids: np.ndarray,
                 path: Path, dtype=np.int8) -> np.ndarray:
    """Map each bytes field through `codes`; any other value raises naming the rows and values."""
    out = np.zeros(fields.shape, dtype=dtype)
    known = np.zeros(fields.shape, dtype=bool)
    for key, value in codes.items():  # a handful of codes: one vectorised pass each
        match = fields == key
        out[match] = value
        known |= match
    if not known.all():
        rows = np.nonzero(~known)[0]
        valid = ", ".join(key.decode() for key in codes)
        raise DatasetError(f"{path}: {what} must be one of {valid}; bad values in "
                           f"{_offenders(ids[rows], fields[~known])}")
    return out


def decode_ints(fields: np.ndarray, *, what: str, ids: np.ndarray, path: Path, dtype) -> np.ndarray:
    """Parse a column of non-negative decimal integers; anything else raises naming the rows."""
    bad = ~np.char.isdigit(fields) | (np.char.str_len(fields) > 9)
    if bad.any():
        raise DatasetError(f"{path}: {what} must be a non-negative integer below 10**9; bad values in "
                           f"{_offenders(ids[bad], fields[bad])}")
    return fields.astype(np.int64).astype(dtype)


def _offenders(ids: np.ndarray, values: np.ndarray) -> str:
    """'N (first: id ('value'), ...)' for the rows holding bad values."""
    return describe_examples(f"{i} ({v.decode(errors='replace')!r})" for i, v in zip(ids, values))
