"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat`` from pip package
face-recognition-models, run by dlib-bin): 128-d.

Alignment: the face front end's YuNet box (`extract.faces`, one detection per image shared by every
backbone) stands in for dlib's HOG detector, whose pass cost most of the time: the box is converted to
the box HOG would give (DLIB_BOX, calibrated on CelebA by scripts/calibrate_faces.py), then
``shape_predictor_5_face_landmarks`` (trained on HOG boxes), ``dlib.get_face_chip(rgb, shape,
size=150, padding=0.25)``, an RGB uint8 chip, and ``compute_face_descriptor(chip)``.

The whole net runs in the preprocessor, i.e. in the DataLoader worker processes: dlib's net holds
the GIL and runs on one thread, so in the main process it would use one core however many there
are, while in N workers it uses N. ``embed`` then only hands the descriptors on.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from extract.catalog import BUILTIN

from ._image import FacePreprocessor
from ._registry import Backbone, register
from ._weights import (check_packaged_load, default_weights_file, package_model_file,
                       packaged_metadata)


FACTS = BUILTIN["dlib_resnet"]
REQUIREMENT = FACTS.requirement  # ships the recognizer (FACTS.weights_file) and LANDMARKS_FILE
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP = FACTS.input_shape[0]  # the aligned chip the net sees
PADDING = 0.25
# HOG box relative to YuNet's (x, y, w, h): centre shifted by (dx * w, dy * h), size (sw * w, sh * h).
# Medians over 296 CelebA aligned images (MAD 0.03-0.06): scripts/calibrate_faces.py.
DLIB_BOX = {"dx": -0.0142, "dy": 0.0646, "sw": 1.0406, "sh": 0.7717}


def dlib_box(face: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the box dlib's HOG detector would give for a YuNet face row."""
    x, y, w, h = (float(v) for v in face[:4])
    cx, cy = x + w / 2 + DLIB_BOX["dx"] * w, y + h / 2 + DLIB_BOX["dy"] * h
    half_w, half_h = DLIB_BOX["sw"] * w / 2, DLIB_BOX["sh"] * h / 2
    return round(cx - half_w), round(cy - half_h), round(cx + half_w), round(cy + half_h)


class DlibFaceNet:
    """Picklable aligner of a `FacePreprocessor`: (BGR image, face row) -> 128-d float32 descriptor.

    The shape predictor and recognition net are created lazily in each process and never pickled.
    ``flip``: average the descriptors of the chip and its mirror image (``--tta flip``).
    """

    def __init__(self, recognizer_path: str, landmarks_path: str, *, flip: bool = False) -> None:
        self.recognizer_path = recognizer_path
        self.landmarks_path = landmarks_path
        self.flip = flip
        self._models = None
        self.output_shape = (128,)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_models": None}

    def _load(self):
        import dlib

        if self._models is None:
            self._models = (dlib.shape_predictor(self.landmarks_path),
                            dlib.face_recognition_model_v1(self.recognizer_path))
        return self._models

    def chip(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        """The aligned 150x150x3 RGB uint8 face chip of the face."""
        import dlib

        predictor, _ = self._load()
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)  # dlib's nets were trained on RGB
        return dlib.get_face_chip(rgb, predictor(rgb, dlib.rectangle(*dlib_box(face))), size=CHIP,
                                  padding=PADDING)

    def __call__(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        chip = self.chip(image, face)
        net = self._load()[1]
        descriptor = np.asarray(net.compute_face_descriptor(chip), dtype=np.float32)
        if self.flip:
            mirrored = np.ascontiguousarray(chip[:, ::-1])
            descriptor = (descriptor + np.asarray(net.compute_face_descriptor(mirrored), dtype=np.float32)) / 2
        return descriptor

    def with_flip(self) -> DlibFaceNet:
        return DlibFaceNet(self.recognizer_path, self.landmarks_path, flip=True)

    def describe(self) -> dict:
        return {
            "colour_order": "RGB (converted from cv2's BGR)",
            "aligner": f"YuNet face box -> dlib HOG-style box (DLIB_BOX {DLIB_BOX}), "
            f"{Path(self.landmarks_path).name}, dlib.get_face_chip(size={CHIP}, padding={PADDING})",
            "chip": f"{CHIP}x{CHIP}x3 RGB uint8",
            "embed": "face_recognition_model_v1.compute_face_descriptor(chip), num_jitters=0, "
            "run in the reader workers" + (", averaged with the mirrored chip's" if self.flip else ""),
        }


def pass_through(batch: torch.Tensor) -> torch.Tensor:
    """The descriptors were computed by the preprocessor (in the workers)."""
    return batch.float()


@register(FACTS.name)  # catalog input: the chip the net sees (the record's (dim,) is what embed gets)
def load(*, weights: str | None, device: torch.device, precision: str) -> Backbone:
    check_packaged_load(FACTS.name, "dlib", weights=weights, device=device, precision=precision)
    recognizer = (Path(weights) if weights is not None
                  else default_weights_file(FACTS))
    landmarks = package_model_file(FACTS.name, REQUIREMENT, LANDMARKS_FILE)
    preprocessor = FacePreprocessor(DlibFaceNet(str(recognizer), str(landmarks)))
    return Backbone(
        name=FACTS.name, dim=FACTS.dim, input_shape=(FACTS.dim,), preprocessor=preprocessor, embed=pass_through,
        device=torch.device("cpu"), uses_torch_device=False, runs_in_workers=True,
        metadata={**packaged_metadata(recognizer=recognizer, aligner=landmarks,
                                      preprocessing=preprocessor.describe(), input_shape=(FACTS.dim,), dim=FACTS.dim,
                                      packages=("dlib-bin", "face-recognition-models", "opencv-python-headless")),
                  "normalisation": "l2"},
        input_dtype="float32",
    )
