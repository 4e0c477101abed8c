"""Picklable OpenCV preprocessors for the torch backbones (BGR uint8 HxWx3 -> RGB uint8 HxWx3 crop).

They are frozen dataclasses so DataLoader workers receive them by pickle, and ``describe()`` gives
the exact recipe stored in the backbone metadata. The geometric part (colour order, resize, crop)
runs in the workers and stays uint8; the normalisation (``normalisation()``: mean and std on 0..255
values) runs in ``embed`` on the model's device. uint8 crops are a quarter of the bytes of float32
ones through the worker queues, pinned memory and the host-to-GPU copy, and NHWC batches become
channels_last tensors for free.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import cv2
import numpy as np

from extract.catalog import FACE_ALIGNED, BackboneSpec
from extract.faces import DETECTOR_FILE, SCORE_THRESHOLD, FaceDetector, FaceTemplate, landmarks_of

_INTERPOLATIONS = {"bilinear": cv2.INTER_LINEAR, "bicubic": cv2.INTER_CUBIC}


def check_bgr(image: np.ndarray) -> None:
    """Raise ValueError unless ``image`` is what ``cv2.imread`` returns for a colour image."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"expected a BGR uint8 HxWx3 image, got dtype {image.dtype} shape {image.shape}"
        )


def resize(image: np.ndarray, width: int, height: int, *, interpolation: str) -> np.ndarray:
    """Resize; shrinking uses INTER_AREA, which approximates torchvision's antialiased resize."""
    shrinking = width * height < image.shape[0] * image.shape[1]
    flag = cv2.INTER_AREA if shrinking else _INTERPOLATIONS[interpolation]
    return cv2.resize(image, (width, height), interpolation=flag)


def resize_shorter(image: np.ndarray, size: int, *, interpolation: str) -> np.ndarray:
    """Scale so the shorter side is ``size``; the longer side is truncated as torchvision does."""
    height, width = image.shape[:2]
    if height <= width:
        new_h, new_w = size, int(size * width / height)
    else:
        new_h, new_w = int(size * height / width), size
    return resize(image, new_w, new_h, interpolation=interpolation)


def center_crop(image: np.ndarray, size: int) -> np.ndarray:
    """Central ``size`` x ``size`` window, offsets rounded as torchvision's center_crop."""
    height, width = image.shape[:2]
    if height < size or width < size:
        raise ValueError(f"cannot center-crop {size}x{size} from {width}x{height}")
    top = int(round((height - size) / 2.0))
    left = int(round((width - size) / 2.0))
    return image[top : top + size, left : left + size]


