"""The feature store: the one contract between `extract` (writes) and `classify` (reads).

One Zarr v3 group per dataset. Schema, version 1 (`schema_version` in the root attributes):

    /                         attrs: schema_version, kind="face-gender-features", dataset {name, root,
                                     fingerprint, n_rows, split_seed}, created, library_versions
    /table/ids                (N,) string     image id (CelebA file name, UTKFace/folder relative path)
    /table/gender             (N,) int8       1 male, 0 female
    /table/split              (N,) int8       0 train, 1 val, 2 test
    /table/attributes/<name>  (N,) int        per-image attributes and groups (CelebA attributes as 1/0,
                                              identity; UTKFace age and race), for per-group evaluation
    /backbones/<name>/        attrs: metadata {weights ("random" | "sha256:<hex>"), weights_source,
                                     preprocessing, library_versions, ...}, dim, dtype, unit_rows, created
    /backbones/<name>/embeddings  (N, D) float32|float16, chunks (unit_rows, D), uncompressed (float
                                  embeddings barely compress; raw chunks read fastest); NaN in invalid rows
    /backbones/<name>/status      (N,) uint8 `Status`: PENDING until written, then OK or the reason a row
                                  is invalid (UNREADABLE image, NO_FACE found by the aligner)
    /backbones/<name>/done        (n_units,) bool, one chunk per unit: the completion markers

Row i of every array is image `ids[i]`. A *unit* is the rows [u * unit_rows, (u + 1) * unit_rows): exactly
one chunk of `embeddings` and `status`, and one chunk of `done`. A writer writes a unit's rows first and
its marker last, so an interrupted run leaves only whole units marked, a rerun skips them, and several
processes (torchrun ranks, machines on an fsspec URL) can write disjoint units of one store without
touching each other's chunks. Readers refuse a backbone with pending units unless told to allow them.
"""
from __future__ import annotations

import enum
import logging
import math
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Sequence

import numpy as np
import zarr
from zarr.core.buffer.cpu import NDBuffer

from features.dataset import Dataset, split_code

SCHEMA_VERSION = 1
STORE_KIND = "face-gender-features"
DEFAULT_UNIT_ROWS = 1024
READ_BLOCK_BYTES = 64 << 20  # rows read per call: several chunks decode concurrently, memory stays bounded

log = logging.getLogger(__name__)


class StoreError(ValueError):
    """A store is missing, of another schema or dataset, incomplete, or asked to hold inconsistent data."""


class Status(enum.IntEnum):
    PENDING = 0
    OK = 1
    UNREADABLE = 2
    NO_FACE = 3


@dataclass(frozen=True)
class SplitFeatures:
    """The valid rows of one split: features, labels, their store rows, and why the others were dropped."""

    x: np.ndarray
    gender: np.ndarray
    index: np.ndarray
    n_invalid: dict[str, int] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _library_versions() -> dict[str, str]:
    return {"numpy": np.__version__, "zarr": zarr.__version__}


def _location(path) -> str:
    """A local path, or an fsspec URL (s3://, gs://, memory://, ...) that zarr opens through fsspec.

    file:// URLs become plain paths: fsspec's local filesystem would not create the store's folders.
    """
    path = str(path)
    return path.removeprefix("file://") if path.startswith("file://") else path


