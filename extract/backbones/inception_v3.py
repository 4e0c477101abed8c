"""Inception-v3 (torchvision, ImageNet-1k V1 weights), aux head removed, ``fc`` = identity: 2048-d."""

from __future__ import annotations

from torch import nn
from torchvision.models import Inception_V3_Weights, inception_v3

from extract.catalog import BUILTIN

from ._image import FacePreprocessor, aligned_crop
from ._torchnet import torch_factory
from ._weights import torchvision_state_dict

SPEC = BUILTIN["inception_v3"]
DEFAULT_WEIGHTS = Inception_V3_Weights.IMAGENET1K_V1  # its url is SPEC.weights.default (a test checks)
# The aligned face at 299, ImageNet mean/std as DEFAULT_WEIGHTS.transforms(); transform_input=True (as torchvision
# sets for these weights) maps it to the (x - 0.5) / 0.5 scaling the ported Google weights were trained with.
PREPROCESS = FacePreprocessor(aligned_crop(SPEC))


def _architecture(random: bool) -> nn.Module:
    # aux_logits=True so the checkpoint's AuxLogits.* keys load strictly; dropped by _headless.
    return inception_v3(weights=None, aux_logits=True, transform_input=True, init_weights=random)


def _headless(model: nn.Module) -> nn.Module:
    model.AuxLogits = None
    model.aux_logits = False
    model.fc = nn.Identity()
    return model


load = torch_factory(_architecture, lambda weights: torchvision_state_dict(SPEC, DEFAULT_WEIGHTS, weights), _headless,
                     PREPROCESS, weights_facts={"transform_input": True})
