"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat`` from pip package
face-recognition-models, run by dlib-bin): 128-d.

Alignment: the face front end's YuNet box stands in for dlib's HOG detector (whose pass cost most of the
time), converted to the box HOG would give (`DLIB_BOX`), then ``shape_predictor_5_face_landmarks`` (trained
on HOG boxes) and ``dlib.get_face_chip(rgb, shape, size=150, padding=0.25)``: an RGB uint8 chip.

Two engines (`dlib_torch.dlib_engine`) cut the same chip and record the same preprocessing, so either resumes
the other's store (the ``implementation`` metadata key says which ran):
- dlib: ``compute_face_descriptor(chip)`` runs in the preprocessor, i.e. in the DataLoader workers: dlib's
  net holds the GIL and runs on one thread, so only N workers use N cores. ``embed`` hands the rows on.
- torch: the workers only cut the chip (cheap); the main process runs `dlib_torch.DlibResNet` batched.
"""

from __future__ import annotations

import copy
from pathlib import Path

import cv2
import numpy as np
import torch

from extract.catalog import BUILTIN, BackboneSpec
from extract.face_row import BOX

from ._image import FacePreprocessor
from ._registry import Backbone
from ._weights import default_weights_file, package_model_file, packaged_device, weights_identity
from ._torchnet import DeviceEmbed
from .dlib_torch import dlib_engine, dlib_resnet_module


SPEC = BUILTIN["dlib_resnet"]
REQUIREMENT = SPEC.weights.requirement  # ships the recognizer (SPEC.weights.file) and LANDMARKS_FILE
LANDMARKS_FILE = "shape_predictor_5_face_landmarks.dat"
CHIP, PADDING = SPEC.input.size, SPEC.input.padding  # the aligned chip the net sees
# HOG box relative to YuNet's (x, y, w, h): centre shifted by (dx * w, dy * h), size (sw * w, sh * h).
# Medians over 296 CelebA aligned images (MAD 0.03-0.06); how: docs/backbones.md.
DLIB_BOX = {"dx": -0.0142, "dy": 0.0646, "sw": 1.0406, "sh": 0.7717}


def dlib_box(face: np.ndarray) -> tuple[int, int, int, int]:
    """(left, top, right, bottom) of the box dlib's HOG detector would give for a YuNet face row."""
    x, y, w, h = (float(v) for v in face[BOX])
    cx, cy = x + w / 2 + DLIB_BOX["dx"] * w, y + h / 2 + DLIB_BOX["dy"] * h
    half_w, half_h = DLIB_BOX["sw"] * w / 2, DLIB_BOX["sh"] * h / 2
    return round(cx - half_w), round(cy - half_h), round(cx + half_w), round(cy + half_h)


