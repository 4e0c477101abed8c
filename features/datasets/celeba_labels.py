"""Parsers for CelebA's label files, in the official text format and the common Kaggle CSV format.

Official text files: `list_eval_partition.txt` (`000001.jpg 0`), `identity_CelebA.txt`
(`000001.jpg 2880`), `list_attr_celeba.txt` (line 1: row count, line 2: attribute names, then
`000001.jpg -1  1 ...` rows of +1/-1). CRLF or LF. The Kaggle CSVs carry a header line instead
(`image_id,partition`, `image_id,5_o_Clock_Shadow,...`). Each parser validates its own file (field
counts, value sets, duplicate ids) and returns ids as a str array in file order.

The full files have 202,599 rows (8 million fields for the attribute file), so `read_table` parses no
row in Python: numpy finds the whole body's field boundaries and checks every line's field count (to
name malformed lines), and columns are cut out as fixed-width numpy byte strings.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from features.dataset import DatasetError, describe_examples
from features.datasets.files import read_label_file

PLUS_MINUS_ONE = {b"1": 1, b"-1": 0, b"+1": 1}
SPLIT_VALUES = {b"0": 0, b"1": 1, b"2": 2}


def read_partition_file(path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, split) from `list_eval_partition.txt` or `.csv`; split is int8 0 train/1 val/2 test."""
    path, ids, values = _id_value_file(path)
    return ids, decode_codes(values, SPLIT_VALUES, what="split codes", ids=ids, path=path)


def read_identity_file(path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, identity) from `identity_CelebA.txt` or `.csv`; identity is int32."""
    path, ids, values = _id_value_file(path)
    return ids, decode_ints(values, what="identities", ids=ids, path=path)


def _id_value_file(path) -> tuple[Path, np.ndarray, np.ndarray]:
    """A two-column file's path, its ids and its second column's bytes fields."""
    path = Path(path)
    table = read_table(path, **_format(path), width=2)
    return path, _ids(table, path), table.columns(1)


def read_attribute_file(path, *, check_count: bool = True) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(ids, attribute names, values) from `list_attr_celeba.txt` or `.csv`; values int8 1/0 for +1/-1.
    `check_count`: compare the text file's first line with its rows (False for a file cut short on purpose)."""
    path = Path(path)
    names, expected_rows = _attribute_header(path)
    layout = _format(path) if expected_rows is None else {"header_lines": 2}
    table = read_table(path, **layout, width=1 + len(names))
    if check_count and expected_rows is not None and expected_rows != table.rows:
        raise DatasetError(f"{path}: line 1 says {expected_rows} rows but the file has {table.rows}")
    ids = _ids(table, path)
    values = decode_codes(table.columns(slice(1, None)), PLUS_MINUS_ONE, what="attribute values",
                          ids=ids, path=path)
    return ids, names, values


def _format(path: Path) -> dict:
    return {"header_lines": 1, "sep": ","} if path.suffix.lower() == ".csv" else {"header_lines": 0}


def _ids(table, path: Path) -> np.ndarray:
    try:
        ids = table.columns(0).astype(str)
    except UnicodeDecodeError:
        raise DatasetError(f"{path}: image ids must be ASCII file names") from None
    unique, counts = np.unique(ids, return_counts=True)
    if unique.size != ids.size:
        raise DatasetError(f"{path}: duplicate ids: {describe_examples(unique[counts > 1])}")
    return ids


def _attribute_header(path: Path) -> tuple[list[str], int | None]:
    """Attribute names and, for the text format, the row count its first line announces."""
    if path.suffix.lower() == ".csv":
        return _distinct([name.strip() for name in _head(path, 1)[0].split(",")[1:]], path), None
    count, names = _head(path, 2)
    if not count.isdigit():
        raise DatasetError(f"{path}: line 1 must be the number of rows, found {count[:40]!r}")
    if not names.split():
        raise DatasetError(f"{path}: line 2 must list the attribute names, found an empty line")
    return _distinct(names.split(), path), int(count)


