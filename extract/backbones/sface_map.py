"""``sface_map``: SFace's last feature map (the 1024x7x7 ``conv_14_relu``) averaged over space, 1024-d,
from the same shipped ONNX file, chip and blob as `sface`.

Why: SFace's 128-d embedding layer (``pre_fc1``, a 50,176 -> 128 projection trained for identity only)
keeps little of the gender the map before it holds (docs/findings.md, "Why sface transfers poorly").

Engines as `sface`'s. OpenCV's DNN (faster on CPU) returns only a graph's outputs, so it reads an in-memory
copy of the file that also outputs the map. Both engines' rows agree within 1e-3 (tests/test_onnx_nets.py)
and share one preprocessing record, so either resumes the other's store.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import torch

from extract.catalog import BUILTIN, BackboneSpec

from ._registry import Backbone
from .onnx_nets import SFace
from .sface import PREPROCESS, SFaceEmbed, load_engine  # noqa: F401  (PREPROCESS: sface's chip, this module's too)

SPEC = BUILTIN["sface_map"]
MAP_LAYER = "conv_14_relu"  # (B, 1024, 7, 7): the last activation before the embedding layer


class SFaceMap(SFace):
    """(B, 3, 112, 112) float RGB 0..255 (OpenCV's blob of the aligned chip) -> (B, 1024) pooled map."""

    def __init__(self, path: str | Path):
        super().__init__(path, outputs=[MAP_LAYER])

    def forward(self, blob: torch.Tensor) -> torch.Tensor:
        return super().forward(blob).mean(dim=(2, 3))


def with_map_output(path: Path) -> np.ndarray:
    """The ONNX file at ``path``, in memory, with the map added to the graph's outputs (for OpenCV's DNN)."""
    import onnx

    model = onnx.load(str(path))
    if not any(MAP_LAYER in node.output for node in model.graph.node):
        raise ValueError(f"the graph has no tensor named {MAP_LAYER}")
    model.graph.output.append(onnx.helper.make_tensor_value_info(MAP_LAYER, onnx.TensorProto.FLOAT,
                                                                 ["n", SPEC.dim, 7, 7]))
    return np.frombuffer(model.SerializeToString(), dtype=np.uint8)


class OpenCVMapEmbed(SFaceEmbed):
    """`SFaceEmbed` reading the map, averaged over its 7x7 positions: (B, 1024) float32."""

    def output(self) -> np.ndarray:
        return self.net.forward(MAP_LAYER).mean(axis=(2, 3))


def load(*, spec: BackboneSpec, weights: str | None, device: torch.device, precision: str) -> Backbone:
    return load_engine(spec, weights=weights, device=device, precision=precision, torch_net=SFaceMap,
                       opencv_embed=lambda path: OpenCVMapEmbed(cv2.dnn.readNetFromONNX(with_map_output(path))),
                       preprocessing={"blob": "RGB 0..255, no mean/scale (as sface)",
                                      "features": f"{MAP_LAYER} (1024x7x7) averaged over its 7x7 positions"},
                       implementations=(f"torch (onnx_nets.SFace up to {MAP_LAYER})",
                                        f"OpenCV-DNN (the graph with {MAP_LAYER} as an output)"),
                       opencv_reads_onnx=True)
