"""The backbone record, the name -> factory registry, and `load_backbone`.

Modelled on torchvision's ``Weights`` (one record carries the module, its preprocessing, its output
size and where its weights came from) and timm's registry (``@register`` fills a dict; unknown names
raise ``ValueError`` listing the valid ones).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Any, Callable

import numpy as np
import torch

from extract import catalog
from extract.catalog import PRECISIONS, TTAS
from extract.device import resolve_device
from extract.errors import UsageError, WeightsUnavailable  # noqa: F401  (re-exported)
from extract.faces import NoFaceFound  # noqa: F401  (re-exported: preprocessors raise it)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    """Everything the extraction loop needs to turn decoded images into embeddings.

    ``preprocessor`` maps one BGR uint8 HxWx3 image (``cv2.imread`` output) to one array of
    ``input_shape`` (or raises `NoFaceFound`); it pickles, so DataLoader workers can run it.
    ``embed`` maps a batch ``(B, *input_shape)`` already on ``device`` to ``(B, dim)`` float32.
    """

    name: str
    dim: int
    input_shape: tuple[int, ...]
    preprocessor: Callable[[np.ndarray], np.ndarray]
    embed: Callable[[torch.Tensor], torch.Tensor]
    device: torch.device
    uses_torch_device: bool
    metadata: dict
    # dtype of one preprocessed array ("uint8" crops travel 4x lighter than float32), and the frozen
    # torch module (None for OpenCV-DNN / dlib nets).
    input_dtype: str = "float32"
    module: torch.nn.Module | None = field(default=None, repr=False, compare=False)
    # The whole model runs in the preprocessor, i.e. in the reader workers (dlib's net, the detection
    # pass): the main process only collects rows, so every core can be a worker.
    runs_in_workers: bool = False

    @property
    def uses_faces(self) -> bool:
        """Whether the input is cut from a detected face (`extract.faces`): then the extract run's
        one detection per image feeds ``preprocessor.align(image, face)``."""
        return callable(getattr(self.preprocessor, "align", None))


class FlipAveraged:
    """embed of a batch of HWC chips averaged with embed of their mirror images (``--tta flip``)."""

    def __init__(self, embed: Callable[[torch.Tensor], torch.Tensor]) -> None:
        self.embed = embed

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        return (self.embed(batch) + self.embed(batch.flip(2))) / 2


def with_tta(backbone: Backbone, tta: str) -> Backbone:
    """The backbone with test-time augmentation ``tta`` ("none" or "flip"), recorded in its metadata."""
    if tta not in TTAS:
        raise UsageError(f"unknown test-time augmentation {tta!r}; valid: {', '.join(TTAS)}")
    metadata = {**backbone.metadata, "tta": tta}
    if tta == "none":
        return replace(backbone, metadata=metadata)
    flipped = getattr(backbone.preprocessor, "with_flip", lambda: None)()
    if flipped is not None:  # the preprocessor records the flip (dlib): it computes it when the net runs
        # in the workers, else (dlib's torch engine) the embed averages; both engines record the same
        embed = backbone.embed if backbone.runs_in_workers else FlipAveraged(backbone.embed)
        return replace(backbone, preprocessor=flipped, embed=embed,
                       metadata={**metadata, "preprocessing": flipped.describe()})
    if len(backbone.input_shape) != 3 or backbone.input_shape[2] != 3:
        raise UsageError(f"backbone {backbone.name!r} takes {backbone.input_shape} inputs, not HxWx3 "
                         "images: it cannot average over mirrored inputs (--tta flip)")
    return replace(backbone, embed=FlipAveraged(backbone.embed), metadata=metadata)


@dataclass(frozen=True)
class _Entry:
    factory: Callable[..., Backbone]
    info: dict[str, Any]
    available: Callable[[], bool] | None


_REGISTRY: dict[str, _Entry] = {}


def register(
    name: str,
    *,
    dim: int | None = None,
    input_shape: tuple[int, ...] | None = None,
    default_weights: str | None = None,
    available: Callable[[], bool] | None = None,
) -> Callable[[Callable[..., Backbone]], Callable[..., Backbone]]:
    """Decorator registering ``factory(*, weights, device, precision) -> Backbone`` under ``name``.

    The optional keywords feed `describe_backbones` without loading any weights; ``available``
    answers whether the default weights are on disk (no network). A built-in backbone passes none:
    its facts are its `extract.catalog.BUILTIN` record (the one place they are written).
    """
    facts = catalog.BUILTIN.get(name)
    if facts is not None:
        if (dim, input_shape, default_weights, available) != (None, None, None, None):
            raise ValueError(f"backbone {name!r} is described in extract.catalog; register it by name alone")
        dim, input_shape, default_weights = facts.dim, facts.input_shape, facts.default_weights
        available = facts.available_offline

    def decorator(factory: Callable[..., Backbone]) -> Callable[..., Backbone]:
        if name in _REGISTRY:
            raise ValueError(f"backbone {name!r} is already registered")
        info = {"dim": dim, "input_shape": input_shape, "default_weights": default_weights}
        _REGISTRY[name] = _Entry(factory=factory, info=info, available=available)
        return factory

    return decorator


def backbone_names() -> list[str]:
    """Registered backbone names, sorted."""
    return sorted(_REGISTRY)


def _entry(name: str) -> _Entry:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(
            f"unknown backbone {name!r}; valid names: {', '.join(backbone_names())}"
        ) from None


def _check_precision(precision: str, device: torch.device) -> str:
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision != "fp32" and device.type != "cuda":
        log.info("precision %s requested on %s: half precision is CUDA-only here, using fp32",
                 precision, device)
        return "fp32"
    return precision


def load_backbone(
    name: str,
    *,
    weights: str | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    tta: str = "none",
) -> Backbone:
    """Build backbone ``name``, frozen and in eval mode.

    ``weights``: None = the default pre-trained weights, "random" = seeded random init (torch
    backbones only), otherwise a path to a local weight file. ``precision``: fp32, bf16 or fp16
    (half precisions are applied with autocast on CUDA only). ``tta``: "none", or "flip" to average
    the embeddings of the face and its mirror image (recorded as metadata "tta").
    """
    entry = _entry(name)
    torch_device = resolve_device(device)
    precision = _check_precision(precision, torch_device)
    backbone = with_tta(entry.factory(weights=weights, device=torch_device, precision=precision), tta)
    if entry.info["dim"] is not None and backbone.dim != entry.info["dim"]:  # a bug, not bad input
        raise RuntimeError(f"backbone {name!r} built a {backbone.dim}-d record, registered as "
                           f"{entry.info['dim']}-d")
    log.info("loaded backbone %s (%s) on %s", name, backbone.metadata.get("weights"),
             backbone.device)
    return backbone


def describe_backbones() -> list[dict]:
    """One dict per backbone: name, dim, input_shape, default weights source, and whether those
    weights are on disk now (``available_offline``; checking never downloads)."""
    rows = []
    for name in backbone_names():
        entry = _REGISTRY[name]
        available = entry.available() if entry.available is not None else None
        rows.append({"name": name, **entry.info, "available_offline": available})
    return rows
