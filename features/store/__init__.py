"""The feature store: the one contract between `extract` (writes) and `classify` (reads).

The on-disk schema, its version and the write protocol are written down once, in `features.store.schema`.
The modules, one job each:

    schema         the schema (docstring), its constants, `Status`, `StoreError`, the ids' encoding
    paths          local paths and fsspec URLs; a store of ours, an interrupted creation, a foreign folder
    creation       crash-safe creation of the root, the table and each entry; `BackboneWriter`: a unit's
                   rows, then its done marker; one writer per backbone (`writer_lock`)
    validation     every attribute and array shape checked before use (one StoreError line)
    integrity      `Entry`: one entry read with its damage named, the per-unit checks of `extract verify`
    reads          the valid rows of a split, read a block of chunks at a time
    feature_store  `FeatureStore`, the opened store callers hold
    upgrade        an older store brought to this schema in place
    crash          the crash tests' kill points
"""
from features.store.crash import CRASH_HOOK
from features.store.creation import BackboneWriter, writer_lock
from features.store.feature_store import FeatureStore
from features.store.schema import FACES, IDS, OLD_IDS, SCHEMA_VERSION, SplitFeatures, Status, StoreError
from features.store.upgrade import upgrade

__all__ = ["BackboneWriter", "CRASH_HOOK", "FACES", "FeatureStore", "IDS", "OLD_IDS", "SCHEMA_VERSION",
           "SplitFeatures", "Status", "StoreError", "upgrade", "writer_lock"]