ATTRIBUTE_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")  # a store group, a file name, a plot label: nothing else


def _distinct(names: list[str], path: Path) -> list[str]:
    """``names``, refused if one repeats: columns are read by name, so the last of two 'Male' columns
    would silently decide the gender label; and refused if one is not a plain name (`ATTRIBUTE_NAME`):
    it becomes a Zarr group ("a/b" would nest, "zarr.json" and "../../x" break the store), a CSV cell
    and a matplotlib label ("$^$" is math to it)."""
    bad = [name for name in names if not ATTRIBUTE_NAME.fullmatch(name)]
    if bad:
        shown = ", ".join(repr(name[:70]) for name in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
        raise DatasetError(f"{path}: attribute name {shown} is not allowed; an attribute name is 1 to 64 "
                           "letters, digits, '_' or '-' (rename it in the header)")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DatasetError(f"{path}: the header names the attribute(s) {', '.join(map(repr, repeated))} more "
                           "than once; keep one column per attribute (remove or rename the others)")
    return names


def _head(path: Path, lines: int) -> list[str]:
    """The first `lines` lines of a file, stripped ("" past its end), without reading the rest."""
    return read_label_file(path, lambda handle: [handle.readline().decode("utf-8", errors="replace").strip()
                                                 for _ in range(lines)])


class Table:
    """The body of a label file: `rows` lines of `width` fields, cut out of the bytes on demand."""

    def __init__(self, body: bytes, starts: np.ndarray, ends: np.ndarray, width: int):
        # padded so that reading past the last field's end stays inside the buffer
        self._padded = np.frombuffer(body + bytes(int((ends - starts).max(initial=0))), dtype=np.uint8)
        self._starts = starts.reshape(-1, width)
        self._ends = ends.reshape(-1, width)
        self.rows = len(self._starts)

    def columns(self, columns) -> np.ndarray:
        """Fields of the given column index (or slice) as a numpy bytes array, (rows,) or (rows, k)."""
        starts, lengths = self._starts[:, columns], self._ends[:, columns] - self._starts[:, columns]
        size = int(lengths.max(initial=1))
        cut = np.zeros(starts.shape + (size,), dtype=np.uint8)
        for offset in range(size):  # one gather per byte position: fields are short
            cut[..., offset] = np.where(lengths > offset, self._padded[starts + offset], 0)
        return cut.view(f"S{size}")[..., 0]


def read_table(path: Path, *, header_lines: int, width: int, sep: str | None = None) -> Table:
    """The body of a label file, after its `header_lines` (its reader parses those itself). `sep`: None
    for whitespace-separated files, "," for CSV (fields must not be empty or hold spaces). Blank lines
    are skipped; a line with another number of fields raises `DatasetError`."""
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


def decode_codes(fields: np.ndarray, codes: dict[bytes, int], *, what: str, ids: np.ndarray, path: Path) -> np.ndarray:
    """int8: each bytes field mapped through `codes`; any other value raises naming the rows and values."""
    out = np.zeros(fields.shape, dtype=np.int8)
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


def decode_ints(fields: np.ndarray, *, what: str, ids: np.ndarray, path: Path) -> np.ndarray:
    """int32: a column of non-negative decimal integers parsed; anything else raises naming the rows."""
    bad = ~np.char.isdigit(fields) | (np.char.str_len(fields) > 9)
    if bad.any():
        raise DatasetError(f"{path}: {what} must be a non-negative integer below 10**9; bad values in "
                           f"{_offenders(ids[bad], fields[bad])}")
    return fields.astype(np.int64).astype(np.int32)


def _offenders(ids: np.ndarray, values: np.ndarray) -> str:
    """'N (first: id ('value'), ...)' for the rows holding bad values."""
    return describe_examples(f"{i} ({v.decode(errors='replace')!r})" for i, v in zip(ids, values))
