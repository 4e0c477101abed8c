"""Crash-safe output files: a file is replaced whole or not at all.

An output is written to a temporary file in the same folder, flushed and fsynced, then moved over the
target with `os.replace` (atomic on POSIX and Windows within one file system), and the folder is fsynced
so the rename survives a power cut. A kill at any instant leaves the old file or the new one, never a
torn one; a killed write's leftover ``.<name>.*.tmp`` is harmless and ignored by every reader.
"""
from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO


def _process_umask() -> int:
    mask = os.umask(0)  # the only portable way to read it is to set it; put it back at once
    os.umask(mask)
    return mask


# mkstemp makes its file 0600; an output is made with the mode `open` would give it (0666 less the umask),
# read once at import, while the process has not yet started worker threads that could create files.
FILE_MODE = 0o666 & ~_process_umask()


@contextlib.contextmanager
def atomic_open(path: Path | str, mode: str = "w", **kwargs) -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing (``mode`` "w" or "wb", ``kwargs`` to `open`);
    on a clean exit it replaces ``path``, on an exception it is removed and ``path`` is untouched."""
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files: mode 'w' or 'wb', not {mode!r}")
    path = Path(path)
    handle_fd, temp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(handle_fd, FILE_MODE)
        with os.fdopen(handle_fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    _fsync_folder(path.parent)


def write_text(path: Path | str, text: str) -> None:
    """``path`` holds ``text`` (UTF-8), replaced atomically."""
    with atomic_open(path, "w", encoding="utf-8") as handle:
        handle.write(text)


def _fsync_folder(folder: Path) -> None:
    """Make the rename durable; folders cannot be opened for fsync on some systems (Windows): skipped."""
    with contextlib.suppress(OSError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
