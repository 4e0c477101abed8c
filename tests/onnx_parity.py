"""Compare the torch SFace (`extract.backbones.onnx_nets`) and YuNet (`YuNet`, here) with OpenCV's DNN on the
same inputs.

A checking tool, not part of the product: used by tests/test_onnx_nets.py (64 images, CI),
scripts/bench/check_parity.py (all 6,000 CelebA images) and scripts/bench/bench_face_gpu.py.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from extract.align import ARCFACE_112, similarity_transform
from extract.backbones.onnx_nets import OnnxModule, SFace
from extract.backbones.sface import CHIP
from extract.face_row import BOX, LANDMARKS, SCORE, landmarks_of

YUNET_STRIDES = (8, 16, 32)
YUNET_DIVISOR = 32


def _resize(x, roi=None, scales=None, sizes=None, *, mode=b"nearest", coordinate_transformation_mode=b"",
            nearest_mode=b"", **_):
    # YuNet's FPN upsamples x2 (nearest, asymmetric, floor = torch "nearest"); the graph stores sizes
    # for 640x640, so the factor is used, which is what keeps any padded input size working.
    if mode != b"nearest" or coordinate_transformation_mode != b"asymmetric" or nearest_mode != b"floor":
        raise ValueError(f"Resize mode {mode} / {coordinate_transformation_mode} is not supported")
    return F.interpolate(x, scale_factor=2.0, mode="nearest")


def _reshape(x, shape, **_):
    # Head outputs are reshaped to (1, -1, C) in the graph (exported with batch 1); keep the batch.
    shape = [int(s) for s in shape.tolist()]
    if shape[0] == 1:
        shape[0] = x.shape[0]
    return x.reshape(shape)


class YuNet(OnnxModule):
    """YuNet face detector: (B, 3, H, W) float BGR 0..255 -> raw head outputs; `detect` decodes, with the pre-
    and post-processing of ``cv2.FaceDetectorYN`` (OpenCV objdetect ``face_detect.cpp``). Run it in fp32: bf16
    moves landmarks enough to change the aligned chip."""

    ops = {**OnnxModule.ops, "Resize": _resize, "Reshape": _reshape, "Sigmoid": lambda x: torch.sigmoid(x),
           "Transpose": lambda x, perm: x.permute(*perm)}

    def __init__(self, path: str | Path, *, score_threshold: float = 0.9, nms_threshold: float = 0.3,
                 top_k: int = 5000):
        super().__init__(path)  # frozen: eval mode, and its constants are buffers
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.top_k = top_k

    def forward(self, images: torch.Tensor) -> list[torch.Tensor]:
        """Zero-pads right/bottom to a multiple of 32 (as FaceDetectorYN) and runs the net: 12 outputs,
        cls/obj/bbox/kps for strides 8, 16, 32, each (B, cells, C)."""
        height, width = images.shape[-2:]
        pad_h, pad_w = -height % YUNET_DIVISOR, -width % YUNET_DIVISOR
        padded = F.pad(images, (0, pad_w, 0, pad_h))
        return super().forward(padded.contiguous(memory_format=torch.channels_last))

    @torch.inference_mode()
    def detect(self, images: torch.Tensor) -> list[np.ndarray]:
        """Faces per image, each (N, 15) float32 as ``cv2.FaceDetectorYN.detect`` returns them
        (x, y, w, h, 5 landmarks x/y, score), in NMS order (highest score first)."""
        return self.decode(self(images), tuple(images.shape[-2:]))

    def decode(self, outputs: list[torch.Tensor], size: tuple[int, int]) -> list[np.ndarray]:
        """Per stride and grid cell: score ``sqrt(clip(cls) * clip(obj))``, box centre ``(cell + d) * stride``,
        size ``exp(d) * stride``, landmarks ``(cell + d) * stride``; then the score threshold and NMS."""
        pad_h = -(-size[0] // YUNET_DIVISOR) * YUNET_DIVISOR
        pad_w = -(-size[1] // YUNET_DIVISOR) * YUNET_DIVISOR
        levels = len(YUNET_STRIDES)
        per_level = []
        for i, stride in enumerate(YUNET_STRIDES):
            cls, obj, bbox, kps = (outputs[i + levels * k].float() for k in range(4))
            cols, rows = pad_w // stride, pad_h // stride
            r, c = torch.meshgrid(torch.arange(rows, device=cls.device), torch.arange(cols, device=cls.device),
                                  indexing="ij")
            cell = torch.stack([c.reshape(-1), r.reshape(-1)], 1).float()  # (cells, 2) x, y
            score = torch.sqrt(cls[..., 0].clamp(0, 1) * obj[..., 0].clamp(0, 1))
            centre = (cell + bbox[..., :2]) * stride
            wh = torch.exp(bbox[..., 2:]) * stride
            landmarks = (kps.reshape(*kps.shape[:2], 5, 2) + cell[:, None, :]) * stride
            per_level.append(torch.cat([centre - wh / 2, wh, landmarks.flatten(2), score[..., None]], -1))
        faces = torch.cat(per_level, 1)  # (B, cells, 15)
        return [self._nms(image_faces[image_faces[:, SCORE] >= self.score_threshold]) for image_faces in faces]

    def _nms(self, faces: torch.Tensor) -> np.ndarray:
        # As cv2.dnn.NMSBoxes on Rect2i(int(x), int(y), int(w), int(h)): stable sort by score, greedy.
        faces = faces.cpu().numpy().astype(np.float32)
        if len(faces) <= 1:
            return faces.reshape(-1, 15)
        boxes = faces[:, BOX].astype(np.int32).astype(np.int64)  # truncation toward zero, as int()
        order = np.argsort(-faces[:, SCORE], kind="stable")[: self.top_k]
        keep: list[int] = []
        for index in order:
            if all(_iou(boxes[index], boxes[kept]) <= self.nms_threshold for kept in keep):
                keep.append(index)
        return faces[keep]


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Jaccard overlap of two integer (x, y, w, h) rectangles, as cv::Rect's ``&`` and area."""
    x1, y1 = max(a[0], b[0]), max(a[1], b[1])
    x2, y2 = min(a[0] + a[2], b[0] + b[2]), min(a[1] + a[3], b[1] + b[3])
    inter = (x2 - x1) * (y2 - y1) if x2 > x1 and y2 > y1 else 0
    union = a[2] * a[3] + b[2] * b[3] - inter
    return float(inter / union) if union > 0 else 0.0


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
    module = SFace(recognizer_path).to(device)
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
