"""FaceNet Inception-ResNet-v1 trained on VGGFace2 (facenet-pytorch's checkpoint): 512-d, facenet-pytorch's
``classify=False`` output (last_linear -> last_bn -> L2 normalisation).

Weights: ``20180402-114759-vggface2.pt`` (a state dict; its ``logits.*`` identity classifier is dropped, every
other key must match) from ``$TORCH_HOME/checkpoints/`` (facenet-pytorch's cache), downloaded there when
online, or ``--weights PATH``; a ``.pb`` is David Sandberg's frozen graph of the same model
(``20180402-114759.pb``), read by `facenet_graph`. Input: the aligned face (margin 0.05: close to facenet's
MTCNN box crops), standardised (x - 127.5) / 128 as facenet-pytorch's fixed_image_standardization.
"""

from __future__ import annotations

import torch

from extract.catalog import BUILTIN

from ._image import FacePreprocessor, aligned_crop
from ._torchnet import torch_factory
from ._weights import default_download, existing_file, load_state_dict, weights_identity
from .facenet_graph import graph_state_dict
from .inception_resnet_v1 import InceptionResnetV1

SPEC = BUILTIN["vggface2"]
CLASSIFIER_KEYS = ("logits.weight", "logits.bias")
PREPROCESS = FacePreprocessor(aligned_crop(SPEC))


def _state_dict(weights: str | None) -> tuple[dict[str, torch.Tensor], dict]:
    if weights is None:
        path, meta = default_download(SPEC)
    else:
        path = existing_file(weights)  # before its sha256 is taken
        meta = weights_identity(path)
    if path.suffix == ".pb":  # Sandberg's frozen graph: already without the identity classifier
        state_dict, info = graph_state_dict(path, name=SPEC.name)
        return state_dict, {**meta, **info, "ignored_keys": []}
    state_dict = load_state_dict(path, name=SPEC.name)
    dropped = [key for key in CLASSIFIER_KEYS if state_dict.pop(key, None) is not None]
    return state_dict, {**meta, "ignored_keys": dropped}


load = torch_factory(lambda random: InceptionResnetV1(), _state_dict, lambda model: model, PREPROCESS,
                     extra_versions=("opencv-python-headless",))
