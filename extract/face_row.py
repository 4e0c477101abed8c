"""The face row: FACE_DIM float32 values that stand for one face, in the coordinates of the ORIGINAL
image (full resolution, whatever reduction it was decoded at). The store's faces entry holds one per
image, so every backbone of a run warps from the same detection. Its columns, named here and nowhere
else:

    BOX        x, y, w, h
    LANDMARKS  x0, y0, ..., x4, y4: right eye, left eye, nose tip, right and left mouth corner (as
               YuNet orders them: image left to right)
    SCORE      the detector's score (0 for a template row)
    SOURCE     SOURCE_DETECTED, or SOURCE_TEMPLATE: an aligned image's known landmarks, where the
               detector failed

YuNet's own output rows put box, landmarks and score in the same columns (and have no SOURCE).
"""
from __future__ import annotations

import numpy as np

FACE_DIM = 16
BOX = slice(0, 4)
LANDMARKS = slice(4, 14)
POSITIONS = slice(0, 14)  # box and landmarks: the pixel coordinates, which scale with the image
SCORE = 14
SOURCE = 15
SOURCE_DETECTED, SOURCE_TEMPLATE = 1.0, 2.0


def face_row(box, landmarks, score: float, source: float) -> np.ndarray:
    """One row from its fields."""
    row = np.empty(FACE_DIM, dtype=np.float32)
    row[BOX], row[LANDMARKS], row[SCORE], row[SOURCE] = box, np.asarray(landmarks).reshape(10), score, source
    return row


def landmarks_of(row: np.ndarray) -> np.ndarray:
    """(5, 2) float64 landmarks of a face row (or of a YuNet output row)."""
    return np.asarray(row[LANDMARKS], dtype=np.float64).reshape(5, 2)


def scaled(row: np.ndarray, scale: float) -> np.ndarray:
    """The row in the coordinates of an image decoded at `scale` (box and landmarks scaled)."""
    out = np.array(row, dtype=np.float32)
    out[POSITIONS] *= scale
    return out


def template_row(size: tuple[int, int], landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A face row for an aligned dataset's known landmarks, scaled from `size` to `image_size` (w, h)."""
    points = landmarks * [image_size[0] / size[0], image_size[1] / size[1]]
    eye = np.linalg.norm(points[1] - points[0])
    centre = points.mean(0)
    box = (centre[0] - 1.1 * eye, centre[1] - 1.3 * eye, 2.2 * eye, 2.6 * eye)  # roughly YuNet's box
    return face_row(box, points, 0.0, SOURCE_TEMPLATE)
