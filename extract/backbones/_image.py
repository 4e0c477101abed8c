"""Picklable OpenCV preprocessors of the face backbones (BGR uint8 HxWx3 image -> uint8 HxWx3 chip);
``describe()`` gives the recipe stored in the backbone metadata.

The geometric part (alignment, colour order) runs in the DataLoader workers and stays uint8; the
normalisation runs in ``embed`` on the model's device: uint8 chips are a quarter of the bytes of float32
ones through the worker queues, pinned memory and the host-to-GPU copy, and NHWC batches become
channels_last tensors for free.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from extract.align import FaceTemplate
from extract.catalog import BackboneSpec
from extract.detect import DETECTOR_FILE, SCORE_THRESHOLD, FaceDetector
from extract.face_row import landmarks_of


def check_bgr(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is what ``cv2.imread`` returns for a colour image."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected a BGR uint8 HxWx3 image, got dtype {image.dtype} shape {image.shape}"
        )


@dataclass(frozen=True)
class AlignedCrop:
    """A face backbone's input from one face row: the image warped so the 5 landmarks land on
    ``template`` (`extract.faces.FaceTemplate`), in RGB (or BGR for OpenCV nets), uint8; the
    normalisation (x / 255 - mean) / std (mean, std in [0, 1] units) runs on the model's device."""

    template: FaceTemplate
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgb: bool = True

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per channel on 0..255 values."""
        return tuple(255.0 * m for m in self.mean), tuple(255.0 * s for s in self.std)

    def __call__(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        chip = self.template.warp(image, landmarks_of(face))
        return np.ascontiguousarray(cv2.cvtColor(chip, cv2.COLOR_BGR2RGB) if self.rgb else chip)

    def describe(self) -> dict:
        return {"colour_order": "RGB (converted from cv2's BGR)" if self.rgb else "BGR",
                "face_template": self.template.describe(), "scale": "1/255", "mean_rgb": list(self.mean),
                "std_rgb": list(self.std),
                "layout": "uint8 HWC chip in the workers; normalised to float on the model's device"}


def aligned_crop(spec: BackboneSpec) -> AlignedCrop:
    """The `AlignedCrop` of a backbone whose spec cuts its input with the 5-landmark template."""
    crop = spec.input
    return AlignedCrop(FaceTemplate(crop.size, margin=crop.margin), mean=crop.mean, std=crop.std, rgb=crop.rgb)


class FacePreprocessor:
    """Picklable preprocessor of a face backbone: ``align(image, face)`` cuts its input from a face row already
    found (the extract run's one detection per image); called on a lone image, it detects first (YuNet, the
    largest face; the detector is made lazily per process)."""

    def __init__(self, aligner, *, detector: FaceDetector | None = None) -> None:
        self.aligner = aligner
        self._detector = detector

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = FaceDetector()
        return self._detector

    def __call__(self, image: np.ndarray) -> np.ndarray:
        check_bgr(image)
        return self.aligner(image, self.detector.largest(image))

    def align(self, image: np.ndarray, face: np.ndarray) -> np.ndarray:
        check_bgr(image)
        return self.aligner(image, face)

    def with_flip(self) -> FacePreprocessor | None:
        """The same preprocessor averaging over a mirrored chip when the aligner computes the
        embedding itself (dlib), else None (the embed step then averages)."""
        flipped = getattr(self.aligner, "with_flip", None)
        return FacePreprocessor(flipped(), detector=self._detector) if flipped else None

    def describe(self) -> dict:
        return {"face_detection": "one YuNet detection per image (see the store's faces entry; "
                f"alone: {DETECTOR_FILE}, score >= {SCORE_THRESHOLD}, largest face)",
                **self.aligner.describe()}
