"""One writer at a time: a lock per backbone (and one while the store is created or upgraded), as files
in the folder `<store>.locks/` beside a local store; fsspec URLs take none (torchrun ranks write
disjoint units)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

import filelock

from features.store.paths import is_local, location
from features.store.schema import StoreError

log = logging.getLogger(__name__)


@contextlib.contextmanager
def writer_lock(path, name: str, *, wait: bool = False):
    """Hold the lock that lets one process at a time write `name` (a backbone, or "create") in the local
    store at `path`; a no-op on fsspec URLs. Not waiting, a held lock is a StoreError saying who holds it."""
    if not is_local(path):
        yield
        return
    folder = Path(str(Path(location(path))).rstrip("/") + ".locks")
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
