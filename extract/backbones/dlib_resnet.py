"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat`` from pip package
face-recognition-models, run by dlib-bin): 128-d.

Alignment as dlib's own examples and the face_recognition package: HOG frontal face detector (no
upsampling first, one upsampling when that finds nothing: aligned faces are large, and upsampling
costs 5x), the largest face, ``shape_predictor_5_face_landmarks``, then
``dlib.get_face_chip(rgb, shape, size=150, padding=0.25)``, an RGB uint8 chip, and
``compute_face_descriptor(chip)``.

The whole net runs in the preprocessor, i.e. in the DataLoader worker processes: dlib's net holds
the GIL and runs on one thread, so in the main process it would use one core however many there
are, while in N workers it uses N. ``embed`` then only hands the descriptors on.
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


REQUIREMENT = "face-recognition-models==0.3.0"
RECOGNIZER_FILE = "dlib_face_recognition_resnet_model_v1.dat"
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP = 150
PADDING = 0.25
UPSAMPLES = (0, 1)  # tried in turn until a face is found


class DlibFaceNet:
    """Picklable preprocessor: BGR image -> 128-d float32 descriptor, or NoFaceFound.

    The detector, shape predictor and recognition net are created lazily in each process and never
    pickled.
    """

    def __init__(self, recognizer_path: str, landmarks_path: str, *,
                 upsamples: tuple[int, ...] = UPSAMPLES) -> None:
        self.recognizer_path = recognizer_path
        self.landmarks_path = landmarks_path
        self.upsamples = upsamples
        self._models = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_models": None}

    def _load(self):
        import dlib

        if self._models is None:
            self._models = (dlib.get_frontal_face_detector(), dlib.shape_predictor(self.landmarks_path),
                            dlib.face_recognition_model_v1(self.recognizer_path))
        return self._models

    def chip(self, image: np.ndarray) -> np.ndarray:
        """The aligned 150x150x3 RGB uint8 face chip of the largest face."""
        import dlib

        check_bgr(image)
        detector, predictor, _ = self._load()
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # dlib's nets were trained on RGB
        for upsample in self.upsamples:
            boxes = detector(rgb, upsample)
            if len(boxes):
                break
        else:
            raise NoFaceFound(f"dlib HOG detector found no face (upsample {self.upsamples})")
        box = max(boxes, key=lambda rect: rect.area())
        return dlib.get_face_chip(rgb, predictor(rgb, box), size=CHIP, padding=PADDING)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        chip = self.chip(image)
        descriptor = self._load()[2].compute_face_descriptor(chip)
        return np.asarray(descriptor, dtype=np.float32)

    def describe(self) -> dict:
        return {
            "colour_order": "RGB (converted from cv2's BGR)",
            "aligner": f"dlib.get_frontal_face_detector (HOG, upsample {self.upsamples[0]}, then "
            f"{self.upsamples[1:]} if no face), largest face, {Path(self.landmarks_path).name}, "
            f"dlib.get_face_chip(size={CHIP}, padding={PADDING})",
            "chip": f"{CHIP}x{CHIP}x3 RGB uint8",
            "embed": "face_recognition_model_v1.compute_face_descriptor(chip), num_jitters=0, "
            "run in the reader workers",
        }


def pass_through(batch: torch.Tensor) -> torch.Tensor:
    """The descriptors were computed by the preprocessor (in the workers)."""
    return batch.float()


@register(
    "dlib_resnet",
    dim=128,
    input_shape=(CHIP, CHIP, 3),  # the aligned chip the net sees (the record's (128,) is what embed gets)
    default_weights=f"pip package face-recognition-models ({RECOGNIZER_FILE})",
    available=lambda: package_file_available(REQUIREMENT, RECOGNIZER_FILE),
)
def load(*, weights: str | None, device: torch.device, precision: str) -> Backbone:
    check_packaged_load("dlib_resnet", "dlib", weights=weights, device=device, precision=precision)
    recognizer = (Path(weights) if weights is not None
                  else package_model_file("dlib_resnet", REQUIREMENT, RECOGNIZER_FILE))
    landmarks = package_model_file("dlib_resnet", REQUIREMENT, LANDMARKS_FILE)
    net = DlibFaceNet(str(recognizer), str(landmarks))
    return Backbone(
        name="dlib_resnet", dim=128, input_shape=(128,), preprocessor=net, embed=pass_through,
        device=torch.device("cpu"), uses_torch_device=False,
        metadata=packaged_metadata(recognizer=recognizer, aligner=landmarks, preprocessing=net.describe(),
                                   input_shape=(128,), packages=("dlib-bin", "face-recognition-models",
                                                                 "opencv-python-headless")),
        input_dtype="float32",
    )
