"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) as a torch module,
its weights read from the .dat file itself (no dlib build), so it batches on CPU and runs on CUDA.

The network (dlib ``examples/dnn_face_recognition_ex.cpp``, ``anet_type``) is `ARCHITECTURE`, the list of ops
both the parser and the module walk; the descriptor is the raw output of its last layer, fc_no_bias<128>.
dlib semantics kept exactly:
- input: RGB, ``(pixel - mean) / 256`` with the per-channel means stored in the file;
- convolution/pooling padding is ``size // 2`` at stride 1 and 0 otherwise (stored in the file and
  checked); ``affine`` is per-channel ``gamma * x + beta`` (batch norm folded when the net was saved);
- ``add_prev`` of tensors of different shapes zero-pads each to the larger size on every axis (dlib's
  ``tt::add``): in ``ares_down`` the block output has twice the channels of the pooled skip, and in the
  last two it is also spatially smaller (3x3 vs 4x4, 1x1 vs 2x2), so it lands in the top-left corner.

The .dat format is dlib's ``serialize()`` (dlib/serialize.h, float_details.h, dnn/core.h, layers.h, input.h,
loss.h, tensor.h): integers as one byte ``size | 0x80 if negative`` then ``size`` little-endian bytes; floats
as ``mantissa * 2**exponent``, two such integers; strings and booleans as a length-prefixed byte string and
``'0'``/``'1'``; tensors as ``int version=2, n, k, nr, nc`` then raw little-endian float32. The loss layer
comes first, then every wrapper's version number down to the input layer, then each layer's parameters
(its version string first) bottom-up. `read_dat` checks it all against `ARCHITECTURE` (nothing left over).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from extract.errors import WeightsUnavailable

from ._torchnet import engine_from_environment

CHIP = 150
DIM = 128


def _block(filters: int, stride: int) -> list[tuple]:
    return [("con", filters, 3, stride), ("affine",), ("relu",), ("con", filters, 3, 1), ("affine",)]


def _ares(filters: int) -> list[tuple]:
    return [("tag", 1), *_block(filters, 1), ("add_prev", 1), ("relu",)]


def _ares_down(filters: int) -> list[tuple]:
    return [("tag", 1), *_block(filters, 2), ("tag", 2), ("skip", 1), ("avg_pool", 2, 2), ("add_prev", 2),
            ("relu",)]


def _levels() -> list[tuple]:
    ops = [op for _ in range(3) for op in _ares(32)]  # level4
    for filters, plain in ((64, 3), (128, 2), (256, 2), (256, 0)):  # level3 .. level0
        ops += _ares_down(filters) + [op for _ in range(plain) for op in _ares(filters)]
    return ops


# Bottom-up, as the net computes: ("con", filters, size, stride), ("affine",), ("relu",),
# ("max_pool" | "avg_pool", size (0: whole map), stride), ("tag" | "skip" | "add_prev", tag id), ("fc", outputs).
ARCHITECTURE: tuple[tuple, ...] = (
    ("con", 32, 7, 2), ("affine",), ("relu",), ("max_pool", 3, 2), *_levels(), ("avg_pool", 0, 1), ("fc", DIM),
)
_WRAPPERS = ("tag", "skip")  # add_tag_layer / add_skip_layer: a version number, no parameters
_VERSIONS = {"con": "con_4", "affine": "affine_", "relu": "relu_", "max_pool": "max_pool_2",
             "avg_pool": "avg_pool_2", "add_prev": "add_prev_", "fc": "fc_2"}
_CONV_MODE, _FC_NO_BIAS = 0, 1  # dlib enums layer_mode {CONV_MODE=0, FC_MODE=1}, fc_bias_mode {HAS=0, NO=1}


@dataclass
class DlibNet:
    """What `read_dat` reads: the input means and, per op of `ARCHITECTURE`, its float32 arrays."""

    means: tuple[float, float, float]
    params: list[dict[str, np.ndarray]] = field(default_factory=list)


