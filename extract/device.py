"""The one place a device string from the user becomes a `torch.device`."""
from __future__ import annotations

import torch

from extract.errors import UsageError


def resolve_device(device: str | torch.device, *, local_rank: int | None = None) -> torch.device:
    """"auto" -> cuda when available (cuda:LOCAL_RANK under torchrun), else cpu; a device this machine
    does not have, or a string that names none, is a `UsageError`."""
    if str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(device)
    except RuntimeError:
        raise UsageError(f"unknown device {device!r}; valid: auto, cpu, cuda, cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"device {str(device)!r} requested but CUDA is not available here")
    if device.type == "cuda" and device.index is None and local_rank is not None:
        device = torch.device("cuda", local_rank)
    return device
