"""The feature store: the one contract between `extract` (writes) and `classify` (reads).

One Zarr v3 group per dataset. Schema, version 2 (`schema_version` in the root attributes):

    /                         attrs: schema_version, kind="face-gender-features", created, library_versions,
                                     and last, dataset {name, root, fingerprint, n_rows, split_seed, images
                                     (release folder, e.g. img_celeba), alignment {kind: wild |
                                     celeba_aligned, size, landmarks}}
    /table/ids                (N,) string     image id (CelebA file name, UTKFace/folder relative path)
    /table/gender             (N,) int8       1 male, 0 female
    /table/split              (N,) int8       0 train, 1 val, 2 test
    /table/attributes/<name>  (N,) int        per-image attributes and groups (CelebA attributes as 1/0,
                                              identity; UTKFace age and race), for per-group evaluation
    /backbones/<name>/        attrs, written last: name, metadata {weights ("random" | "sha256:<hex>"),
                                     weights_source, preprocessing, library_versions, ...}, dim, dtype,
                                     unit_rows, created
    /backbones/<name>/embeddings  (N, D) float32|float16, chunks (unit_rows, D), no compression (float
                                  embeddings barely compress) but a crc32c checksum per chunk; NaN in
                                  invalid rows
    /backbones/<name>/status      (N,) uint8 `Status`, crc32c: PENDING until written, then OK or the reason
                                  a row is invalid (UNREADABLE image, NO_FACE found by the aligner,
                                  TOO_LARGE: over the decoder's pixel limit)
    /backbones/<name>/done        (n_units,) bool, one chunk per unit, crc32c: the completion markers
    /backbones/_faces/        the face detection pass (same arrays; metadata role "faces", detector,
                              thresholds, alignment, and on aligned datasets template_check: fallbacks
                              to the template, detection-vs-template distances): every face backbone
                              warps from these rows

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

Integrity on read: every chunk carries a crc32c checksum; reads check that rows marked OK are finite and
that done units have no pending row. Damage is a `StoreError` naming the backbone, unit and chunk;
`python -m extract verify --store S [--repair]` lists every damaged unit (the faces entry's included) and
un-marks them, so rerunning the extract command re-embeds exactly those.

Writers on a local store hold a lock per backbone (`filelock`, in the folder `<store>.locks/` beside
the store; another holds `create.lock` while the store is created), so two extract processes never write
one backbone at once; torchrun ranks write disjoint units and take no lock.

Version 1 stores (no checksums, creation not crash-safe) are refused with a message to re-extract.
"""
from __future__ import annotations

import contextlib
import enum
import logging
import math
import os
import signal
import warnings
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import filelock
import numpy as np
import zarr
from zarr.codecs import Crc32cCodec
from zarr.core.buffer.cpu import NDBuffer
from zarr.core.sync import sync

from features.dataset import Dataset, split_code
from features.provenance import library_versions

SCHEMA_VERSION = 2
CRASH_HOOK = "FEATURES_STORE_CRASH_AT"  # tests: SIGKILL this process at a write step (see `_checkpoint`)
STORE_KIND = "face-gender-features"
DEFAULT_UNIT_ROWS = 1024
# Reserved entry under /backbones holding one face detection per image (box, 5 landmarks, score,
# source; metadata role "faces"), written unit by unit like a backbone; `backbones()` leaves it out.
FACES = "_faces"
READ_BLOCK_BYTES = 64 << 20  # rows read per call: several chunks decode concurrently, memory stays bounded
FINITE_BLOCK_ROWS = 4096  # rows checked for NaN at a time: one bool per value of a whole split is 0.33 GB

log = logging.getLogger(__name__)


class StoreError(ValueError):
    """A store is missing, of another schema or dataset, incomplete, or asked to hold inconsistent data."""


class Status(enum.IntEnum):
    PENDING = 0
    OK = 1
    UNREADABLE = 2
    NO_FACE = 3
    TOO_LARGE = 4  # more pixels than the face front end's hard limit


