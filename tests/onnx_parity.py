"""Compare the torch SFace/YuNet (`extract.backbones.onnx_nets`) with OpenCV's DNN on the same inputs.

A checking tool, not part of the product: used by tests/test_onnx_nets.py (64 images, CI) and
scripts/bench/check_parity.py (all 6,000 CelebA images).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import torch

from extract.align import ARCFACE_112, similarity_transform
from extract.backbones.onnx_nets import YuNet, sface_module
from extract.backbones.sface import CHIP
from extract.face_row import BOX, LANDMARKS, SCORE, landmarks_of


@dataclass
class DetectionParity:
    images: int
    faces: int
    count_mismatches: int  # images where the two detectors return a different number of faces
    max_landmark_error_px: float
    max_box_error_px: float
    max_score_error: float


def bgr_batch(images: list[np.ndarray]) -> torch.Tensor:
    """Same-size BGR uint8 HxWx3 images -> (B, 3, H, W) float 0..255 (FaceDetectorYN's blob)."""
    return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()


def yunet_parity(images: list[np.ndarray], detector_path: str, *, score_threshold: float,
                 batch_size: int = 64, device: str = "cpu") -> DetectionParity:
    """Torch YuNet (batched by image size, on ``device``) vs cv2.FaceDetectorYN (one image at a time)."""
    torch_net = YuNet(detector_path, score_threshold=score_threshold).to(device)
    theirs = [_opencv_detect(image, detector_path, score_threshold) for image in images]
    ours: list[np.ndarray | None] = [None] * len(images)
    for indices in _same_size_batches(images, batch_size):
        for index, faces in zip(indices, torch_net.detect(bgr_batch([images[i] for i in indices]).to(device))):
            ours[index] = faces
    mismatches, landmark, box, score, faces = 0, 0.0, 0.0, 0.0, 0
    for a, b in zip(ours, theirs):
        if len(a) != len(b):
            mismatches += 1
            continue
        faces += len(a)
        if len(a):
            landmark = max(landmark, float(np.abs(a[:, LANDMARKS] - b[:, LANDMARKS]).max()))
            box = max(box, float(np.abs(a[:, BOX] - b[:, BOX]).max()))
            score = max(score, float(np.abs(a[:, SCORE] - b[:, SCORE]).max()))
    return DetectionParity(len(images), faces, mismatches, landmark, box, score)


def _opencv_detect(image: np.ndarray, detector_path: str, score_threshold: float) -> np.ndarray:
    detector = cv2.FaceDetectorYN.create(detector_path, "", (image.shape[1], image.shape[0]), score_threshold)
    faces = detector.detect(image)[1]
    return np.zeros((0, 15), np.float32) if faces is None else faces


def _same_size_batches(images: list[np.ndarray], batch_size: int) -> list[list[int]]:
    by_size: dict[tuple, list[int]] = {}
    for index, image in enumerate(images):
        by_size.setdefault(image.shape, []).append(index)
    return [indices[i:i + batch_size] for indices in by_size.values()
            for i in range(0, len(indices), batch_size)]


def sface_cosines(chips: list[np.ndarray], recognizer_path: str, *, batch_size: int = 64,
                  device: str = "cpu") -> np.ndarray:
    """Per chip, the cosine between torch SFace's (on ``device``) and OpenCV DNN's embedding of one blob."""
    module = sface_module(recognizer_path).to(device)
    net = cv2.dnn.readNetFromONNX(recognizer_path)
    cosines = []
    for start in range(0, len(chips), batch_size):
        blob = cv2.dnn.blobFromImages(chips[start:start + batch_size], 1.0, (CHIP, CHIP), (0, 0, 0),
                                      swapRB=True, crop=False)
        net.setInput(blob, "data")
        reference = np.asarray(net.forward()).reshape(len(blob), -1)
        with torch.inference_mode():
            ours = module(torch.from_numpy(blob).to(device)).cpu().numpy()
        cosines.append((ours * reference).sum(1) / np.linalg.norm(ours, axis=1) / np.linalg.norm(reference, axis=1))
    return np.concatenate(cosines)


def largest_face_matrix(faces: np.ndarray) -> np.ndarray | None:
    """The 2x3 similarity taking the largest face's 5 landmarks onto the 112x112 ArcFace template
    (FaceRecognizerSF's alignCrop); None when there is no face."""
    if faces is None or len(faces) == 0:
        return None
    largest = faces[np.argmax(faces[:, 2] * faces[:, 3])]
    return similarity_transform(landmarks_of(largest), ARCFACE_112)


def opencv_chip(image: np.ndarray, detector_path: str, *, score_threshold: float = 0.6) -> np.ndarray | None:
    """OpenCV's own path: cv2.FaceDetectorYN, largest face, cv2.warpAffine -> 112x112 BGR chip (None: no face)."""
    matrix = largest_face_matrix(_opencv_detect(image, detector_path, score_threshold))
    return None if matrix is None else cv2.warpAffine(image, matrix, (CHIP, CHIP), flags=cv2.INTER_LINEAR)
