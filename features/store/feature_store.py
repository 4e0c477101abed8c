"""`FeatureStore`: one opened store, the object callers hold. It checks the schema on open and hands
each job to its module: creation and locks, entries and their damage (`integrity.Entry`), reads."""
from __future__ import annotations

import functools
import logging
import warnings
from typing import Sequence

import numpy as np
import zarr

from features.dataset import Dataset, split_code
from features.store import creation
from features.store.creation import BackboneWriter, writer_lock
from features.store.integrity import Entry
from features.store.paths import delete_prefix, exists, half_created, interrupted_creation, open_group, refuse_foreign
from features.store.reads import read_split
from features.store.schema import (DEFAULT_UNIT_ROWS, FACES, IDS, SCHEMA_VERSION, STORE_KIND, SplitFeatures,
                                   StoreError, decode_ids)
from features.store.validation import check_dataset, check_entry, check_table_array, node

log = logging.getLogger(__name__)


class FeatureStore:
    """A feature store on disk (or any fsspec URL). Use `create`, `open` or `open_or_create`."""

    def __init__(self, group: zarr.Group, path: str):
        self._group = group
        self.path = path
        check_schema(path, group.attrs)
        check_dataset(path, group.attrs["dataset"])
        for key in (IDS, "table/gender", "table/split"):  # what every reader uses: checked on open
            check_table_array(path, key, node(group, path, key), self.n_rows)

    # -- opening ---------------------------------------------------------------------------------------
    @classmethod
    def create(cls, path, dataset: Dataset) -> FeatureStore:
        """A new store holding `dataset`'s table. Refuses to overwrite an existing store."""
        refuse_foreign(path)
        if exists(path) or interrupted_creation(path):
            raise StoreError(f"a store already exists at {path}; open it, or choose another path")
        return cls(creation.build(path, dataset, mode="w-"), str(path))

    @classmethod
    def open(cls, path, *, mode: str = "r") -> FeatureStore:
        """Open an existing store ("r" or "r+")."""
        if mode not in ("r", "r+"):
            raise ValueError(f"mode must be 'r' or 'r+', not {mode!r}")
        refuse_foreign(path)
        if interrupted_creation(path):
            raise StoreError(f"{path}: its creation was interrupted (no root zarr.json yet); rerun the "
                             "extract command to create it again")
        return cls(open_group(path, mode), str(path))

    @classmethod
    def open_or_create(cls, path, dataset: Dataset) -> FeatureStore:
        """Open the store at `path` for writing if it holds exactly `dataset`, else create it (again, when
        an earlier creation was interrupted)."""
        with writer_lock(path, "create", wait=True):  # creation takes seconds: waiting is right
            refuse_foreign(path)
            if interrupted_creation(path) or (exists(path) and half_created(path)):
                log.info("%s: its creation was interrupted; creating it again", path)
                return cls(creation.build(path, dataset, mode="w"), str(path))
            if not exists(path):
                return cls(creation.build(path, dataset, mode="w-"), str(path))
        store = cls.open(path, mode="r+")
        if store.fingerprint != dataset.fingerprint():
            raise StoreError(
                f"{path} holds another dataset ({store.dataset_name!r}, {store.n_rows} rows, root "
                f"{store.dataset_info.get('root')!r}) than {dataset.name!r} at {dataset.root!r} "
                f"({len(dataset)} rows); use a new store path for it")
        return store

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

    @functools.cached_property
    def ids(self) -> np.ndarray:
        """The image ids as a read-only numpy unicode array (row i is image ids[i]), decoded once per opened
        store (a full CelebA's take about a second; the table never changes after creation)."""
        try:
            ids = decode_ids(self._table(IDS), node(self._group, self.path, IDS).attrs.asdict())
        except ValueError as error:
            raise StoreError(f"{self.path}: {IDS} is damaged ({error}); extract into a new store") from None
        ids.flags.writeable = False
        return ids

    @property
    def gender(self) -> np.ndarray:
        return self._table("table/gender")

    @property
    def split(self) -> np.ndarray:
        return self._table("table/split")

    @property
    def attributes(self) -> dict[str, np.ndarray]:
        group = node(self._group, self.path, "table/attributes")
        return {name: self._table(f"table/attributes/{name}") for name, _ in sorted(group.arrays())}

    def _table(self, key: str) -> np.ndarray:
        """A whole array of the table; one that does not decode is a StoreError naming it."""
        array = node(self._group, self.path, key)
        check_table_array(self.path, key, array, self.n_rows)
        try:
            return array[:]
        except Exception as error:  # noqa: BLE001 - a chunk that does not decode is damage, named here
            raise StoreError(f"{self.path}: {key} is damaged ({type(error).__name__}: {error}); "
                             "extract into a new store") from None

    # -- entries: the backbones and the faces pass -------------------------------------------------------
    def backbones(self) -> list[str]:
        """The embedding backbones whose creation finished (the reserved faces entry is not one)."""
        return [name for name in self.entries() if name != FACES]

    def entries(self) -> list[str]:
        """Every finished entry under /backbones: the backbones, and the faces entry when there is one."""
        try:
            with warnings.catch_warnings():  # a half-deleted entry (no zarr.json) is expected after a kill
                warnings.filterwarnings("ignore", "Object at .* is not recognized as a component",
                                        category=UserWarning)
                groups = list(node(self._group, self.path, "backbones").groups())
        except (ValueError, TypeError) as error:
            raise StoreError(f"{self.path}/backbones: a backbone's zarr.json is not readable Zarr metadata "
                             f"({type(error).__name__}: {error}); the store is damaged") from None
        return sorted(name for name, group in groups if "dim" in group.attrs)

    def entry(self, name: str) -> Entry:
        """One finished entry, for reading with its damage named; a StoreError listing them when absent."""
        if name not in self.entries():
            held = ", ".join(self.backbones()) or "none"
            raise StoreError(f"{self.path} has no backbone {name!r}; it holds: {held}")
        group = node(self._group, self.path, f"backbones/{name}")
        check_entry(self.path, name, group, self.n_rows)
        return Entry(self.path, name, group)

    def faces(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The detection pass: ((N, D) face rows, laid out as the schema says, (N,) status), or None."""
        if FACES not in self.entries():
            return None
        entry = self.entry(FACES)
        return entry.whole("embeddings"), entry.status()

    def add_backbone(self, name: str, *, dim: int, dtype: str = "float32",
                     unit_rows: int = DEFAULT_UNIT_ROWS, metadata: dict) -> BackboneWriter:
        """Room for one backbone's embeddings; returns the existing one when it matches (resume). Callers
        make sure no other process adds `name` at once (`writer_lock`, or torchrun's rank 0 alone): a group
        left half-created by an interrupted run is deleted and built again."""
        if "weights" not in metadata:
            raise ValueError("backbone metadata must say which weights made it ('random' or 'sha256:...')")
        if np.dtype(dtype) not in (np.float32, np.float16):
            raise ValueError(f"embedding dtype must be float32 or float16, not {dtype!r}")
        if name in self.entries():
            info = self.backbone_info(name)
            asked = {"dim": dim, "dtype": np.dtype(dtype).name, "weights": metadata["weights"]}
            held = {"dim": info["dim"], "dtype": info["dtype"], "weights": info["metadata"]["weights"]}
            if asked != held:
                raise StoreError(f"{self.path} already holds backbone {name!r} with {held}, not {asked}; "
                                 "use another store, or the same weights and dtype to resume")
            return self.backbone_writer(name)
        parent = node(self._group, self.path, "backbones")
        # whatever is there was left by an interrupted run (the schema's "Creation is crash-safe")
        if delete_prefix(parent, name):
            log.info("%s: backbone %r was left half-created by an interrupted run; creating it again",
                     self.path, name)
        creation.create_backbone(parent, name, n_rows=self.n_rows, dim=dim, dtype=dtype,
                                 unit_rows=unit_rows, metadata=metadata)
        return self.backbone_writer(name)

    def update_metadata(self, name: str, extra: dict) -> None:
        """Add or replace keys of a backbone's metadata; the attributes file is rewritten whole."""
        group = self.entry(name).group
        group.attrs.update({"metadata": {**group.attrs["metadata"], **extra}})

    def backbone_writer(self, name: str) -> BackboneWriter:
        return BackboneWriter(self.entry(name).group, store_path=self.path)

    def backbone_info(self, name: str) -> dict:
        """Metadata, dim, dtype, unit_rows and progress of one backbone."""
        entry = self.entry(name)
        done = entry.done()
        return {**dict(entry.group.attrs), "units_done": int(done.sum()), "n_units": len(done),
                "complete": bool(done.all())}

    def backbone_attrs(self, name: str) -> dict:
        """One entry's attributes, without reading its done markers (for `verify`: they may be damaged)."""
        return dict(self.entry(name).group.attrs)

    def is_complete(self, name: str) -> bool:
        return bool(self.entry(name).done().all())

    def status(self, name: str) -> np.ndarray:
        return self.entry(name).status()

    # -- reading ---------------------------------------------------------------------------------------
    def read(self, backbones: str | Sequence[str], split: str | None = None, *,
             allow_incomplete: bool = False, out: np.ndarray | None = None) -> SplitFeatures:
        """The valid rows of `split` (None: all rows) as float32, backbones concatenated column-wise.

        A row is valid only when every backbone has it OK; the others are counted by reason. Damage is a
        StoreError naming the backbone, unit and chunk. ``out``: a float32 array of the result's shape to
        read into instead of a new one (a caller refilling a matrix it changed in place)."""
        names = [backbones] if isinstance(backbones, str) else list(backbones)
        if not names:
            raise ValueError("read needs at least one backbone")
        entries = []
        for name in names:
            entry = self.entry(name)
            done = entry.done()
            if not done.all() and not allow_incomplete:
                raise StoreError(f"backbone {name!r} in {self.path} is incomplete ({int(done.sum())} of "
                                 f"{len(done)} units done): finish extraction (rerun the same extract "
                                 "command to resume) or allow incomplete embeddings")
            entries.append(entry)
        in_split = np.ones(self.n_rows, dtype=bool) if split is None else self.split == split_code(split)
        return read_split(entries, in_split, self.gender, out=out)


def check_schema(path: str, attrs) -> None:
    """A StoreError unless the root is a finished feature store of this schema version."""
    if attrs.get("kind") != STORE_KIND:
        raise StoreError(f"{path} is a Zarr group but not a feature store (no kind={STORE_KIND!r})")
    version = attrs.get("schema_version")
    if version == SCHEMA_VERSION - 1:
        raise StoreError(f"{path} has schema_version {version}, whose image ids only zarr-python reads; "
                         f"upgrade it in place, keeping every embedding: python -m extract upgrade --store {path}")
    if version != SCHEMA_VERSION:
        raise StoreError(f"{path} has schema_version {version}; this version of the tool reads "
                         f"schema_version {SCHEMA_VERSION} only (checksummed chunks, crash-safe "
                         "creation): re-extract into a new store")
    if "dataset" not in attrs:
        raise StoreError(f"{path}: its creation was interrupted (no dataset table declared); rerun "
                         "the extract command to create it again")