@dataclass(frozen=True)
class SplitFeatures:
    """The valid rows of one split: features, labels, their store rows, and why the others were dropped."""

    x: np.ndarray
    gender: np.ndarray
    index: np.ndarray
    n_invalid: dict[str, int] = field(default_factory=dict)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _location(path) -> str:
    """A local path, or an fsspec URL (s3://, gs://, memory://, ...) that zarr opens through fsspec.

    file:// URLs become plain paths: fsspec's local filesystem would not create the store's folders.
    """
    path = str(path)
    return path.removeprefix("file://") if path.startswith("file://") else path


def _is_local(path) -> bool:
    return "://" not in _location(path)


def _checkpoint(step: str) -> None:
    """A write step passed. Tests set CRASH_HOOK to a step name, or to k for the k-th step of the process,
    and the process SIGKILLs itself there: the crash-safety tests stop a run at every step that way."""
    target = os.environ.get(CRASH_HOOK)
    if not target:
        return
    _checkpoint.count = getattr(_checkpoint, "count", 0) + 1
    if target == step or target == str(_checkpoint.count):
        os.kill(os.getpid(), signal.SIGKILL)


def _open_group(path, mode: str) -> zarr.Group:
    try:
        return zarr.open_group(_location(path), mode=mode)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError) as error:
        raise StoreError(f"no feature store at {path} ({type(error).__name__})") from None
    except (ValueError, TypeError, KeyError) as error:  # zarr.json that is not JSON or not Zarr metadata
        raise StoreError(f"{path}/zarr.json is not readable Zarr metadata ({type(error).__name__}: "
                         f"{error}); the store is damaged: move it away and extract into a new store") from None


def _refuse_foreign(path) -> None:
    """A local path that exists but holds no Zarr root: a file, or a folder with other things in it than
    the leftovers of an interrupted creation (`_only_leftovers`), which `open_or_create` builds again."""
    if not _is_local(path):
        return
    location = Path(_location(path))
    if location.is_file():
        raise StoreError(f"--store {path} is an existing file, not a feature store; choose a new path")
    if location.is_dir() and not (location / "zarr.json").exists() and any(location.iterdir()) \
            and not _only_leftovers(location):
        raise StoreError(f"--store {path} is an existing folder that is not a Zarr store (no zarr.json); "
                         "choose a new path (nothing in it was touched)")


# What a creation killed before the root zarr.json exists leaves (its first write, whose temporary file
# `zarr.<hex>.partial` was not yet renamed; or a rebuild's rmtree, after the root zarr.json went but
# before the table did): nothing but these names at the top, and Zarr's own files below them.
_LEFTOVER_FOLDERS = ("table", "backbones")


def _only_leftovers(location: Path) -> bool:
    """A local folder without a root zarr.json holding only what an interrupted creation of ours leaves:
    zarr's temporary `*.partial` files, and `table/`, `backbones/` holding only zarr.json files, their
    `*.partial` temporaries and chunks (`c/...`). Anything else (a user's file) makes it foreign."""
    for entry in location.iterdir():
        if entry.is_file() and entry.name.startswith("zarr.") and entry.name.endswith(".partial"):
            continue
        if not (entry.is_dir() and entry.name in _LEFTOVER_FOLDERS and _only_zarr_files(entry)):
            return False
    return True


def _only_zarr_files(folder: Path) -> bool:
    for parent, _, files in os.walk(folder):
        inside_chunks = "c" in Path(parent).relative_to(folder).parts
        for name in files:
            if not (name == "zarr.json" or name.endswith(".partial") or inside_chunks):
                return False
    return True


def _interrupted_creation(path) -> bool:
    """A local store path left by a creation killed before its root zarr.json existed."""
    location = Path(_location(path))
    return _is_local(path) and location.is_dir() and not (location / "zarr.json").exists() \
        and any(location.iterdir()) and _only_leftovers(location)


