"""Weights for torchvision ImageNet models: the hub cache, a guarded download, or a local file."""

from __future__ import annotations

from pathlib import Path

import torch
from torchvision.models import WeightsEnum

from ._weights import (
    check_hash_prefix,
    fetch_cached,
    hub_checkpoint_dir,
    load_state_dict,
    weights_identity,
)


def resolve_state_dict(
    *, name: str, default: WeightsEnum, weights: str
) -> tuple[dict[str, torch.Tensor], dict]:
    """State dict and metadata for ``weights``: None = ``default`` (cache, else download), else a
    local file (state dict, or a checkpoint with a "model" key)."""
    if weights is None:
        path = fetch_cached(
            name=name,
            url=default.url,
            directory=hub_checkpoint_dir(),
            extra_hint=" (that directory is $TORCH_HOME/hub/checkpoints)",
        )
        digest = check_hash_prefix(path)
        meta = {**weights_identity(path, digest), "weights_name": str(default), "weights_url": default.url}
        return load_state_dict(path, name=name), meta
    path = Path(weights)
    return load_state_dict(path, name=name), weights_identity(path)
