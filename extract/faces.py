"""The face front end shared by `extract` and `predict`: strict bounded decoding, one YuNet detection,
and a similarity warp of the 5 landmarks onto each backbone's own template.

    file --decode()--> BGR image (reduced when huge) --FaceDetector--> face rows --FaceTemplate.warp-->
    each backbone's chip (ArcFace 112x112 for sface, a margin crop for the ImageNet / VGGFace2 nets;
    dlib_resnet uses the detector's box through its own shape predictor, see dlib_resnet.py)

A *face row* is FACE_DIM float32 values in the coordinates of the ORIGINAL image (full resolution,
whatever reduction it was decoded at): box x, y, w, h; 5 landmarks (right eye, left eye, nose tip,
right and left mouth corner, as YuNet orders them: image left to right) as x0, y0, ..., x4, y4; the
detector score; the source (1 detected, 2 the dataset's known template: an aligned image where the
detector failed). The extract CLI stores one row per image in the store's faces entry, so every
backbone of a run warps from the same detection and they drop the same images.

Decoding is strict and bounded:
- a JPEG must end with its end-of-image marker after its last scan (a truncated file does not), and
  must decode from memory without error (OpenCV's in-memory JPEG source fails on "Premature end of JPEG
  file", where `cv2.imread` only warns and returns a grey-filled image): else `Unreadable`;
  a JPEG whose decoding makes libjpeg warn (damaged entropy-coded data, "Corrupt JPEG data") is
  `Unreadable` too, as OpenCV would hand back an image with garbage in it;
- the pixel count is read from the JPEG/PNG header before decoding: above MAX_PIXELS the image is
  `ImageTooLarge` (Status.TOO_LARGE); above DECODE_MAX_PIXELS a JPEG is decoded reduced by 2, 4 or 8
  in the DCT (`cv2.IMREAD_REDUCED_COLOR_N`), so a 100-megapixel photo decodes to about 6 megapixels;
- the detector runs on a copy whose longer side is at most DETECT_MAX_SIDE, landmarks mapped back.
"""
from __future__ import annotations

import os
import struct
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from extract.catalog import BUILTIN

DETECTOR_REQUIREMENT = BUILTIN["sface"].weights.requirement  # YuNet ships with SFace
DETECTOR_FILE = "face_detection_yunet_2023mar_int8bq.onnx"
SCORE_THRESHOLD = 0.6            # YuNet's own default, as sface used before
DETECT_MAX_SIDE = 1024           # detector input bound: faces down to ~1/40 of the photo still found
DECODE_MAX_PIXELS = 16_000_000   # larger JPEGs decode reduced (48 MB as BGR at most)
MAX_PIXELS = 250_000_000         # hard limit: TOO_LARGE beyond (reduced by 8 that is still ~4 MP)
FACE_DIM = 16
SOURCE_DETECTED, SOURCE_TEMPLATE = 1.0, 2.0

# ArcFace 5-point template for 112x112 crops, as in OpenCV's FaceRecognizerSF::alignCrop.
ARCFACE_112 = np.array(
    [[38.2946, 51.6963], [73.5318, 51.5014], [56.0252, 71.7366], [41.5493, 92.3655], [70.7299, 92.2041]],
    dtype=np.float64,
)
# Where YuNet puts the 5 landmarks in CelebA's img_align_celeba images (178x218): the median over
# 600 images of the shared subset (every 10th file, largest face, none missed; MAD 1.2-3.9 px); see
# scripts/calibrate_faces.py. Used to check detections on aligned images and as their fallback.
CELEBA_ALIGNED_SIZE = (178, 218)
CELEBA_ALIGNED_LANDMARKS = np.array(
    [[69.11, 112.72], [108.61, 113.04], [88.35, 135.40], [72.09, 151.71], [105.45, 152.48]],
    dtype=np.float64,
)
# A detection on an aligned image counts as the known face when its landmarks lie within this
# fraction of the template's eye distance (mean over the 5 points); else the template is used.
TEMPLATE_TOLERANCE = 0.25


class Unreadable(Exception):
    """The file cannot be read or decoded completely; the message says why."""


class ImageTooLarge(Exception):
    """The image has more than MAX_PIXELS pixels."""


class NoFaceFound(Exception):
    """The face detector (or a backbone's own aligner) finds no face in the image."""


