"""The feature store: the one contract between `extract` (writes) and `classify` (reads).

The on-disk schema, its version and the write protocol are written down once, in `features.store.schema`.
The modules, one job each (their docstrings say more): schema, paths, creation (and `writer_lock`),
validation, integrity (damage), reads, feature_store (`FeatureStore`, what callers hold), upgrade, crash.
"""
from features.store.crash import CRASH_HOOK
from features.store.creation import BackboneWriter, writer_lock
from features.store.feature_store import FeatureStore
from features.store.schema import FACES, IDS, OLD_IDS, SCHEMA_VERSION, SplitFeatures, Status, StoreError
from features.store.upgrade import upgrade

__all__ = ["BackboneWriter", "CRASH_HOOK", "FACES", "FeatureStore", "IDS", "OLD_IDS", "SCHEMA_VERSION",
           "SplitFeatures", "Status", "StoreError", "upgrade", "writer_lock"]
