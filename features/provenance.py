"""Where a result came from: file checksums and library versions, recorded with embeddings (extract),
stores and heads (classify). Torch-free and zarr-free, so both stages and every script can use it."""
from __future__ import annotations

import hashlib
import importlib.metadata
import os


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def library_versions(*distributions: str) -> dict[str, str]:
    """Installed versions of the named pip distributions, read from their metadata (nothing is
    imported: classify records versions without importing torch); "not installed" when absent."""
    versions = {}
    for dist in distributions:
        try:
            versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return versions
