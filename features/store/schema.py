"""The feature store's schema: the one contract between `extract` (writes) and `classify` (reads).

One Zarr v3 group per dataset. Schema, version 3 (`schema_version` in the root attributes):

    /                         attrs: schema_version, kind="face-gender-features", created, library_versions,
                                     and last, dataset {name, root, fingerprint, n_rows, split_seed, images
                                     (release folder, e.g. img_celeba), alignment {kind: wild |
                                     celeba_aligned, size, landmarks}}
    /table/ids_utf8           (N, L) uint8    row i is image i's id (CelebA file name, UTKFace/folder
                                              relative path): its UTF-8 bytes up to the first zero byte,
                                              zero-padded to L, the longest id's length (ids hold no zero
                                              byte); attrs: encoding "utf-8", width L
    /table/gender             (N,) int8       1 male, 0 female (`features.dataset.MALE`, `FEMALE`)
    /table/split              (N,) int8       0 train, 1 val, 2 test (`features.dataset.SPLITS` in order)
    /table/attributes/<name>  (N,) int        per-image attributes and groups, for per-group evaluation,
                                              integers as stored: CelebA attributes 1 yes / 0 no,
                                              identity; UTKFace age in years, race code
    /backbones/<name>/        attrs, written last: name, metadata {weights ("random" | "sha256:<hex>"),
                                     weights_source, preprocessing, library_versions, ...}, dim, dtype,
                                     unit_rows, created
    /backbones/<name>/embeddings  (N, D) float32|float16, chunks (unit_rows, D): row i is image i's
                                  embedding; NaN in invalid rows
    /backbones/<name>/status      (N,) uint8 `Status`: 0 PENDING until written, then 1 OK or why a row is
                                  invalid: 2 UNREADABLE image, 3 NO_FACE found by the aligner,
                                  4 TOO_LARGE (over the decoder's pixel limit)
    /backbones/<name>/done        (n_units,) bool, one chunk per unit: done[u] true when unit u is written
    /backbones/_faces/        the face detection pass (same arrays; metadata role "faces", detector,
                              thresholds, alignment, and on aligned datasets template_check: fallbacks
                              to the template, detection-vs-template distances), which every face
                              backbone warps from: one row per image, 16 float32 values in the original
                              image's pixels: box x, y, width, height; five landmarks x0, y0, ..., x4, y4
                              (right eye, left eye, nose tip, right and left mouth corner); detector
                              score; source (1 detected, 2 the aligned dataset's template); NaN where
                              status is not OK (`extract.faces`)

Any Zarr v3 implementation reads it without zarr-python (TensorStore, zarrs, zarr.js, ...): every array
uses core data types only (uint8, int8, int16/int32/int64 for attributes, bool, float16/float32), the
default `bytes` codec (little endian) and a `crc32c` checksum per chunk, no compression (float embeddings
barely compress), chunk keys `c/...`; every group's attributes are JSON in its zarr.json ("attributes").

Row i of every array is image `ids[i]`. A *unit* is the rows [u * unit_rows, (u + 1) * unit_rows): exactly
one chunk of `embeddings` and `status`, and one chunk of `done`. A writer writes a unit's rows first and
its marker last, so an interrupted run leaves only whole units marked, a rerun skips them, and several
processes (torchrun ranks, machines on an fsspec URL) can write disjoint units of one store without
touching each other's chunks. Readers refuse a backbone with pending units unless told to allow them.

Creation is crash-safe the same way: every Zarr file is written whole or not at all (zarr writes local
files through a temporary name and a rename; object stores put whole objects), and the attributes that
declare a node are written after everything they declare. A root without `dataset`, or a backbone
group without `dim`, was interrupted while being created: `open_or_create` and `add_backbone` build it
again, readers do not list it; a kill before the root zarr.json exists (inside its first write, or in the
deletion that rebuilds a half-created store) leaves a folder of zarr `*.partial` files, `table/` and
`backbones/` only, which `open_or_create` builds again too; a half-created backbone is deleted as a whole
prefix, its group zarr.json there or not. Only nodes marked as ours (`kind`, or inside our `backbones/`) or
such leftovers are rebuilt; a foreign folder or file is never touched.

Integrity on read: reads check every chunk's checksum, that rows marked OK are finite and that done units
have no pending row. Damage is a `StoreError` naming the backbone, unit and chunk; `python -m extract
verify --store S [--repair]` lists every damaged unit (the faces entry's included) and un-marks them, so
rerunning the extract command re-embeds exactly those. Before any of that, every attribute above and
every array's shape, chunks and dtype are checked against each other (n_rows, dim, unit_rows, dtype;
`features.store.validation`): the root's and the table's when a store is opened, an entry's before its
first use; an edited or forged one is a `StoreError` naming the store and the field.

Writers on a local store hold a lock per backbone (`filelock`, in the folder `<store>.locks/` beside
the store; another holds `create.lock` while the store is created), so two extract processes never write
one backbone at once; torchrun ranks write disjoint units and take no lock.

Version 2 stores (ids in zarr-python's variable-length `string` type at table/ids, which other Zarr
implementations do not read) are refused with a one-line note: `python -m extract upgrade --store S`
rewrites the ids alone, keeping every embedding (`extract.upgrade`). Version 1 stores (no checksums,
creation not crash-safe) are refused with a message to re-extract.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field

import numpy as np
from zarr.codecs import Crc32cCodec

SCHEMA_VERSION = 3
IDS = "table/ids_utf8"  # the image ids, UTF-8 bytes zero-padded to the longest (version 3)
OLD_IDS = "table/ids"  # version 2's variable-length strings, which only zarr-python reads
STORE_KIND = "face-gender-features"
DEFAULT_UNIT_ROWS = 1024
FACES = "_faces"  # the reserved entry of the face detection pass (above); `backbones()` leaves it out


class StoreError(ValueError):
    """A store is missing, of another schema or dataset, incomplete, or asked to hold inconsistent data."""


class Status(enum.IntEnum):
    PENDING = 0
    OK = 1
    UNREADABLE = 2
    NO_FACE = 3
    TOO_LARGE = 4  # more pixels than the face front end's hard limit


FINAL = [status.value for status in Status if status != Status.PENDING]  # the codes of a written row


@dataclass(frozen=True)
class SplitFeatures:
    """The valid rows of one split: features, labels, their store rows, and why the others were dropped."""

    x: np.ndarray
    gender: np.ndarray
    index: np.ndarray
    n_invalid: dict[str, int] = field(default_factory=dict)


def entry_arrays(n_rows: int, dim: int, unit_rows: int, dtype: str) -> dict[str, tuple[tuple, tuple, str]]:
    """An entry's arrays as the schema lays them out: name -> (shape, chunks, dtype)."""
    return {"embeddings": ((n_rows, dim), (unit_rows, dim), dtype),
            "status": ((n_rows,), (unit_rows,), "uint8"),
            "done": ((math.ceil(n_rows / unit_rows),), (1,), "bool")}


