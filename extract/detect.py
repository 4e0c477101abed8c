"""Face detection: one YuNet pass per image gives the face row (`extract.face_row`) that every face
backbone cuts its chip from; an aligned dataset's known landmarks check the detections and replace the
failed ones. The detector runs on a copy whose longer side is at most DETECT_MAX_SIDE, landmarks mapped
back, and refined in a canonical crop (`extract.align.CANONICAL`)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from extract.align import CANONICAL
from extract.catalog import BUILTIN
from extract.decode import DECODE_MAX_PIXELS, MAX_PIXELS
from extract.face_row import (BOX, FACE_DIM, SCORE, SOURCE, SOURCE_DETECTED, SOURCE_TEMPLATE,
                              face_row, landmarks_of, template_row)

DETECTOR_REQUIREMENT = BUILTIN["sface"].weights.requirement  # YuNet ships with SFace
DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SCORE_THRESHOLD = 0.6            # YuNet's own default, as sface used before
DETECT_MAX_SIDE = 1024           # detector input bound: faces down to ~1/40 of the photo still found
REFINE_STEPS = 2

# Where YuNet puts the 5 landmarks in CelebA's img_align_celeba images (178x218): the median over
# 600 images of the shared subset (every 10th file, largest face, none missed; MAD 1.2-3.9 px); see
# docs/backbones.md. Used to check detections on aligned images and as their fallback.
CELEBA_ALIGNED_SIZE = (178, 218)
CELEBA_ALIGNED_LANDMARKS = np.array(
    [[69.11, 112.72], [108.61, 113.04], [88.35, 135.40], [72.09, 151.71], [105.45, 152.48]],
    dtype=np.float64,
)
# A detection on an aligned image counts as the known face when its landmarks lie within this
# fraction of the template's eye distance (mean over the 5 points); else the template is used.
TEMPLATE_TOLERANCE = 0.25


class NoFaceFound(Exception):
    """The face detector (or a backbone's own aligner) finds no face in the image."""


class FaceDetector:
    """Picklable YuNet wrapper: BGR image -> (K, FACE_DIM) face rows in image coordinates, largest
    first. The OpenCV detector is created lazily in each process and never pickled."""

    def __init__(self) -> None:
        self.path, self._detector = str(detector_path()), None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}

    def faces(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        shrink = min(1.0, DETECT_MAX_SIDE / max(height, width))
        small = image if shrink == 1.0 else cv2.resize(
            image, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA)
        if self._detector is None:
            self._detector = cv2.FaceDetectorYN.create(self.path, "", (320, 320), SCORE_THRESHOLD)
        self._detector.setInputSize((small.shape[1], small.shape[0]))
        found = self._detector.detect(small)[1]
        if found is None or len(found) == 0:
            return np.empty((0, FACE_DIM), dtype=np.float32)
        found = found[np.argsort(-(found[:, 2] * found[:, 3]), kind="stable")]
        sx, sy = width / small.shape[1], height / small.shape[0]  # exact inverse of the resize
        rows = [face_row(f[BOX] * [sx, sy, sx, sy], self.refine(image, landmarks_of(f) * [sx, sy]),
                         f[SCORE], SOURCE_DETECTED) for f in found]
        return np.stack(rows)

    def refine(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """Landmarks re-detected REFINE_STEPS times in a canonical crop (the face warped to
        CANONICAL), mapped back: YuNet's landmarks move by up to ~6 px with the face's scale and
        place in the photo (its anchor grid); in the same canonical view they agree within ~2 px."""
        points = np.asarray(landmarks, dtype=np.float64)
        for _ in range(REFINE_STEPS):
            crop = CANONICAL.warp(image, points)
            self._detector.setInputSize((CANONICAL.size, CANONICAL.size))
            found = self._detector.detect(crop)[1]
            if found is None or len(found) == 0:
                break
            centre = CANONICAL.points.mean(0)
            nearest = found[np.argmin([np.linalg.norm(landmarks_of(f).mean(0) - centre) for f in found])]
            inverse = cv2.invertAffineTransform(CANONICAL.matrix(points))
            points = landmarks_of(nearest) @ inverse[:, :2].T + inverse[:, 2]
        return points

    def largest(self, image: np.ndarray) -> np.ndarray:
        faces = self.faces(image)
        if not len(faces):
            raise NoFaceFound(f"YuNet found no face (score >= {SCORE_THRESHOLD})")
        return faces[0]

    def describe(self) -> dict:
        return {"detector": f"YuNet ({Path(self.path).name})", "score_threshold": SCORE_THRESHOLD,
                "landmark_refinement": f"{REFINE_STEPS} re-detections in a canonical crop {CANONICAL.describe()}",
                "detect_max_side": DETECT_MAX_SIDE, "choice": "largest face (box area)",
                "decode": {"strict_jpeg": "end-of-image marker required, in-memory decode must not fail",
                           "reduced_above_pixels": DECODE_MAX_PIXELS, "too_large_above_pixels": MAX_PIXELS}}


def detector_path() -> Path:
    from extract.backbones._weights import package_model_file  # lazy: the backbones import this module

    return package_model_file("faces", DETECTOR_REQUIREMENT, DETECTOR_FILE)


@dataclass(frozen=True)
class Alignment:
    """What a dataset says about where its faces are: "wild" (detect, largest face) or an aligned
    release whose known landmarks (in an image of `size`) check detections and replace failed ones."""

    kind: str = "wild"
    size: tuple[int, int] | None = None
    landmarks: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def from_info(cls, info: dict | None) -> Alignment:
        """From a dataset's `alignment` record: {"kind": "wild"} or a known aligned release."""
        kind = (info or {}).get("kind", "wild")
        if kind not in KNOWN_ALIGNMENTS:
            raise ValueError(f"unknown face alignment {kind!r}; valid: {', '.join(KNOWN_ALIGNMENTS)}")
        return KNOWN_ALIGNMENTS[kind]


KNOWN_ALIGNMENTS = {
    "wild": Alignment(),
    "celeba_aligned": Alignment("celeba_aligned", CELEBA_ALIGNED_SIZE,
                                tuple(map(tuple, CELEBA_ALIGNED_LANDMARKS.tolist()))),
}


class FaceLocator:
    """Picklable: BGR image -> the one face row a dataset image is represented by. Wild images: the largest
    detected face. Aligned images: the detected face nearest the known landmarks if within
    TEMPLATE_TOLERANCE, else the template itself (source 2), never NoFace."""

    def __init__(self, detector: FaceDetector, alignment: Alignment = Alignment()) -> None:
        self.detector, self.alignment = detector, alignment

    def __call__(self, image: np.ndarray) -> np.ndarray:
        if self.alignment.kind == "wild":
            return self.detector.largest(image)
        faces = self.detector.faces(image)
        template = template_row(self.alignment.size, np.array(self.alignment.landmarks),
                                (image.shape[1], image.shape[0]))
        if len(faces):
            known = landmarks_of(template)
            eye = np.linalg.norm(known[1] - known[0])
            distance = [np.linalg.norm(landmarks_of(f) - known, axis=1).mean() / eye for f in faces]
            best = int(np.argmin(distance))
            if distance[best] <= TEMPLATE_TOLERANCE:
                return faces[best]
        return template

    def describe(self) -> dict:
        info = {**self.detector.describe(), "alignment": self.alignment.kind}
        if self.alignment.kind != "wild":
            info.update(template_size=list(self.alignment.size),
                        template_landmarks=[list(p) for p in self.alignment.landmarks],
                        template_tolerance=f"{TEMPLATE_TOLERANCE} x eye distance, mean over 5 points",
                        choice="detected face nearest the template, else the template (source 2)")
        return info


def template_check(rows: np.ndarray, status: np.ndarray, alignment: Alignment,
                   sizes: dict[int, tuple[int, int]]) -> dict:
    """How a detection pass on an aligned dataset agrees with its known template: rows that fell back to
    it (source 2), and how far detected landmarks lie from it (mean over the 5 points, in pixels and in eye
    distances) for the sample of detected rows in ``sizes`` (row -> image (width, height))."""
    valid = status == 1  # Status.OK; the store's enum is not imported here (this module is cv2/numpy)
    pixels, eyes = [], []
    for row, size in sizes.items():
        known = landmarks_of(template_row(alignment.size, np.array(alignment.landmarks), size))
        distance = float(np.linalg.norm(landmarks_of(rows[row]) - known, axis=1).mean())
        pixels.append(distance)
        eyes.append(distance / float(np.linalg.norm(known[1] - known[0])))

    def spread(values: list[float]) -> dict:
        if not values:
            return {"median": None, "p95": None}
        return {"median": round(float(np.median(values)), 3), "p95": round(float(np.percentile(values, 95)), 3)}

    return {"alignment": alignment.kind, "valid_rows": int(valid.sum()),
            "template_fallback_rows": int((valid & (rows[:, SOURCE] == SOURCE_TEMPLATE)).sum()),
            "detected_rows": int((valid & (rows[:, SOURCE] == SOURCE_DETECTED)).sum()), "checked_sample": len(sizes),
            "landmark_distance_px": spread(pixels), "landmark_distance_eye": spread(eyes),
            "tolerance_eye": TEMPLATE_TOLERANCE}