def _open_group(path, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(_location(path), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as error:
        raise StoreError(f"no feature store at {path} ({type(error).__name__})") from None


class FeatureStore:
    """A feature store on disk (or any fsspec URL). Use `create`, `open` or `open_or_create`."""

    def __init__(self, group: zarr.Group, path: str):
        self._group = group
        self.path = path
        self._check_schema()

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path, dataset: Dataset) -> FeatureStore:
        """A new store holding `dataset`'s table. Refuses to overwrite an existing store."""
        if _exists(path):
            raise StoreError(f"a store already exists at {path}; open it, or choose another path")
        group = zarr.open_group(_location(path), mode="w-")
        _write_table(group, dataset)
        return cls(group, str(path))

    @classmethod
    def open(cls, path, *, mode: str = "r", dataset_name: str | None = None) -> FeatureStore:
        """Open an existing store ("r" or "r+"); `dataset_name` additionally checks which dataset it holds."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        store = cls(_open_group(path, mode), str(path))
        if dataset_name is not None and store.dataset_name != dataset_name:
            raise StoreError(f"{path} holds dataset {store.dataset_name!r}, not {dataset_name!r}")
        return store

    @classmethod
    def open_or_create(cls, path, dataset: Dataset) -> FeatureStore:
        """Open the store at `path` for writing if it holds exactly `dataset`, else create it."""
        if not _exists(path):
            return cls.create(path, dataset)
        store = cls.open(path, mode="r+")
        if store.fingerprint != dataset.fingerprint():
            raise StoreError(
                f"{path} holds another dataset ({store.dataset_name!r}, {store.n_rows} rows, root "
                f"{store.dataset_info.get('root')!r}) than {dataset.name!r} at {dataset.root!r} "
                f"({len(dataset)} rows); use a new store path for it")
        return store

    def _check_schema(self) -> None:
        attrs = self._group.attrs
        if attrs.get("kind") != STORE_KIND:
            raise StoreError(f"{self.path} is a Zarr group but not a feature store (no kind={STORE_KIND!r})")
        version = attrs.get("schema_version")
        if version != SCHEMA_VERSION:
            raise StoreError(f"{self.path} has schema_version {version}; this version of the tool reads "
                             f"schema_version {SCHEMA_VERSION} only: re-extract into a new store")

    # -- the dataset table -----------------------------------------------------------------------------
    @property
    def dataset_info(self) -> dict:
        return dict(self._group.attrs["dataset"])

    @property
    def dataset_name(self) -> str:
        return self.dataset_info["name"]

    @property
    def fingerprint(self) -> str:
        return self.dataset_info["fingerprint"]

    @property
    def n_rows(self) -> int:
        return int(self.dataset_info["n_rows"])

    @property
    def ids(self) -> np.ndarray:
        return self._group["table/ids"][:].astype(object).astype(str)  # plain fixed-width strings

    @property
    def gender(self) -> np.ndarray:
        return self._group["table/gender"][:]

    @property
    def split(self) -> np.ndarray:
        return self._group["table/split"][:]

    @property
    def attributes(self) -> dict[str, np.ndarray]:
        group = self._group["table/attributes"]
        return {name: array[:] for name, array in sorted(group.arrays())}

    # -- backbones -------------------------------------------------------------------------------------
    def backbones(self) -> list[str]:
        return sorted(name for name, _ in self._group["backbones"].groups())

    def add_backbone(self, name: str, *, dim: int, dtype: str = "float32",
                     unit_rows: int = DEFAULT_UNIT_ROWS, metadata: dict) -> BackboneWriter:
        """Room for one backbone's embeddings; returns the existing one when it matches (resume)."""
        if "weights" not in metadata:
            raise ValueError("backbone metadata must say which weights made it ('random' or 'sha256:...')")
        if np.dtype(dtype) not in (np.float32, np.float16):
            raise ValueError(f"embedding dtype must be float32 or float16, not {dtype!r}")
        if name in self.backbones():
            self._check_same_backbone(name, dim=dim, dtype=dtype, metadata=metadata)
            return self.backbone_writer(name)
        _create_backbone(self._group["backbones"], name, n_rows=self.n_rows, dim=dim, dtype=dtype,
                         unit_rows=unit_rows, metadata=metadata)
        return self.backbone_writer(name)

    def _check_same_backbone(self, name: str, *, dim: int, dtype: str, metadata: dict) -> None:
        info = self.backbone_info(name)
        asked = {"dim": dim, "dtype": np.dtype(dtype).name, "weights": metadata["weights"]}
        held = {key: info[key] if key != "weights" else info["metadata"]["weights"] for key in asked}
        if asked != held:
            raise StoreError(f"{self.path} already holds backbone {name!r} with {held}, not {asked}; "
                             "use another store, or the same weights and dtype to resume")

    def backbone_writer(self, name: str) -> BackboneWriter:
        return BackboneWriter(self._backbone_group(name))

    def backbone_info(self, name: str) -> dict:
        """Metadata, dim, dtype, unit_rows and progress of one backbone."""
        group = self._backbone_group(name)
        done = group["done"][:]
        return {**dict(group.attrs), "units_done": int(done.sum()), "n_units": len(done),
                "complete": bool(done.all())}

    def is_complete(self, name: str) -> bool:
        return bool(self._backbone_group(name)["done"][:].all())

    def status(self, name: str) -> np.ndarray:
        return self._backbone_group(name)["status"][:]

    def _backbone_group(self, name: str) -> zarr.Group:
        if name not in self.backbones():
            held = ", ".join(self.backbones()) or "none"
            raise StoreError(f"{self.path} has no backbone {name!r}; it holds: {held}")
        return self._group["backbones"][name]

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, backbones: str | Sequence[str], split: str | None = None, *,
             allow_incomplete: bool = False) -> SplitFeatures:
        """The valid rows of `split` (None: all rows) as float32, backbones concatenated column-wise.

        A row is valid only when every backbone has it OK; the others are counted by reason.
        """
        names = [backbones] if isinstance(backbones, str) else list(backbones)
        if not names:
            raise ValueError("read needs at least one backbone")
        groups = [self._readable_group(name, allow_incomplete) for name in names]
        in_split = self._split_mask(split)
        statuses = [group["status"][:] for group in groups]
        valid = in_split & np.logical_and.reduce([status == Status.OK for status in statuses])
        index = np.flatnonzero(valid)
        dims = [group.attrs["dim"] for group in groups]
        x = np.empty((len(index), sum(dims)), dtype=np.float32)
        offsets = np.cumsum([0] + dims)
        for group, start in zip(groups, offsets):
            _read_rows_into(group["embeddings"], index, x, column=int(start))
        return SplitFeatures(x=x, gender=self.gender[index], index=index,
                             n_invalid=_count_invalid(statuses, in_split))

    def _readable_group(self, name: str, allow_incomplete: bool) -> zarr.Group:
        group = self._backbone_group(name)
        done = group["done"][:]
        if not done.all() and not allow_incomplete:
            raise StoreError(f"backbone {name!r} in {self.path} is incomplete ({int(done.sum())} of "
                             f"{len(done)} units done): finish extraction (rerun the same extract "
                             "command to resume) or allow incomplete embeddings")
        return group

    def _split_mask(self, split: str | None) -> np.ndarray:
        if split is None:
            return np.ones(self.n_rows, dtype=bool)
        return self.split == split_code(split)