# -- decoding ---------------------------------------------------------------------------------------
def jpeg_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from a JPEG's SOF marker, or None when not a JPEG / no SOF found."""
    frame = jpeg_frame(data)
    return frame[:2] if frame is not None else None


def jpeg_frame(data: bytes) -> tuple[int, int, int] | None:
    """(width, height, colour components) from a JPEG's SOF marker, or None when not a JPEG / no SOF."""
    if data[:2] != b"\xff\xd8":
        return None
    position = 2
    while position + 4 <= len(data):
        if data[position] != 0xFF:
            return None
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        if marker in (0xD8, 0x01) or 0xD0 <= marker <= 0xD7:
            position += 2
            continue
        (length,) = struct.unpack(">H", data[position + 2:position + 4])
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if position + 9 > len(data):
                return None
            height, width = struct.unpack(">HH", data[position + 5:position + 9])
            return width, height, data[position + 9] if position + 9 < len(data) else 0
        position += 2 + length
    return None


def png_size(data: bytes) -> tuple[int, int] | None:
    if data[:8] != b"\x89PNG\r\n\x1a\n" or len(data) < 24:
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def jpeg_is_complete(data: bytes) -> bool:
    """An end-of-image marker after the last start-of-scan (an EXIF thumbnail's own EOI comes before
    the main image's scans, and 0xFFD9 cannot occur inside entropy-coded data)."""
    return data.rfind(b"\xff\xd9") > data.rfind(b"\xff\xda") >= 0


def reduction_for(pixels: int) -> int:
    """The smallest DCT reduction (1, 2, 4, 8) bringing `pixels` under DECODE_MAX_PIXELS."""
    for factor in (1, 2, 4, 8):
        if pixels <= DECODE_MAX_PIXELS * factor * factor:
            return factor
    return 8


_REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                  8: cv2.IMREAD_REDUCED_COLOR_8}


@dataclass(frozen=True)
class Decoded:
    """A decoded BGR uint8 image and its scale: decoded pixels per original pixel (1, 1/2, 1/4, 1/8)."""

    image: np.ndarray
    scale: float


def decode(path: str) -> Decoded:
    """Read and decode one image strictly and within bounded memory (see the module docstring)."""
    try:
        data = Path(path).read_bytes()
    except OSError as error:
        raise Unreadable(f"cannot read the file ({error.strerror or type(error).__name__})") from None
    if not data:
        raise Unreadable("empty file")
    size = jpeg_size(data) or png_size(data)
    is_jpeg = data[:2] == b"\xff\xd8"
    if is_jpeg and not jpeg_is_complete(data):
        raise Unreadable("JPEG without its end-of-image marker (truncated file)")
    factor = 1
    if size is not None:
        pixels = size[0] * size[1]
        if pixels > MAX_PIXELS:
            raise ImageTooLarge(f"{size[0]}x{size[1]} pixels, over the {MAX_PIXELS:,} limit")
        factor = reduction_for(pixels) if is_jpeg else 1
    image, warning = imdecode_with_warnings(data, _REDUCED_FLAGS[factor]) if is_jpeg else \
        (cv2.imdecode(np.frombuffer(data, dtype=np.uint8), _REDUCED_FLAGS[factor]), "")
    if warning:
        raise Unreadable(f"damaged JPEG data (libjpeg: {warning})")
    if image is None:
        raise Unreadable("OpenCV cannot decode it (corrupt, truncated or not an image)")
    if size is None and image.shape[0] * image.shape[1] > MAX_PIXELS:
        raise ImageTooLarge(f"{image.shape[1]}x{image.shape[0]} pixels, over the {MAX_PIXELS:,} limit")
    return Decoded(image, 1.0 / factor)


_DECODE_LOCK = threading.Lock()
_WARNINGS_FILES: dict[int, object] = {}  # pid -> that process's scratch file


def warnings_file():
    """This process's scratch file for libjpeg's warnings. Keyed by pid: a reader worker forked after
    its parent decoded must not share the parent's file (and its offset) with its sibling workers, or
    one worker's warning about a damaged file is read as another's."""
    pid = os.getpid()
    if pid not in _WARNINGS_FILES:
        _WARNINGS_FILES.clear()  # an inherited parent's entry: this process never writes to it
        _WARNINGS_FILES[pid] = tempfile.TemporaryFile()
    return _WARNINGS_FILES[pid]