@contextlib.contextmanager
def writer_lock(path, name: str, *, wait: bool = False):
    """Hold the lock that lets one process at a time write `name` (a backbone, or "create") in the local
    store at `path`; a no-op on fsspec URLs. Not waiting, a held lock is a StoreError saying who holds it."""
    if not _is_local(path):
        yield
        return
    folder = Path(str(Path(_location(path))).rstrip("/") + ".locks")
    lock = filelock.FileLock(folder / f"{name}.lock")
    what = "the store" if name == "create" else f"backbone {name!r}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        lock.acquire(timeout=0)
    except filelock.Timeout:
        if not wait:
            raise StoreError(f"another process is writing {what} in {path} (lock {lock.lock_file}); wait "
                             "for it to finish, or pass --wait-lock to wait for it") from None
        log.info("another process is writing %s in %s; waiting for it to finish", what, path)
        lock.acquire()
    except OSError as error:  # a missing, read-only or special (/proc) location: no store can be written there
        raise StoreError(f"cannot write the store at {path}: its lock {lock.lock_file} cannot be created "
                         f"({error.strerror or error}); choose a store path in a writable folder") from None
    try:
        yield
    finally:
        lock.release()


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
        _refuse_foreign(path)
        if _exists(path) or _interrupted_creation(path):
            raise StoreError(f"a store already exists at {path}; open it, or choose another path")
        return cls._build(path, dataset, mode="w-")

    @classmethod
    def _build(cls, path, dataset: Dataset, *, mode: str) -> FeatureStore:
        """The root (marked as ours), the table, then the `dataset` attribute that declares it complete."""
        if len(dataset) == 0:
            raise StoreError(f"dataset {dataset.name!r} has no rows; nothing to store")
        group = zarr.open_group(_location(path), mode=mode, attributes={
            "kind": STORE_KIND, "schema_version": SCHEMA_VERSION, "created": _now(),
            "library_versions": library_versions("numpy", "zarr")})
        _checkpoint("store:root")
        _write_table(group, dataset)
        group.attrs.update({"dataset": {
            "name": dataset.name, "root": str(dataset.root), "fingerprint": dataset.fingerprint(),
            "n_rows": len(dataset), "split_seed": dataset.split_seed, "images": dataset.images,
            "alignment": dataset.alignment or {"kind": "wild"}}})
        _checkpoint("store:declared")
        return cls(group, str(path))

    @classmethod
    def open(cls, path, *, mode: str = "r", dataset_name: str | None = None) -> FeatureStore:
        """Open an existing store ("r" or "r+"); `dataset_name` additionally checks which dataset it holds."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        _refuse_foreign(path)
        if _interrupted_creation(path):
            raise StoreError(f"{path}: its creation was interrupted (no root zarr.json yet); rerun the "
                             "extract command to create it again")
        store = cls(_open_group(path, mode), str(path))
        if dataset_name is not None and store.dataset_name != dataset_name:
            raise StoreError(f"{path} holds dataset {store.dataset_name!r}, not {dataset_name!r}")
        return store

    @classmethod
    def open_or_create(cls, path, dataset: Dataset) -> FeatureStore:
        """Open the store at `path` for writing if it holds exactly `dataset`, else create it (again, when
        an earlier creation was interrupted)."""
        with writer_lock(path, "create", wait=True):  # creation takes seconds: waiting is right
            _refuse_foreign(path)
            if _interrupted_creation(path):  # killed before the root zarr.json existed: only our leftovers
                log.info("%s: its creation was interrupted; creating it again", path)
                return cls._build(path, dataset, mode="w")
            if not _exists(path):
                return cls._build(path, dataset, mode="w-")
            if _half_created(path):
                log.info("%s: its creation was interrupted; creating it again", path)
                return cls._build(path, dataset, mode="w")
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
                             f"schema_version {SCHEMA_VERSION} only (checksummed chunks, crash-safe "
                             "creation): re-extract into a new store")
        if "dataset" not in attrs:
            raise StoreError(f"{self.path}: its creation was interrupted (no dataset table declared); rerun "
                             "the extract command to create it again")

    def _node(self, key: str):
        """A node of the store; unreadable metadata is a StoreError naming it."""
        try:
            return self._group[key]
        except KeyError:
            raise StoreError(f"{self.path} has no {key}: the store is damaged; extract into a new "
                             "store") from None
        except (ValueError, TypeError) as error:
            raise StoreError(f"{self.path}/{key}/zarr.json is not readable Zarr metadata "
                             f"({type(error).__name__}: {error}); the store is damaged") from None

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
        return self._table_array("ids").astype(object).astype(str)  # plain fixed-width strings

    @property
    def gender(self) -> np.ndarray:
        return self._table_array("gender")

    @property
    def split(self) -> np.ndarray:
        return self._table_array("split")

    @property
    def attributes(self) -> dict[str, np.ndarray]:
        group = self._node("table/attributes")
        return {name: self._table_array(f"attributes/{name}") for name, _ in sorted(group.arrays())}

    def _table_array(self, key: str) -> np.ndarray:
        try:
            return self._node(f"table/{key}")[:]
        except StoreError:
            raise
        except Exception as error:  # noqa: BLE001 - a chunk that does not decode is damage, named here
            raise StoreError(f"{self.path}: table/{key} is damaged ({type(error).__name__}: {error}); "
                             "extract into a new store") from None

    # -- backbones -------------------------------------------------------------------------------------
    def backbones(self) -> list[str]:
        """The embedding backbones whose creation finished (the reserved faces entry is not one; an
        interrupted one is rebuilt by `add_backbone`)."""
        return [name for name in self._entries() if name != FACES]

    def entries(self) -> list[str]:
        """Every finished entry under /backbones: the backbones, and the faces entry when there is one
        (`extract verify` checks them all)."""
        return self._entries()

    def _entries(self) -> list[str]:
        """Every finished entry under /backbones, the faces entry included."""
        return sorted(name for name, group in self._backbone_groups() if "dim" in group.attrs)

    def _backbone_groups(self) -> list[tuple[str, zarr.Group]]:
        try:
            with warnings.catch_warnings():  # a half-deleted entry (no zarr.json) is expected after a kill
                warnings.filterwarnings("ignore", "Object at .* is not recognized as a component",
                                        category=UserWarning)
                return list(self._node("backbones").groups())
        except (ValueError, TypeError) as error:
            raise StoreError(f"{self.path}/backbones: a backbone's zarr.json is not readable Zarr metadata "
                             f"({type(error).__name__}: {error}); the store is damaged") from None

    def faces(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The detection pass (FACES entry, written like a backbone): ((N, D) face rows, (N,) status),
        or None when the store has none. Layout of a row: `extract.faces` (box, landmarks, score, source)."""
        if FACES not in self._entries():
            return None
        group = self._backbone_group(FACES)
        return _read_checked(self, FACES, group, "embeddings"), self._checked_status(FACES, group)

    def add_backbone(self, name: str, *, dim: int, dtype: str = "float32",
                     unit_rows: int = DEFAULT_UNIT_ROWS, metadata: dict) -> BackboneWriter:
        """Room for one backbone's embeddings; returns the existing one when it matches (resume).

        Callers make sure no other process adds `name` at the same time (`writer_lock`, or torchrun's
        rank 0 alone): a group left half-created by an interrupted run is deleted and built again.
        """
        if "weights" not in metadata:
            raise ValueError("backbone metadata must say which weights made it ('random' or 'sha256:...')")
        if np.dtype(dtype) not in (np.float32, np.float16):
            raise ValueError(f"embedding dtype must be float32 or float16, not {dtype!r}")
        if name in self._entries():
            self._check_same_backbone(name, dim=dim, dtype=dtype, metadata=metadata)
            return self.backbone_writer(name)
        parent = self._node("backbones")
        leftover = parent.store_path / name
        if sync(_lists_anything(leftover)):
            # whatever is there, its group zarr.json included or not (a kill during this very delete
            # removes it before its arrays), was left by an interrupted run: the whole prefix goes
            log.info("%s: backbone %r was left half-created by an interrupted run; creating it again",
                     self.path, name)
            sync(leftover.delete_dir())
        _create_backbone(parent, name, n_rows=self.n_rows, dim=dim, dtype=dtype,
                         unit_rows=unit_rows, metadata=metadata)
        return self.backbone_writer(name)

    def _check_same_backbone(self, name: str, *, dim: int, dtype: str, metadata: dict) -> None:
        info = self.backbone_info(name)
        asked = {"dim": dim, "dtype": np.dtype(dtype).name, "weights": metadata["weights"]}
        held = {key: info[key] if key != "weights" else info["metadata"]["weights"] for key in asked}
        if asked != held:
            raise StoreError(f"{self.path} already holds backbone {name!r} with {held}, not {asked}; "
                             "use another store, or the same weights and dtype to resume")

    def update_metadata(self, name: str, extra: dict) -> None:
        """Add or replace keys of a backbone's metadata (e.g. the detection pass's template check);
        the attributes file is rewritten whole."""
        group = self._backbone_group(name)
        group.attrs.update({"metadata": {**group.attrs["metadata"], **extra}})

    def backbone_writer(self, name: str) -> BackboneWriter:
        return BackboneWriter(self._backbone_group(name), store_path=self.path)

    def backbone_info(self, name: str) -> dict:
        """Metadata, dim, dtype, unit_rows and progress of one backbone."""
        group = self._backbone_group(name)
        done = self._done(name, group)
        return {**dict(group.attrs), "units_done": int(done.sum()), "n_units": len(done),
                "complete": bool(done.all())}

    def backbone_attrs(self, name: str) -> dict:
        """One entry's attributes (metadata, dim, unit_rows, ...), without reading its done markers: for
        `verify`, where those may be what is damaged."""
        return dict(self._backbone_group(name).attrs)

    def is_complete(self, name: str) -> bool:
        return bool(self._done(name, self._backbone_group(name)).all())

    def status(self, name: str) -> np.ndarray:
        return self._checked_status(name, self._backbone_group(name))

    def _backbone_group(self, name: str) -> zarr.Group:
        if name not in self._entries():
            held = ", ".join(self.backbones()) or "none"
            raise StoreError(f"{self.path} has no backbone {name!r}; it holds: {held}")
        return self._node(f"backbones/{name}")

    def _done(self, name: str, group: zarr.Group) -> np.ndarray:
        return _read_checked(self, name, group, "done")

    def _checked_status(self, name: str, group: zarr.Group) -> np.ndarray:
        """The status array, after checking that no done unit has a pending row (a lost status chunk)."""
        status = _read_checked(self, name, group, "status")
        done = self._done(name, group)
        unit_rows = int(group.attrs["unit_rows"])
        pending_units = np.unique(np.flatnonzero(status == Status.PENDING) // unit_rows)
        damaged = [int(u) for u in pending_units if done[u]]
        if damaged:
            raise self.damage(name, damaged[0], "status", "a unit marked done has pending rows "
                              "(its status chunk is missing or was overwritten)", more=len(damaged) - 1)
        return status

    def damage(self, name: str, unit: int, array: str, what: str, *, more: int = 0) -> StoreError:
        """The one-line error for a damaged unit: backbone, unit, chunk, and what to do."""
        chunk = f"backbones/{name}/{array}/c/{unit}" + ("/0" if array == "embeddings" else "")
        others = f" (and {more} more damaged units)" if more else ""
        return StoreError(f"{self.path}: backbone {name!r} unit {unit}, chunk {chunk}: {what}{others}; "
                          f"run `python -m extract verify --store {self.path} --repair`, then the same "
                          "extract command to re-embed the damaged units")

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, backbones: str | Sequence[str], split: str | None = None, *,
             allow_incomplete: bool = False, out: np.ndarray | None = None) -> SplitFeatures:
        """The valid rows of `split` (None: all rows) as float32, backbones concatenated column-wise.

        A row is valid only when every backbone has it OK; the others are counted by reason. Damage
        found on the way (a chunk that fails its checksum, a lost status chunk, a non-finite row marked
        OK) is a StoreError naming the backbone, unit and chunk. ``out``: a float32 array of the result's
        shape to read into instead of a new one (a caller refilling a matrix it changed in place).
        """
        names = [backbones] if isinstance(backbones, str) else list(backbones)
        if not names:
            raise ValueError("read needs at least one backbone")
        groups = [self._readable_group(name, allow_incomplete) for name in names]
        in_split = self._split_mask(split)
        statuses = [self._checked_status(name, group) for name, group in zip(names, groups)]
        valid = in_split & np.logical_and.reduce([status == Status.OK for status in statuses])
        index = np.flatnonzero(valid)
        dims = [group.attrs["dim"] for group in groups]
        x = _destination(out, (len(index), sum(dims)))
        offsets = np.cumsum([0] + dims)
        for name, group, start, dim in zip(names, groups, offsets, dims):
            columns = slice(int(start), int(start + dim))
            try:
                _read_rows_into(group["embeddings"], index, x, column=int(start))
            except Exception as error:  # noqa: BLE001 - locate the chunk that does not decode
                raise self._locate_damage(name, group, index, error) from None
            self._check_finite(name, group, index, x[:, columns])
        return SplitFeatures(x=x, gender=self.gender[index], index=index,
                             n_invalid=_count_invalid(statuses, in_split))

    def _check_finite(self, name: str, group: zarr.Group, index: np.ndarray, x: np.ndarray) -> None:
        bad = np.zeros(len(x), dtype=bool)
        for first in range(0, len(x), FINITE_BLOCK_ROWS):
            rows = slice(first, first + FINITE_BLOCK_ROWS)
            bad[rows] = ~np.isfinite(x[rows]).all(axis=1)
        if bad.any():
            units = np.unique(index[bad] // int(group.attrs["unit_rows"]))
            raise self.damage(name, int(units[0]), "embeddings", f"{int(bad.sum())} rows marked OK are not "
                              "finite (the chunk is missing or was overwritten)", more=len(units) - 1)

    def _locate_damage(self, name: str, group: zarr.Group, index: np.ndarray, error: Exception) -> Exception:
        unit_rows = int(group.attrs["unit_rows"])
        for unit in np.unique(index // unit_rows).tolist():
            try:
                group["embeddings"][unit * unit_rows:(unit + 1) * unit_rows]
            except Exception as chunk_error:  # noqa: BLE001 - any decode failure is damage
                return self.damage(name, unit, "embeddings", f"does not decode "
                                   f"({type(chunk_error).__name__}: {chunk_error})")
        return error

    def _readable_group(self, name: str, allow_incomplete: bool) -> zarr.Group:
        group = self._backbone_group(name)
        done = self._done(name, group)
        if not done.all() and not allow_incomplete:
            raise StoreError(f"backbone {name!r} in {self.path} is incomplete ({int(done.sum())} of "
                             f"{len(done)} units done): finish extraction (rerun the same extract "
                             "command to resume) or allow incomplete embeddings")
        return group

    def _split_mask(self, split: str | None) -> np.ndarray:
        if split is None:
            return np.ones(self.n_rows, dtype=bool)
        return self.split == split_code(split)

    # -- checking every unit (python -m extract verify) ------------------------------------------------
    def damaged_units(self, name: str) -> dict[int, str]:
        """Every damaged unit of backbone `name` -> what is wrong, reading the whole backbone unit by unit.

        Damaged: a chunk that does not decode (checksum, size), a done unit with pending rows or status
        codes that do not exist, rows marked OK that are not finite, invalid rows that are not NaN, a
        done marker that does not decode.
        """
        group = self._backbone_group(name)
        unit_rows, n_units = int(group.attrs["unit_rows"]), group["done"].shape[0]
        return {unit: problem for unit in range(n_units)
                if (problem := _unit_problem(group, unit, unit_rows)) is not None}

    def n_units(self, name: str) -> int:
        return self._backbone_group(name)["done"].shape[0]

    def unmark_units(self, name: str, units: Sequence[int]) -> None:
        """Mark `units` not done, so that the extract command embeds them again (and only them)."""
        done = self._node(f"backbones/{name}/done")
        for unit in units:
            done[int(unit)] = False


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
        _checkpoint("unit:embeddings")
        self._group["status"][start:stop] = status
        _checkpoint("unit:status")
        self._group["done"][unit] = True
        _checkpoint("unit:done")


# -- helpers -----------------------------------------------------------------------------------------
def _exists(path) -> bool:
    try:
        zarr.open_group(_location(path), mode="r")
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, zarr.errors.NodeTypeValidationError):
        return False
    except (ValueError, TypeError, KeyError):
        _open_group(path, "r")  # raises the one-line StoreError for unreadable metadata
    return True


async def _lists_anything(prefix) -> bool:
    """Whether the store holds any key under the StorePath `prefix`."""
    async for _ in prefix.store.list_prefix(prefix.path + "/"):
        return True
    return False


def _half_created(path) -> bool:
    """A root marked as a feature store whose `dataset` (written last) never came: ours, interrupted."""
    attrs = _open_group(path, "r").attrs
    return attrs.get("kind") == STORE_KIND and attrs.get("schema_version") == SCHEMA_VERSION \
        and "dataset" not in attrs


def _read_checked(store: FeatureStore, name: str, group: zarr.Group, array: str) -> np.ndarray:
    """A whole per-unit array (status, done); a chunk that does not decode is named."""
    try:
        return group[array][:]
    except Exception as error:  # noqa: BLE001 - locate the chunk
        chunk_rows = group[array].chunks[0]
        for unit in range(group[array].shape[0] // chunk_rows + 1):
            try:
                group[array][unit * chunk_rows:(unit + 1) * chunk_rows]
            except Exception as chunk_error:  # noqa: BLE001
                unit_rows = int(group.attrs["unit_rows"])
                unit = unit if array == "done" else unit * chunk_rows // unit_rows
                raise store.damage(name, unit, array, f"does not decode ({type(chunk_error).__name__}: "
                                   f"{chunk_error})") from None
        raise error


def _unit_problem(group: zarr.Group, unit: int, unit_rows: int) -> str | None:
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
            chunk = f"{array}/c/{unit}" + ("/0" if array == "embeddings" else "")
            return f"{chunk}: does not decode ({type(error).__name__}: {error})"
        if array == "status":
            status = values
            continue
        known = np.isin(status, [s.value for s in Status if s != Status.PENDING])
        if not known.all():
            return f"status/c/{unit}: {int((~known).sum())} rows pending or of unknown status in a done unit"
        ok = status == Status.OK
        if not np.isfinite(values[ok]).all():
            return f"embeddings/c/{unit}/0: {int((~np.isfinite(values[ok]).all(axis=1)).sum())} rows " \
                   "marked OK are not finite"
        if not np.isnan(values[~ok]).all():
            return f"embeddings/c/{unit}/0: invalid rows are not NaN"
    return None


def _write_table(group: zarr.Group, dataset: Dataset) -> None:
    n = len(dataset)
    table = group.create_group("table")
    # variable-length UTF-8 strings: the Zarr v3 string type with a specification
    ids = table.create_array("ids", shape=(n,), dtype=str, chunks=(n,), compressors=_checksum())
    ids[:] = np.asarray(dataset.ids, dtype=str)
    _checkpoint("store:table/ids")
    for name in ("gender", "split"):
        table.create_array(name, data=np.asarray(getattr(dataset, name), dtype=np.int8), chunks=(n,),
                           compressors=_checksum())
        _checkpoint(f"store:table/{name}")
    attributes = table.create_group("attributes")
    for name, values in dataset.attributes.items():
        attributes.create_array(name, data=np.asarray(values), chunks=(n,), compressors=_checksum())
        _checkpoint(f"store:table/attributes/{name}")
    group.create_group("backbones")
    _checkpoint("store:backbones")


def _checksum() -> list:
    """The bytes codecs of every array: a crc32c checksum per chunk, no compression."""
    return [Crc32cCodec()]


def _create_backbone(parent: zarr.Group, name: str, *, n_rows: int, dim: int, dtype: str,
                     unit_rows: int, metadata: dict) -> None:
    """The group, its three arrays, then the attributes that declare it (a kill before them leaves a
    group `backbones()` does not list and `add_backbone` builds again)."""
    if unit_rows < 1:
        raise ValueError(f"unit_rows must be positive, not {unit_rows}")
    group = parent.create_group(name)
    _checkpoint("backbone:group")
    group.create_array("embeddings", shape=(n_rows, dim), chunks=(unit_rows, dim), dtype=dtype,
                       compressors=_checksum(), fill_value=np.nan)
    _checkpoint("backbone:embeddings")
    group.create_array("status", shape=(n_rows,), chunks=(unit_rows,), dtype=np.uint8,
                       fill_value=int(Status.PENDING), compressors=_checksum())
    _checkpoint("backbone:status")
    n_units = math.ceil(n_rows / unit_rows)
    group.create_array("done", shape=(n_units,), chunks=(1,), dtype=bool, fill_value=False,
                       compressors=_checksum())
    _checkpoint("backbone:done")
    group.attrs.update({"name": name, "dim": int(dim), "dtype": np.dtype(dtype).name,
                        "unit_rows": int(unit_rows), "created": _now(), "metadata": metadata})
    _checkpoint("backbone:declared")


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


def _destination(out: np.ndarray | None, shape: tuple[int, int]) -> np.ndarray:
    """A new float32 array of ``shape``, or ``out`` once checked to be one."""
    if out is None:
        return np.empty(shape, dtype=np.float32)
    if out.shape != shape or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"read into: expected a C-contiguous float32 {shape} array, got {out.dtype} {out.shape}")
    return out


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
