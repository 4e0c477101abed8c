"""Shared pieces of the torch backbones: freezing, seeded random init, the embed callables, and the
choice between a net's torch port and its own library."""

from __future__ import annotations

import contextlib
import os
from typing import Callable

import torch
from torch import nn

from extract.catalog import BackboneSpec
from extract.errors import UsageError

from ._registry import Backbone
from ._weights import load_into

RANDOM_SEED = 0
_AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def build_random(build: Callable[[], nn.Module]) -> tuple[nn.Module, dict]:
    """``build()`` under ``torch.manual_seed(0)``, without disturbing the caller's RNG state, and the
    weights metadata of seeded random initialisation."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        return build(), {"weights": "random", "weights_source": f"torch.manual_seed({RANDOM_SEED})"}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    """bf16/fp16 autocast on ``device``; nothing for fp32."""
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=_AUTOCAST_DTYPES[precision])


def engine_from_environment(variable: str, engines: tuple[str, ...], auto: str) -> str:
    """``$variable`` lower-cased, ``auto`` when it says "auto" or is unset or empty; a value not in ``engines``
    is a UsageError."""
    asked = os.environ.get(variable, "auto").strip().lower() or "auto"
    if asked not in engines:
        raise UsageError(f"{variable}={asked!r} is not one of {', '.join(engines)}")
    return auto if asked == "auto" else asked


def freeze(module: nn.Module, device: torch.device) -> nn.Module:
    """Eval mode, no gradients, moved to ``device``."""
    module.eval().requires_grad_(False)
    return module.to(device)


class DeviceEmbed:
    """Chips (any device) -> ``(B, dim)`` float32: moved to ``device``, turned into the module's input by
    `prepare` (subclasses; the chips as they are by default), run with bf16/fp16 under autocast."""

    def __init__(self, module: nn.Module, *, device: torch.device, precision: str) -> None:
        self.module = module.to(device)
        self.device = device
        self.precision = precision

    def prepare(self, chips: torch.Tensor) -> torch.Tensor:
        return chips

    def __call__(self, batch: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            x = self.prepare(batch.to(self.device))
            with autocast(self.device, self.precision):
                return self.module(x).float()


class TorchEmbed(DeviceEmbed):
    """``(B, H, W, 3)`` uint8 RGB -> ``(B, dim)`` float32, ``(x - mean) / std`` on 0..255 values on the device;
    the NHWC batch permuted to NCHW is channels_last, the layout the module (converted once) runs fastest in."""

    def __init__(self, module: nn.Module, *, device: torch.device, precision: str,
                 mean: tuple[float, ...], std: tuple[float, ...]) -> None:
        super().__init__(module.to(memory_format=torch.channels_last), device=device, precision=precision)
        self.mean = torch.tensor(mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32, device=device).view(1, 3, 1, 1)

    def prepare(self, chips: torch.Tensor) -> torch.Tensor:
        return (chips.permute(0, 3, 1, 2).float() - self.mean) / self.std


def torch_factory(architecture: Callable[[bool], nn.Module], state_dict_of: Callable[[str | None], tuple[dict, dict]],
                  head: Callable[[nn.Module], nn.Module], preprocessor, *, weights_facts: dict | None = None,
                  extra_versions: tuple[str, ...] = ("torchvision", "opencv-python-headless")) -> Callable:
    """The factory (a spec's ``factory``) of a torch backbone: ``architecture(random)`` builds the network,
    seeded for weights "random", else filled strictly from ``state_dict_of(weights) -> (state dict, weights
    metadata)``; ``head`` makes it headless. ``weights_facts`` are added to the weights metadata, and the
    versions of ``extra_versions`` recorded."""

    def load(*, spec: BackboneSpec, weights: str | None, device: torch.device, precision: str) -> Backbone:
        if weights == "random":
            module, meta = build_random(lambda: architecture(True))
        else:
            state_dict, meta = state_dict_of(weights)
            module = architecture(False)
            load_into(module, state_dict, path=meta["weights_source"], name=spec.name)
        module = freeze(head(module), device)
        mean, std = preprocessor.aligner.normalisation()
        return Backbone(spec=spec, input_shape=spec.input_shape, preprocessor=preprocessor,
                        embed=TorchEmbed(module, device=device, precision=precision, mean=mean, std=std),
                        device=device, uses_torch_device=True, input_dtype="uint8", module=module,
                        metadata=spec.store_metadata({**meta, **(weights_facts or {})}, preprocessor.describe(),
                                                     precision=precision, packages=extra_versions))

    return load