def imdecode_with_warnings(data: bytes, flag: int) -> tuple[np.ndarray | None, str]:
    """`cv2.imdecode` of a JPEG, and the first warning libjpeg printed while decoding it ("" if none).

    libjpeg reports damaged entropy-coded data ("Corrupt JPEG data: N extraneous bytes before marker")
    only as a warning on file descriptor 2 and still returns an image with garbage in it; OpenCV does not
    surface it. So fd 2 points at a scratch file (one per process, never a pipe: a long message cannot
    block) for the call. The lock keeps threads of one process from interleaving; what another thread
    writes to stderr in that instant lands in the scratch file and is shown as part of the warning.
    """
    with _DECODE_LOCK:
        scratch = warnings_file().fileno()
        os.ftruncate(scratch, 0)
        os.lseek(scratch, 0, os.SEEK_SET)
        saved = os.dup(2)
        try:
            os.dup2(scratch, 2)
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        os.lseek(scratch, 0, os.SEEK_SET)
        printed = os.read(scratch, 4096).decode("utf-8", "replace")
    lines = [line.strip() for line in printed.splitlines() if "JPEG" in line]
    return image, lines[0] if lines else ""


# -- face rows --------------------------------------------------------------------------------------
def face_row(box, landmarks, score: float, source: float) -> np.ndarray:
    row = np.empty(FACE_DIM, dtype=np.float32)
    row[:4], row[4:14], row[14], row[15] = box, np.asarray(landmarks).reshape(10), score, source
    return row


def landmarks_of(row: np.ndarray) -> np.ndarray:
    """(5, 2) float64 landmarks of a face row."""
    return np.asarray(row[4:14], dtype=np.float64).reshape(5, 2)


def scaled(row: np.ndarray, scale: float) -> np.ndarray:
    """The row in the coordinates of an image decoded at `scale` (box and landmarks scaled)."""
    out = np.array(row, dtype=np.float32)
    out[:14] *= scale
    return out


def template_row(size: tuple[int, int], landmarks: np.ndarray, image_size: tuple[int, int]) -> np.ndarray:
    """A face row for an aligned dataset's known landmarks, scaled from `size` to `image_size` (w, h)."""
    fx, fy = image_size[0] / size[0], image_size[1] / size[1]
    points = landmarks * [fx, fy]
    eye = np.linalg.norm(points[1] - points[0])
    centre = points.mean(0)
    box = (centre[0] - 1.1 * eye, centre[1] - 1.3 * eye, 2.2 * eye, 2.6 * eye)  # roughly YuNet's box
    return face_row(box, points, 0.0, SOURCE_TEMPLATE)