def checksum() -> list:
    """The bytes codecs of every array: a crc32c checksum per chunk, no compression."""
    return [Crc32cCodec()]


def encode_ids(ids) -> np.ndarray:
    """(N, L) uint8: each id's UTF-8 bytes, zero-padded to L, the longest id's length (at least 1)."""
    try:
        encoded = [str(i).encode("utf-8") for i in ids]
    except UnicodeEncodeError as error:
        raise StoreError(f"an image id is not valid UTF-8 ({error.object[:80]!r}); rename the file") from None
    if any(b"\0" in one for one in encoded):
        raise StoreError("an image id holds a zero byte; ids are stored zero-padded and cannot")
    width = max([1, *map(len, encoded)])
    return np.array(encoded, dtype=f"S{width}").view(np.uint8).reshape(len(encoded), width)


def decode_ids(array: np.ndarray, attrs: dict) -> np.ndarray:
    """The ids `encode_ids` wrote, as a numpy unicode array; ValueError when they are not that."""
    if array.ndim != 2 or array.dtype != np.uint8 or attrs.get("encoding") != "utf-8" \
            or attrs.get("width") != array.shape[1]:
        raise ValueError(f"expected (N, width) uint8 UTF-8 ids, got {array.shape} {array.dtype} "
                         f"with attributes {attrs}")
    fixed = np.ascontiguousarray(array).view(f"S{array.shape[1]}").reshape(len(array))
    try:
        return np.strings.decode(fixed, "utf-8")
    except UnicodeDecodeError as error:
        raise ValueError(f"an id is not valid UTF-8 ({error.reason})") from None
