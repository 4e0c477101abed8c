"""ResNet-50 (torchvision, ImageNet-1k V2 weights) with ``fc`` replaced by identity: 2048-d."""

from __future__ import annotations

from torch import nn
from torchvision.models import ResNet50_Weights, resnet50

from extract.catalog import BUILTIN

from ._image import FacePreprocessor, aligned_crop
from ._torchnet import torch_factory
from ._weights import torchvision_state_dict

SPEC = BUILTIN["resnet50"]
DEFAULT_WEIGHTS = ResNet50_Weights.IMAGENET1K_V2  # its url is SPEC.weights.default (a test checks)
PREPROCESS = FacePreprocessor(aligned_crop(SPEC))  # the aligned face at 224, ImageNet mean/std as DEFAULT_WEIGHTS


def _headless(model: nn.Module) -> nn.Module:
    model.fc = nn.Identity()
    return model


load = torch_factory(lambda random: resnet50(weights=None),
                     lambda weights: torchvision_state_dict(SPEC, DEFAULT_WEIGHTS, weights), _headless, PREPROCESS)