class DlibChip:
    """Picklable aligner of the torch engine: (BGR image, face row) -> the ``size`` x ``size`` x 3 RGB uint8 chip
    (by default the one `DlibFaceNet` would embed; `dlib_cydral` cuts others). ``flip`` only changes the record
    (the embed averages: `with_tta`). The shape predictor is created lazily in each process, never pickled."""

    def __init__(self, landmarks_path: str, *, size: int = CHIP, padding: float = PADDING) -> None:
        self.landmarks_path = landmarks_path
        self.size, self.padding = size, padding
        self.flip = False
        self._predictor = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_predictor": None}

    def __call__(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        return self.chip_rgb(cv2.cvtColor(image, cv2.COLOR_BGR2RGB), face)  # dlib's nets: RGB

    def chip_rgb(self, rgb: np.ndarray, face: np.ndarray) -> np.ndarray:
        """The chip of an RGB uint8 image (also the device front end's host copy of its decoded image)."""
        import dlib

        if self._predictor is None:
            self._predictor = dlib.shape_predictor(self.landmarks_path)
        shape = self._predictor(rgb, dlib.rectangle(*dlib_box(face)))
        return dlib.get_face_chip(rgb, shape, size=self.size, padding=self.padding)

    def with_flip(self) -> DlibChip:
        flipped = copy.copy(self)  # through __getstate__: without the predictor (or dlib's net)
        flipped.flip = True
        return flipped

    def describe(self) -> dict:
        """The preprocessing record of both engines (a resume key: the text stays as the dlib engine's first
        stores wrote it, so either engine resumes the other's store)."""
        return {
            "colour_order": "RGB (converted from cv2's BGR)",
            "aligner": f"YuNet face box -> dlib HOG-style box (DLIB_BOX {DLIB_BOX}), "
            f"{Path(self.landmarks_path).name}, dlib.get_face_chip(size={CHIP}, padding={PADDING})",
            "chip": f"{CHIP}x{CHIP}x3 RGB uint8",
            "embed": "face_recognition_model_v1.compute_face_descriptor(chip), num_jitters=0, "
            "run in the reader workers" + (", averaged with the mirrored chip's" if self.flip else ""),
        }


class DlibFaceNet(DlibChip):
    """Picklable aligner of the dlib engine: (BGR image, face row) -> 128-d float32 descriptor of `DlibChip`'s
    chip, averaged with its mirror image's when ``flip``. The net, like the shape predictor, is made lazily."""

    def __init__(self, recognizer_path: str, landmarks_path: str) -> None:
        super().__init__(landmarks_path)
        self.recognizer_path = recognizer_path
        self._net = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_net": None}

    def __call__(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        import dlib

        chip = super().__call__(image, face)
        if self._net is None:
            self._net = dlib.face_recognition_model_v1(self.recognizer_path)
        descriptor = np.asarray(self._net.compute_face_descriptor(chip), dtype=np.float32)
        if self.flip:
            mirrored = np.ascontiguousarray(chip[:, ::-1])
            descriptor = (descriptor + np.asarray(self._net.compute_face_descriptor(mirrored), dtype=np.float32)) / 2
        return descriptor


def load(*, spec: BackboneSpec, weights: str | None, device: torch.device, precision: str) -> Backbone:
    """The spec's input is the chip the net sees; the dlib engine's record takes (dim,), what embed gets."""
    torch_engine = dlib_engine(device) == "torch"
    device, precision = packaged_device(spec.name, "" if torch_engine else "dlib", weights=weights, device=device,
                                        precision=precision)
    recognizer = Path(weights) if weights is not None else default_weights_file(spec)
    landmarks = package_model_file(spec.name, REQUIREMENT, LANDMARKS_FILE)
    if torch_engine:
        module = dlib_resnet_module(recognizer)  # WeightsUnavailable naming the file if it is not the net
        embed = DeviceEmbed(module, device=device, precision=precision)  # `DlibResNet` takes the uint8 chips
        aligner, input_shape = DlibChip(str(landmarks)), spec.input_shape
        implementation = "torch (dlib_torch.DlibResNet, weights read from the .dat)"
    else:
        # the preprocessor computed the descriptors (in the workers): embed only hands them on
        aligner, embed, input_shape = DlibFaceNet(str(recognizer), str(landmarks)), torch.Tensor.float, (spec.dim,)
        implementation = "dlib (face_recognition_model_v1, in the reader workers)"
    preprocessor = FacePreprocessor(aligner)
    metadata = spec.store_metadata(weights_identity(recognizer, aligner=landmarks), preprocessor.describe(),
                                   precision=precision, input_shape=input_shape,
                                   packages=("dlib-bin", "face-recognition-models", "opencv-python-headless"),
                                   implementation=implementation)
    return Backbone(spec=spec, input_shape=input_shape, preprocessor=preprocessor, embed=embed, device=device,
                    uses_torch_device=torch_engine, runs_in_workers=not torch_engine, metadata=metadata,
                    input_dtype="uint8" if torch_engine else "float32")