class BackboneWriter:
    """Writes one backbone's embeddings unit by unit; a unit is marked done only after its rows."""

    def __init__(self, group: zarr.Group):
        self._group = group
        self.name = group.attrs["name"]
        self.dim = int(group.attrs["dim"])
        self.rows_per_unit = int(group.attrs["unit_rows"])
        self.n_rows = group["status"].shape[0]
        self.n_units = math.ceil(self.n_rows / self.rows_per_unit)

    def unit_rows(self, unit: int) -> tuple[int, int]:
        if not 0 <= unit < self.n_units:
            raise IndexError(f"unit {unit} out of range 0..{self.n_units - 1}")
        start = unit * self.rows_per_unit
        return start, min(start + self.rows_per_unit, self.n_rows)

    def pending_units(self) -> list[int]:
        return np.flatnonzero(~self._group["done"][:]).tolist()

    def write_unit(self, unit: int, embeddings: np.ndarray, status: np.ndarray) -> None:
        """Write the unit's rows (NaN where status is not OK), then its completion marker."""
        start, stop = self.unit_rows(unit)
        status = np.asarray(status, dtype=np.uint8)
        rows = _checked_unit_rows(self.name, unit, embeddings, status, (stop - start, self.dim))
        self._group["embeddings"][start:stop] = rows.astype(self._group["embeddings"].dtype)
        self._group["status"][start:stop] = status
        self._group["done"][unit] = True