class FaceDetector:
    """Picklable YuNet wrapper: BGR image -> (K, FACE_DIM) face rows in image coordinates, largest
    first. The OpenCV detector is created lazily in each process and never pickled."""

    def __init__(self, path: str | None = None, *, score_threshold: float = SCORE_THRESHOLD,
                 max_side: int = DETECT_MAX_SIDE) -> None:
        self.path = str(path) if path is not None else str(detector_path())
        self.score_threshold = score_threshold
        self.max_side = max_side
        self._detector = None

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_detector": None}

    def faces(self, image: np.ndarray) -> np.ndarray:
        height, width = image.shape[:2]
        shrink = min(1.0, self.max_side / max(height, width))
        small = image if shrink == 1.0 else cv2.resize(
            image, (max(1, round(width * shrink)), max(1, round(height * shrink))), interpolation=cv2.INTER_AREA)
        if self._detector is None:
            self._detector = cv2.FaceDetectorYN.create(self.path, "", (320, 320), self.score_threshold)
        self._detector.setInputSize((small.shape[1], small.shape[0]))
        found = self._detector.detect(small)[1]
        if found is None or len(found) == 0:
            return np.empty((0, FACE_DIM), dtype=np.float32)
        found = found[np.argsort(-(found[:, 2] * found[:, 3]), kind="stable")]
        sx, sy = width / small.shape[1], height / small.shape[0]  # exact inverse of the resize
        rows = [face_row(f[:4] * [sx, sy, sx, sy], self.refine(image, f[4:14].reshape(5, 2) * [sx, sy]),
                         f[14], SOURCE_DETECTED) for f in found]
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
            nearest = found[np.argmin([np.linalg.norm(f[4:14].reshape(5, 2).mean(0) - centre) for f in found])]
            inverse = cv2.invertAffineTransform(CANONICAL.matrix(points))
            points = nearest[4:14].reshape(5, 2).astype(np.float64) @ inverse[:, :2].T + inverse[:, 2]
        return points

    def largest(self, image: np.ndarray) -> np.ndarray:
        faces = self.faces(image)
        if not len(faces):
            raise NoFaceFound(f"YuNet found no face (score >= {self.score_threshold})")
        return faces[0]

    def describe(self) -> dict:
        return {"detector": f"YuNet ({Path(self.path).name})", "score_threshold": self.score_threshold,
                "landmark_refinement": f"{REFINE_STEPS} re-detections in a canonical crop {CANONICAL.describe()}",
                "detect_max_side": self.max_side, "choice": "largest face (box area)",
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
    """Picklable: BGR image -> the one face row a dataset image is represented by.

    Wild images: the largest detected face. Aligned images: the detected face nearest the known
    landmarks if within TEMPLATE_TOLERANCE, else the template itself (source 2), never NoFace.
    """

    def __init__(self, detector: FaceDetector, alignment: Alignment = Alignment()) -> None:
        self.detector = detector
        self.alignment = alignment

    def __call__(self, image: np.ndarray) -> np.ndarray:
        faces = self.detector.faces(image)
        if self.alignment.kind == "wild":
            if not len(faces):
                raise NoFaceFound(f"YuNet found no face (score >= {self.detector.score_threshold})")
            return faces[0]
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


REFINE_STEPS = 2


def image_size(path: str) -> tuple[int, int]:
    """(width, height) of an image file from its JPEG/PNG header, else by decoding it."""
    with open(path, "rb") as handle:
        head = handle.read(1 << 16)
    size = jpeg_size(head) or png_size(head)
    if size is None:
        image = decode(path).image
        size = (image.shape[1], image.shape[0])
    return size


def template_check(rows: np.ndarray, status: np.ndarray, alignment: Alignment,
                   sizes: dict[int, tuple[int, int]]) -> dict:
    """How a detection pass on an aligned dataset agrees with its known template: rows that fell back
    to the template (source 2), and the distance of detected landmarks from the template (mean over
    the 5 points, in pixels and in template eye distances) for the rows in ``sizes`` (row -> image
    (width, height), a sample of detected rows)."""
    valid = status == 1  # Status.OK; the store's enum is not imported here (extract.faces is cv2/numpy)
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
            "template_fallback_rows": int((valid & (rows[:, 15] == SOURCE_TEMPLATE)).sum()),
            "detected_rows": int((valid & (rows[:, 15] == SOURCE_DETECTED)).sum()), "checked_sample": len(sizes),
            "landmark_distance_px": spread(pixels), "landmark_distance_eye": spread(eyes),
            "tolerance_eye": TEMPLATE_TOLERANCE}


# -- templates --------------------------------------------------------------------------------------
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
    matrix = np.empty((2, 3))
    matrix[:, :2] = scale * rotation
    matrix[:, 2] = dst_mean - scale * rotation @ src_mean
    return matrix


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
        """The image warped so the landmarks land on the template (INTER_LINEAR, black outside).

        Shrinking by more than 2x is done in steps of INTER_AREA first, so a large face is not aliased.
        """
        matrix = self.matrix(landmarks)
        shrunk = self.shrunk_size(matrix, image.shape[1], image.shape[0])
        if shrunk is not None:
            height, width = image.shape[:2]
            small = cv2.resize(image, shrunk, interpolation=cv2.INTER_AREA)
            factors = np.array([small.shape[1] / width, small.shape[0] / height])
            return self.warp_exact(small, np.asarray(landmarks) * factors)
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

    def warp_exact(self, image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(image, self.matrix(landmarks), (self.size, self.size), flags=cv2.INTER_LINEAR)

    def describe(self) -> dict:
        return {"template": "ArcFace 5-point (112x112) with margin, similarity (Umeyama) warp",
                "size": self.size, "margin": self.margin, "points": np.round(self.points, 4).tolist()}


# The view in which landmarks are refined: the face at about a third of a 224x224 crop.
CANONICAL = FaceTemplate(224, margin=0.6)
