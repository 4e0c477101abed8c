"""Every attribute and array shape the store's readers rely on, checked before use: a store edited by
hand or by an attacker (`dim: "abc"`, `metadata: [1]`, `unit_rows: 0`, an embeddings shape of 10^9 rows)
is one StoreError line naming the store and the field, never a traceback, a division by zero or a
gigantic allocation. Shapes come from the arrays' zarr.json (no chunk is read here)."""
from __future__ import annotations

import numpy as np
import zarr

from features.store.schema import StoreError, entry_arrays


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _refuse(path: str, field: str, value, wanted: str) -> StoreError:
    shown = repr(value)
    shown = shown if len(shown) <= 80 else f"{shown[:80]}..."
    return StoreError(f"{path}: {field} is {shown}, not {wanted}; the store was edited or is damaged: "
                      "extract into a new store")


def check_dataset(path: str, info) -> None:
    """The root's `dataset` attribute: a dict of text fields, n_rows a positive integer, alignment a dict."""
    if not isinstance(info, dict):
        raise _refuse(path, "attribute dataset", info, "a dict")
    for key in ("name", "root", "fingerprint"):
        if not isinstance(info.get(key), str):
            raise _refuse(path, f"attribute dataset.{key}", info.get(key), "text")
    if not _is_int(info.get("n_rows")) or info["n_rows"] < 1:
        raise _refuse(path, "attribute dataset.n_rows", info.get("n_rows"), "a positive integer")
    if not isinstance(info.get("alignment", {}), dict):
        raise _refuse(path, "attribute dataset.alignment", info["alignment"], "a dict")
    for key, wanted in (("images", str), ("split_seed", int)):
        if info.get(key) is not None and not isinstance(info[key], wanted):
            raise _refuse(path, f"attribute dataset.{key}", info[key], f"{wanted.__name__} or null")


def check_table_array(path: str, key: str, array: zarr.Array, n_rows: int) -> None:
    """A table array holds one row per image: (n_rows,) integers, the ids (n_rows, width) uint8."""
    ids = key.endswith("ids_utf8")
    if array.shape[:1] != (n_rows,) or array.ndim != (2 if ids else 1):
        raise _refuse(path, f"{key} shape", list(array.shape), f"[{n_rows}{', width' if ids else ''}] "
                      f"(dataset.n_rows)")
    if not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise _refuse(path, f"{key} dtype", str(array.dtype), "an integer type")
    if ids and (array.attrs.get("encoding") != "utf-8" or array.attrs.get("width") != array.shape[1]):
        raise _refuse(path, f"{key} attributes", array.attrs.asdict(), f"encoding 'utf-8' and width "
                      f"{array.shape[1]} (the array's second dimension)")


def check_entry(path: str, name: str, group: zarr.Group, n_rows: int) -> None:
    """One entry's attributes, and its arrays' shapes, dtypes and chunks against them and `n_rows`."""
    where = f"backbones/{name}"
    attrs = group.attrs.asdict()
    if attrs.get("name") != name:
        raise _refuse(path, f"{where} attribute name", attrs.get("name"), repr(name))
    for key in ("dim", "unit_rows"):
        if not _is_int(attrs.get(key)) or attrs[key] < 1:
            raise _refuse(path, f"{where} attribute {key}", attrs.get(key), "a positive integer")
    if attrs.get("dtype") not in ("float32", "float16"):
        raise _refuse(path, f"{where} attribute dtype", attrs.get("dtype"), "'float32' or 'float16'")
    metadata = attrs.get("metadata")
    if not isinstance(metadata, dict):
        raise _refuse(path, f"{where} attribute metadata", metadata, "a dict")
    for key in ("weights", "precision", "tta"):  # the metadata keys readers compare as text
        if (key in metadata or key == "weights") and not isinstance(metadata.get(key), str):
            raise _refuse(path, f"{where} attribute metadata.{key}", metadata.get(key), "text")
    if metadata.get("preprocessing") is not None and not isinstance(metadata["preprocessing"], dict):
        raise _refuse(path, f"{where} attribute metadata.preprocessing", metadata["preprocessing"], "a dict")
    for key, (shape, chunks, dtype) in entry_arrays(n_rows, attrs["dim"], attrs["unit_rows"], attrs["dtype"]).items():
        _check_array(path, group, where, key, shape, chunks, dtype)


def node(group: zarr.Group, path: str, key: str, *, where: str = ""):
    """The node `key` of `group` (at `where` in the store); unreadable metadata is a StoreError naming it."""
    shown = f"{where}/{key}" if where else key
    try:
        return group[key]
    except KeyError:
        raise StoreError(f"{path} has no {shown}: the store is damaged; extract into a new store") from None
    except (ValueError, TypeError) as error:
        raise StoreError(f"{path}/{shown}/zarr.json is not readable Zarr metadata "
                         f"({type(error).__name__}: {error}); the store is damaged") from None


def _check_array(path: str, group: zarr.Group, where: str, key: str, shape: tuple, chunks: tuple, dtype: str) -> None:
    array, field = node(group, path, key, where=where), f"{where}/{key}"
    if not isinstance(array, zarr.Array):
        raise StoreError(f"{path}: {field} is a group, not an array; the store is damaged")
    if array.shape != shape:
        raise _refuse(path, f"{field} shape", list(array.shape), f"{list(shape)} (from dataset.n_rows and "
                      "the entry's dim and unit_rows)")
    if array.chunks != chunks:
        raise _refuse(path, f"{field} chunks", list(array.chunks), f"{list(chunks)} (from unit_rows)")
    if array.dtype != np.dtype(dtype):
        raise _refuse(path, f"{field} dtype", str(array.dtype), dtype)