# -- helpers -----------------------------------------------------------------------------------------
def _exists(path) -> bool:
    try:
        zarr.open_group(_location(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return False
    return True


def _write_table(group: zarr.Group, dataset: Dataset) -> None:
    n = len(dataset)
    if n == 0:
        raise StoreError(f"dataset {dataset.name!r} has no rows; nothing to store")
    group.attrs.update({
        "kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "created": _now(),
        "library_versions": _library_versions(),
        "dataset": {"name": dataset.name, "root": str(dataset.root), "fingerprint": dataset.fingerprint(),
                    "n_rows": n, "split_seed": dataset.split_seed},
    })
    table = group.create_group("table")
    # variable-length UTF-8 strings: the Zarr v3 string type with a specification
    ids = table.create_array("ids", shape=(n,), dtype=str, chunks=(n,))
    ids[:] = np.asarray(dataset.ids, dtype=str)
    table.create_array("gender", data=np.asarray(dataset.gender, dtype=np.int8), chunks=(n,))
    table.create_array("split", data=np.asarray(dataset.split, dtype=np.int8), chunks=(n,))
    attributes = table.create_group("attributes")
    for name, values in dataset.attributes.items():
        attributes.create_array(name, data=np.asarray(values), chunks=(n,))
    group.create_group("backbones")


def _create_backbone(parent: zarr.Group, name: str, *, n_rows: int, dim: int, dtype: str,
                     unit_rows: int, metadata: dict) -> None:
    if unit_rows < 1:
        raise ValueError(f"unit_rows must be positive, not {unit_rows}")
    group = parent.create_group(name)
    group.attrs.update({"name": name, "dim": int(dim), "dtype": np.dtype(dtype).name,
                        "unit_rows": int(unit_rows), "created": _now(), "metadata": metadata})
    group.create_array("embeddings", shape=(n_rows, dim), chunks=(unit_rows, dim), dtype=dtype,
                       compressors=None, fill_value=np.nan)
    group.create_array("status", shape=(n_rows,), chunks=(unit_rows,), dtype=np.uint8,
                       fill_value=int(Status.PENDING))
    n_units = math.ceil(n_rows / unit_rows)
    group.create_array("done", shape=(n_units,), chunks=(1,), dtype=bool, fill_value=False)


def _checked_unit_rows(name: str, unit: int, embeddings, status: np.ndarray, shape: tuple) -> np.ndarray:
    rows = np.array(embeddings, dtype=np.float32)  # a copy: invalid rows are overwritten with NaN below
    if rows.shape != shape or status.shape != shape[:1]:
        raise StoreError(f"backbone {name!r} unit {unit}: expected embeddings {shape} and status "
                         f"{shape[:1]}, got {rows.shape} and {status.shape}")
    known = np.isin(status, [s.value for s in Status if s != Status.PENDING])
    if not known.all():
        raise StoreError(f"backbone {name!r} unit {unit}: status codes {sorted(set(status[~known]))} are "
                         f"not final; valid: {[s.name for s in Status if s != Status.PENDING]}")
    ok = status == Status.OK
    bad = ok & ~np.isfinite(rows).all(axis=1)
    if bad.any():
        raise StoreError(f"backbone {name!r} unit {unit}: {int(bad.sum())} valid rows have non-finite "
                         "embeddings (try fp32 precision)")
    rows[~ok] = np.nan
    return rows


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