class _Reader:
    """A cursor over a dlib-serialized byte string; every read checks the bytes are there."""

    def __init__(self, data: bytes, path: Path) -> None:
        self.data, self.pos, self.path = data, 0, path

    def fail(self, reason: str) -> WeightsUnavailable:
        return WeightsUnavailable(f"{self.path}: not dlib's face recognition ResNet "
                                  f"(dlib_face_recognition_resnet_model_v1.dat) at byte {self.pos}: {reason}")

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise self.fail(f"the file ends early (wanted {count} more bytes; truncated?)")
        chunk = self.data[self.pos:self.pos + count]
        self.pos += count
        return chunk

    def int(self) -> int:
        head = self.take(1)[0]
        size = head & 0x0F
        if head & 0x70 or size > 8:
            raise self.fail(f"bad integer header byte 0x{head:02x}")
        value = int.from_bytes(self.take(size), "little")
        return -value if head & 0x80 else value

    def float(self) -> float:
        mantissa, exponent = self.int(), self.int()
        if exponent >= 32000:  # float_details' is_inf / is_ninf / is_nan
            return {32000: float("inf"), 32001: float("-inf")}.get(exponent, float("nan"))
        return float(np.ldexp(float(mantissa), exponent))

    def bool(self) -> bool:
        byte = self.take(1)
        if byte not in (b"0", b"1"):
            raise self.fail(f"expected a boolean, found byte {byte!r}")
        return byte == b"1"

    def string(self) -> str:
        length = self.int()
        if not 0 <= length <= 256:
            raise self.fail(f"expected a short string, found length {length}")
        return self.take(length).decode("latin-1")

    def expect(self, value: object, found: object, what: str) -> None:
        if found != value:
            raise self.fail(f"{what} is {found!r}, expected {value!r}")

    def version(self, expected: str, what: str) -> None:
        self.expect(expected, self.string(), f"{what} version")

    def tensor(self) -> np.ndarray:
        self.expect(2, self.int(), "tensor version")
        shape = tuple(self.int() for _ in range(4))
        if min(shape) < 0 or np.prod(shape, dtype=np.int64) > len(self.data):
            raise self.fail(f"bad tensor shape {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        return np.frombuffer(self.take(4 * count), "<f4").astype(np.float32).reshape(shape)

    def alias(self) -> tuple[int, ...]:
        self.expect(1, self.int(), "alias_tensor version")
        return tuple(self.int() for _ in range(4))

    def multipliers(self) -> None:
        for _ in range(4):  # learning-rate / weight-decay multipliers: training only
            self.float()


def read_dat(path: str | os.PathLike) -> DlibNet:
    """Parse ``dlib_face_recognition_resnet_model_v1.dat`` into its weights; anything else (another
    net, a truncated or corrupted file) raises one `WeightsUnavailable` naming the file."""
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as error:
        raise WeightsUnavailable(f"{path}: cannot read the dlib model file ({error.strerror})") from None
    reader = _Reader(data, path)
    reader.expect(1, reader.int(), "add_loss_layer version")
    reader.version("loss_metric_2", "loss layer")
    reader.float(), reader.float()  # margin, distance threshold: training only
    layer_versions = _read_wrapper_versions(reader)
    reader.version("input_rgb_image_sized", "input layer")
    net = DlibNet(means=(reader.float(), reader.float(), reader.float()))
    reader.expect((CHIP, CHIP), (reader.int(), reader.int()), "input size")
    channels = 3
    for index, op in enumerate(ARCHITECTURE):
        if op[0] in _WRAPPERS:
            net.params.append({})
            continue
        params, channels = _read_layer(reader, op, channels)
        net.params.append(params)
        _read_layer_trailer(reader, layer_versions[index], bottom=index == 0)
    if reader.pos != len(data):
        raise reader.fail(f"{len(data) - reader.pos} bytes left after the last layer")
    return net


def _read_wrapper_versions(reader: _Reader) -> dict[int, int]:
    """The version numbers written outermost first, before the input layer; per layer index."""
    versions = {}
    for index in reversed(range(len(ARCHITECTURE))):
        kind, version = ARCHITECTURE[index][0], reader.int()
        allowed = (1,) if kind in _WRAPPERS else (2, 3) if index == 0 else (1, 2)
        if version not in allowed:
            raise reader.fail(f"layer {index} ({kind}) has wrapper version {version}, expected one of {allowed}")
        versions[index] = version
    return versions


def _read_layer_trailer(reader: _Reader, version: int, *, bottom: bool) -> None:
    """add_layer's state after the layer: three flags and the training-time tensors (ignored)."""
    for _ in range(3):
        reader.bool()
    tensors = 3 if bottom or version == 2 else 2  # x_grad, cached_output, and grad_final / params_grad
    for _ in range(tensors):
        reader.tensor()
    if bottom and version == 3:
        reader.int()  # sample expansion factor


def _read_layer(reader: _Reader, op: tuple, channels: int) -> tuple[dict[str, np.ndarray], int]:
    """One layer's parameters (checked against ``op``) and the channel count after it."""
    kind = op[0]
    reader.version(_VERSIONS[kind], kind)
    if kind == "con":
        return _read_con(reader, op, channels)
    if kind == "affine":
        return _read_affine(reader, channels), channels
    if kind in ("max_pool", "avg_pool"):
        _, size, stride = op
        padding = size // 2 if stride == 1 else 0
        found = tuple(reader.int() for _ in range(6))
        reader.expect((size, size, stride, stride, padding, padding), found, f"{kind} (nr, nc, strides, paddings)")
        return {}, channels
    if kind == "fc":
        return _read_fc(reader, op, channels), op[1]
    return {}, channels  # relu, add_prev: no parameters (add_prev's channels: the larger, as here)


def _read_con(reader: _Reader, op: tuple, channels: int) -> tuple[dict[str, np.ndarray], int]:
    _, filters, size, stride = op
    params = reader.tensor()
    padding = size // 2 if stride == 1 else 0
    found = tuple(reader.int() for _ in range(7))
    reader.expect((filters, size, size, stride, stride, padding, padding), found,
                  "con (filters, nr, nc, strides, paddings)")
    reader.expect((filters, channels, size, size), reader.alias(), "con filter shape")
    reader.expect((1, filters, 1, 1), reader.alias(), "con bias shape")
    reader.multipliers()
    weights = filters * channels * size * size
    reader.expect(weights + filters, params.size, "con parameter count")
    flat = params.reshape(-1)
    return {"weight": flat[:weights].reshape(filters, channels, size, size), "bias": flat[weights:]}, filters


def _read_affine(reader: _Reader, channels: int) -> dict[str, np.ndarray]:
    params = reader.tensor()
    reader.expect((1, channels, 1, 1), reader.alias(), "affine gamma shape")
    reader.expect((1, channels, 1, 1), reader.alias(), "affine beta shape")
    reader.expect(_CONV_MODE, reader.int(), "affine mode")
    reader.expect(2 * channels, params.size, "affine parameter count")
    flat = params.reshape(-1)
    return {"gamma": flat[:channels], "beta": flat[channels:]}


def _read_fc(reader: _Reader, op: tuple, channels: int) -> dict[str, np.ndarray]:
    reader.expect((op[1], channels), (reader.int(), reader.int()), "fc (outputs, inputs)")
    params = reader.tensor()
    reader.expect((channels, op[1], 1, 1), reader.alias(), "fc weight shape")
    reader.alias()  # biases: unused without a bias
    reader.expect(_FC_NO_BIAS, reader.int(), "fc bias mode")
    reader.multipliers()
    reader.expect(channels * op[1], params.size, "fc parameter count")
    return {"weight": params.reshape(channels, op[1])}  # (inputs, outputs): y = x @ W


def _add_zero_padded(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """dlib's ``tt::add(dest, a, b)`` with dest the larger of each axis: both zero-padded at the end."""
    shape = [max(x, y) for x, y in zip(a.shape, b.shape)]

    def pad(t: torch.Tensor) -> torch.Tensor:
        if list(t.shape) == shape:
            return t
        return F.pad(t, (0, shape[3] - t.shape[3], 0, shape[2] - t.shape[2], 0, shape[1] - t.shape[1]))

    return pad(a) + pad(b)


class DlibResNet(nn.Module):
    """(B, 150, 150, 3) uint8 RGB chips (``dlib.get_face_chip`` output) -> (B, 128) float32 descriptors,
    equal to ``face_recognition_model_v1.compute_face_descriptor(chip)`` (fp32, within 1e-4). Each affine is
    folded into the convolution before it (in float64), as inference engines fold batch norm."""

    def __init__(self, net: DlibNet):
        super().__init__()
        self.register_buffer("means", torch.tensor(net.means, dtype=torch.float32).reshape(1, 3, 1, 1),
                             persistent=False)
        self.ops: list[tuple] = []
        self.convs = nn.ModuleList()
        for index, op in enumerate(ARCHITECTURE):
            if op[0] in ("affine", "fc"):
                continue  # affine: folded into the conv before it (always a conv); fc: in forward
            if op[0] == "con":
                self.ops.append(("con", len(self.convs)))
                self.convs.append(self._folded_conv(op, net.params[index], net.params[index + 1]))
            else:
                self.ops.append(op)
        self.fc = nn.Parameter(torch.from_numpy(net.params[-1]["weight"].copy()), requires_grad=False)
        self.eval().requires_grad_(False)

    @staticmethod
    def _folded_conv(op: tuple, con: dict, affine: dict) -> nn.Conv2d:
        _, filters, size, stride = op
        conv = nn.Conv2d(con["weight"].shape[1], filters, size, stride, padding=size // 2 if stride == 1 else 0)
        gamma, beta = affine["gamma"].astype(np.float64), affine["beta"].astype(np.float64)
        weight = con["weight"].astype(np.float64) * gamma.reshape(-1, 1, 1, 1)
        bias = con["bias"].astype(np.float64) * gamma + beta
        conv.weight.data = torch.from_numpy(weight.astype(np.float32))
        conv.bias.data = torch.from_numpy(bias.astype(np.float32))
        return conv

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = (chips.permute(0, 3, 1, 2).float() - self.means) / 256.0
        x = x.contiguous(memory_format=torch.channels_last)
        tags: dict[int, torch.Tensor] = {}
        for op in self.ops:
            kind = op[0]
            if kind == "con":
                x = self.convs[op[1]](x)
            elif kind == "relu":
                x = F.relu(x)
            elif kind == "tag":
                tags[op[1]] = x
            elif kind == "skip":
                x = tags[op[1]]
            elif kind == "add_prev":
                x = _add_zero_padded(x, tags[op[1]])
            elif kind == "max_pool":
                x = F.max_pool2d(x, op[1], op[2])
            else:  # avg_pool (affine and fc are not in self.ops)
                x = x.mean((2, 3), keepdim=True) if op[1] == 0 else F.avg_pool2d(x, op[1], op[2])
        return (x.flatten(1).float() @ self.fc).float()


def dlib_resnet_module(path: str | os.PathLike) -> DlibResNet:
    """The dlib face recognition .dat file as a frozen torch module (see `DlibResNet`)."""
    return DlibResNet(read_dat(path))


ENGINE_VARIABLE = "EXTRACT_DLIB_ENGINE"


def dlib_engine(device: torch.device) -> str:
    """Which implementation runs dlib's ResNet: ``$EXTRACT_DLIB_ENGINE`` (auto, torch, dlib). auto is torch on
    every device: batched, it beats dlib's own net on CPU too (PERFORMANCE.md), with the same rows."""
    return engine_from_environment(ENGINE_VARIABLE, ("auto", "torch", "dlib"), "torch")
