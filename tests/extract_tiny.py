"""Tiny test backbones for the extraction tests, registered on import (`--plugin tests.extract_tiny`).

"tiny_test" and "tiny_test_b": resize to 16x16, a seeded conv -> ReLU -> pool -> linear, dim 8.
An image darker than mean 2/255 raises `NoFaceFound` (a stand-in for an aligner finding no face).
EXTRACT_TINY_DELAY (seconds) slows every `embed` call, so a subprocess can be interrupted mid-run.
"""
from __future__ import annotations

import os
import time

import cv2
import numpy as np
import torch
from torch import nn

from extract.backbones import Backbone, BackboneSpec, NoFaceFound, WeightsUnavailable, register

DIM = 8
SIZE = 16


def tiny_preprocess(image: np.ndarray) -> np.ndarray:
    """BGR uint8 -> float32 (3, 16, 16) in [0, 1]; NoFaceFound on a (nearly) black image."""
    if image.mean() < 2:
        raise NoFaceFound("black image")
    small = cv2.resize(image, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(small.astype(np.float32).transpose(2, 0, 1) / 255)


class TinyNet(nn.Module):
    def __init__(self, seed: int):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.linear = nn.Linear(4 * 4 * 4, DIM)
        with torch.no_grad():
            for parameter in self.parameters():
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.avg_pool2d(torch.relu(self.conv(x)), 4)
        return self.linear(x.flatten(1))


def _make(spec: BackboneSpec, seed: int, *, weights, device, precision) -> Backbone:
    if weights not in (None, "random"):
        raise WeightsUnavailable(f"{spec.name} has no weight files; it cannot load {weights!r}")
    net = TinyNet(seed).to(device).eval().requires_grad_(False)
    delay = float(os.environ.get("EXTRACT_TINY_DELAY", "0"))

    def embed(batch: torch.Tensor) -> torch.Tensor:
        if delay:
            time.sleep(delay)
        return net(batch)

    return Backbone(spec=spec, input_shape=(3, SIZE, SIZE), preprocessor=tiny_preprocess,
                    embed=embed, device=torch.device(device), uses_torch_device=True,
                    metadata={"weights": "random", "seed": seed, "precision": precision},
                    input_dtype="float32", module=net)


def tiny_test(*, spec, weights=None, device="cpu", precision="fp32") -> Backbone:
    return _make(spec, 0, weights=weights, device=device, precision=precision)


def tiny_test_b(*, spec, weights=None, device="cpu", precision="fp32") -> Backbone:
    return _make(spec, 1, weights=weights, device=device, precision=precision)


for _name, _factory in (("tiny_test", tiny_test), ("tiny_test_b", tiny_test_b)):
    register(BackboneSpec(_name, DIM, (3, SIZE, SIZE), factory=_factory, available=lambda: True))
