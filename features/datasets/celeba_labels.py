"""Parsers for CelebA's label files, in the official text format and the common Kaggle CSV format.

Official text files: `list_eval_partition.txt` (`000001.jpg 0`), `identity_CelebA.txt`
(`000001.jpg 2880`), `list_attr_celeba.txt` (line 1: row count, line 2: attribute names, then
`000001.jpg -1  1 ...` rows of +1/-1). CRLF or LF. The Kaggle CSVs carry a header line instead
(`image_id,partition`, `image_id,5_o_Clock_Shadow,...`). Each parser validates its own file (field
counts, value sets, duplicate ids) and returns ids as a str array in file order.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from features.dataset import DatasetError
from features.datasets.files import read_label_file
from features.datasets.table import check_unique, decode_codes, decode_ints, read_table

PLUS_MINUS_ONE = {b"1": 1, b"-1": 0, b"+1": 1}
SPLIT_VALUES = {b"0": 0, b"1": 1, b"2": 2}


def read_partition_file(path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, split) from `list_eval_partition.txt` or `.csv`; split is int8 0 train/1 val/2 test."""
    path = Path(path)
    table = read_table(path, **_format(path), width=2)
    ids = _ids(table, path)
    return ids, decode_codes(table.columns(1), SPLIT_VALUES, what="split codes", ids=ids, path=path)


def read_identity_file(path) -> tuple[np.ndarray, np.ndarray]:
    """(ids, identity) from `identity_CelebA.txt` or `.csv`; identity is int32."""
    path = Path(path)
    table = read_table(path, **_format(path), width=2)
    ids = _ids(table, path)
    return ids, decode_ints(table.columns(1), what="identities", ids=ids, path=path, dtype=np.int32)


def read_attribute_file(path, *, check_count: bool = True) -> tuple[np.ndarray, list[str], np.ndarray]:
    """(ids, attribute names, values) from `list_attr_celeba.txt` or `.csv`; values int8 1/0 for +1/-1.

    check_count: compare the text file's first line with its number of rows (False for a file cut
    short on purpose, whose first line still gives the full count).
    """
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
    check_unique(ids, path)
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

