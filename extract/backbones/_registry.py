"""`Backbone`, a built backbone (`extract.catalog.BackboneSpec` + network, preprocessor, metadata), and
`load_backbone`, which builds one from the registry's spec."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from typing import Callable

import numpy as np
import torch

from extract import catalog
from extract.catalog import PRECISIONS, TTAS, BackboneSpec
from extract.device import resolve_device
from extract.errors import UsageError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Backbone:
    """A built backbone: its `BackboneSpec` and everything the extraction loop needs to turn decoded
    images into embeddings.

    ``preprocessor`` maps one BGR uint8 HxWx3 image (``cv2.imread`` output) to one array of
    ``input_shape`` (or raises `NoFaceFound`); it pickles, so DataLoader workers can run it. ``input_shape``
    is the spec's network input, except where the network runs in the preprocessor (dlib's engine: its
    descriptors). ``embed`` maps a batch ``(B, *input_shape)`` already on ``device`` to ``(B, dim)`` float32.
    """

    spec: BackboneSpec
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
    def name(self) -> str:
        return self.spec.name

    @property
    def dim(self) -> int:
        return self.spec.dim

    @property
    def uses_faces(self) -> bool:
        """Whether the input is cut from a detected face (`extract.faces`): then the extract run's
        one detection per image feeds ``preprocessor.align(image, face)``."""
        return callable(getattr(self.preprocessor, "align", None))


@dataclass(frozen=True)
class FlipAveraged:
    """embed of a batch of HWC chips averaged with embed of their mirror images (``--tta flip``)."""

    embed: Callable[[torch.Tensor], torch.Tensor]

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
    if flipped is not None:  # dlib: the preprocessor records the flip (both engines the same); it computes it
        # when the net runs in the workers, else (the torch engine) the embed averages
        embed = backbone.embed if backbone.runs_in_workers else FlipAveraged(backbone.embed)
        return replace(backbone, preprocessor=flipped, embed=embed,
                       metadata={**metadata, "preprocessing": flipped.describe()})
    if len(backbone.input_shape) != 3 or backbone.input_shape[2] != 3:
        raise UsageError(f"backbone {backbone.name!r} takes {backbone.input_shape} inputs, not HxWx3 "
                         "images: it cannot average over mirrored inputs (--tta flip)")
    return replace(backbone, embed=FlipAveraged(backbone.embed), metadata=metadata)


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
    (autocast, on CUDA only). ``tta``: see `with_tta`.
    """
    spec = catalog.spec(name)
    torch_device = resolve_device(device)
    if precision not in PRECISIONS:
        raise UsageError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if precision != "fp32" and torch_device.type != "cuda":
        log.info("precision %s requested on %s: half precision is CUDA-only here, using fp32", precision,
                 torch_device)
        precision = "fp32"
    backbone = with_tta(spec.build(weights=weights, device=torch_device, precision=precision), tta)
    if backbone.spec != spec:  # a bug, not bad input
        raise RuntimeError(f"backbone {name!r} built a record of another spec: {backbone.spec}")
    log.info("loaded backbone %s (%s) on %s", name, backbone.metadata.get("weights"),
             backbone.device)
    return backbone
