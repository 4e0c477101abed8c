"""Face templates: where a backbone wants the 5 landmarks in its square input, and the similarity warp
that puts them there (the last step of the face front end, `extract.faces`)."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np


# ArcFace 5-point template for 112x112 crops, as in OpenCV's FaceRecognizerSF::alignCrop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)


def similarity_transform(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """2x3 least-squares similarity (rotation, uniform scale, translation) mapping src onto dst
    (Umeyama 1991, the estimate OpenCV's FaceRecognizerSF::alignCrop computes)."""
    src_mean, dst_mean = src.mean(0), dst.mean(0)
    src_c, dst_c = src - src_mean, dst - dst_mean
    covariance = dst_c.T @ src_c / len(src)
    u, s, vt = np.linalg.svd(covariance)
    d = np.array([1.0, -1.0 if np.linalg.det(covariance) < 0 else 1.0])
    rotation = u @ np.diag(d) @ vt
    scale = (s * d).sum() / src_c.var(0).sum()
    return np.column_stack((scale * rotation, dst_mean - scale * rotation @ src_mean))


@dataclass(frozen=True)
class FaceTemplate:
    """Where a backbone wants the 5 landmarks in its square input of `size` pixels: the ArcFace
    112x112 template with `margin` (fraction of 112 added on every side), scaled to `size`."""

    size: int
    margin: float = 0.0

    @property
    def points(self) -> np.ndarray:
        frame = 112.0 * (1 + 2 * self.margin)
        return (ARCFACE_112 + 112.0 * self.margin) * (self.size / frame)

    def matrix(self, landmarks: np.ndarray) -> np.ndarray:
        return similarity_transform(np.asarray(landmarks, dtype=np.float64), self.points)

    def warp(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """The image warped so the landmarks land on the template (INTER_LINEAR, black outside); a warp
        shrinking by more than 2x resizes by INTER_AREA first, so a large face is not aliased."""
        matrix = self.matrix(landmarks)
        shrunk = self.shrunk_size(matrix, image.shape[1], image.shape[0])
        if shrunk is not None:
            landmarks = np.asarray(landmarks) * [shrunk[0] / image.shape[1], shrunk[1] / image.shape[0]]
            image = cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)
            matrix = self.matrix(landmarks)
        return cv2.warpAffine(image, matrix, (self.size, self.size), flags=cv2.INTER_LINEAR)

    @staticmethod
    def shrunk_size(matrix: np.ndarray, width: int, height: int) -> tuple[int, int] | None:
        """(width, height) to resize the image to (INTER_AREA) before a warp by ``matrix`` that shrinks by
        more than 2x, so the warp itself shrinks by about 2x only; None when no resize is needed."""
        scale = float(np.sqrt(abs(np.linalg.det(matrix[:, :2]))))
        if scale >= 0.5:
            return None
        pre = 0.5 / scale
        return max(1, round(width / pre)), max(1, round(height / pre))

    def describe(self) -> dict:
        return {"template": "ArcFace 5-point (112x112) with margin, similarity (Umeyama) warp",
                "size": self.size, "margin": self.margin, "points": np.round(self.points, 4).tolist()}


# The view in which landmarks are refined: the face at about a third of a 224x224 crop.
CANONICAL = FaceTemplate(224, margin=0.6)