@dataclass(frozen=True)
class ResizeCropNormalize:
    """torchvision ``ImageClassification`` preset done with OpenCV: BGR->RGB, resize the shorter
    side to ``resize``, center-crop ``crop``, scale to [0, 1], subtract ``mean``, divide by ``std``
    (mean/std in [0, 1] units, RGB order)."""

    resize: int
    crop: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bilinear"

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.crop, self.crop, 3)

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per RGB channel on 0..255 values: x / 255 - mean) / std == (x - 255 mean) / 255 std."""
        return tuple(255.0 * m for m in self.mean), tuple(255.0 * s for s in self.std)

    def __call__(self, image: np.ndarray) -> np.ndarray:
        check_bgr(image)
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
        rgb = resize_shorter(rgb, self.resize, interpolation=self.interpolation)
        return np.ascontiguousarray(center_crop(rgb, self.crop))

    def describe(self) -> dict:
        return {
            "colour_order": "RGB (converted from cv2's BGR)",
            "resize_shorter_side": self.resize,
            "resize_interpolation": f"cv2 {self.interpolation} when enlarging, INTER_AREA when "
            "shrinking; longer side int(size * long / short) as torchvision",
            "center_crop": self.crop,
            "scale": "1/255",
            "mean_rgb": list(self.mean),
            "std_rgb": list(self.std),
            "layout": "uint8 HWC crop in the workers; normalised to float on the model's device",
            "aligner": None,
        }


@dataclass(frozen=True)
class FixedFaceCrop:
    """A fixed square crop around where the face sits in an already aligned image, resized to
    ``size`` and standardised as ``(x - mean) / std`` on 0..255 RGB values.

    The square is centred at (``center_x`` * W, ``center_y`` * H) with side ``side`` * W, all
    clipped to the image. Defaults come from YuNet boxes on 300 CelebA aligned images
    (178x218): median face box centre (89, 126), 86x115 px; the 120 px square centred at
    (89, 121) holds the box with a small margin, like facenet-pytorch's MTCNN crops.
    """

    center_x: float = 0.5
    center_y: float = 121 / 218
    side: float = 120 / 178
    size: int = 160
    mean: float = 127.5
    std: float = 128.0

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """(mean, std) per RGB channel on 0..255 values."""
        return (self.mean,) * 3, (self.std,) * 3

    def __call__(self, image: np.ndarray) -> np.ndarray:
        check_bgr(image)
        height, width = image.shape[:2]
        side = min(int(round(self.side * width)), width, height)
        left = min(max(int(round(self.center_x * width - side / 2)), 0), width - side)
        top = min(max(int(round(self.center_y * height - side / 2)), 0), height - side)
        face = cv2.cvtColor(image[top : top + side, left : left + side], cv2.COLOR_BGR2RGB)
        return np.ascontiguousarray(resize(face, self.size, self.size, interpolation="bilinear"))

    def describe(self) -> dict:
        return {
            "colour_order": "RGB (converted from cv2's BGR)",
            "crop": "square, centre (center_x*W, center_y*H), side side*W, clipped to the image; "
            "no detector (assumes CelebA-style aligned face images)",
            **asdict(self),
            "resize_interpolation": "cv2 bilinear when enlarging, INTER_AREA when shrinking",
            "standardisation": "(x - 127.5) / 128 on 0..255 values (facenet-pytorch "
            "fixed_image_standardization)",
            "layout": "uint8 HWC crop in the workers; standardised to float on the model's device",
            "aligner": None,
        }


@dataclass(frozen=True)
class AlignedCrop:
    """A face backbone's input from one face row: the image warped so the 5 landmarks land on
    ``template`` (`extract.faces.FaceTemplate`), in RGB (or BGR for OpenCV nets), uint8; the
    normalisation (x / 255 - mean) / std (mean, std in [0, 1] units) runs on the model's device."""

    template: FaceTemplate
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    rgb: bool = True

    @property
    def output_shape(self) -> tuple[int, int, int]:
        return (self.template.size, self.template.size, 3)

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
    if spec.face != FACE_ALIGNED:
        raise ValueError(f"backbone {spec.name!r} does not take an aligned crop (face {spec.face!r})")
    template = spec.input
    return AlignedCrop(FaceTemplate(template.size, margin=template.margin), mean=template.mean, std=template.std,
                       rgb=template.rgb)


class FacePreprocessor:
    """Picklable preprocessor of a face backbone.

    ``preprocessor(image)``: detect (YuNet, largest face) then align, for a lone image;
    ``preprocessor.align(image, face)``: align from a face row already found (the extract run's one
    detection per image, in the coordinates of ``image``). The detector is made lazily per process.
    """

    def __init__(self, aligner, *, detector: FaceDetector | None = None) -> None:
        self.aligner = aligner
        self._detector = detector

    def __getstate__(self) -> dict:
        return dict(self.__dict__)

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

    def normalisation(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        return self.aligner.normalisation()

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.aligner.output_shape

    def with_flip(self) -> FacePreprocessor | None:
        """The same preprocessor averaging over a mirrored chip when the aligner computes the
        embedding itself (dlib), else None (the embed step then averages)."""
        flipped = getattr(self.aligner, "with_flip", None)
        return FacePreprocessor(flipped(), detector=self._detector) if flipped else None

    def describe(self) -> dict:
        return {"face_detection": "one YuNet detection per image (see the store's faces entry; "
                f"alone: {DETECTOR_FILE}, score >= {SCORE_THRESHOLD}, largest face)",
                **self.aligner.describe()}
