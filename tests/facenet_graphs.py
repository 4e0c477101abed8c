"""Test fixture builders: an `InceptionResnetV1` written as a frozen TensorFlow GraphDef (protobuf wire
format, by hand), in either form `extract.backbones.facenet_graph` reads: separate batch norms (as
Sandberg's freeze_graph.py writes them) or batch norms folded into the convolutions (as OpenCV-ready
graphs carry them). Only the nodes the converter looks at are written, not a runnable graph."""
from __future__ import annotations

import struct

import numpy as np
import torch

from extract.backbones import facenet_graph
from extract.backbones.inception_resnet_v1 import BN_EPS, InceptionResnetV1

ROOT = facenet_graph.ROOT


def varint(value: int) -> bytes:
    value &= (1 << 64) - 1  # negative ints as 64-bit two's complement, as protobuf writes them
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def length_field(number: int, data: bytes) -> bytes:
    return varint(number << 3 | 2) + varint(len(data)) + data


def tensor_proto(array: np.ndarray, *, as_values: bool = False) -> bytes:
    """float32 or int32 array; ``as_values`` writes float_val / int_val instead of tensor_content."""
    code = {np.dtype(np.float32): 1, np.dtype(np.int32): 3}[array.dtype]
    shape = b"".join(length_field(2, varint(1 << 3) + varint(size)) for size in array.shape)
    out = varint(1 << 3) + varint(code) + length_field(2, shape)
    if not as_values:
        return out + length_field(4, array.astype(array.dtype.newbyteorder("<")).tobytes())
    if code == 1:
        return out + length_field(5, array.astype("<f4").tobytes())
    return out + length_field(7, b"".join(varint(int(v)) for v in array.reshape(-1)))


def node(name: str, op: str, inputs: tuple[str, ...] = (), attrs: dict[str, bytes] | None = None) -> bytes:
    body = length_field(1, name.encode()) + length_field(2, op.encode())
    body += b"".join(length_field(3, item.encode()) for item in inputs)
    for key, value in (attrs or {}).items():
        body += length_field(5, length_field(1, key.encode()) + length_field(2, value))
    return body


def const(name: str, array: np.ndarray, *, as_values: bool = False) -> bytes:
    return node(name, "Const", attrs={"value": length_field(8, tensor_proto(array, as_values=as_values))})


def float_attr(value: float) -> bytes:
    return varint(4 << 3 | 5) + struct.pack("<f", value)


def graph(nodes: list[bytes]) -> bytes:
    return b"".join(length_field(1, item) for item in nodes)


def numpy_state(model: InceptionResnetV1) -> dict[str, np.ndarray]:
    return {key: value.detach().numpy().astype(np.float32) for key, value in model.state_dict().items()
            if not key.endswith("num_batches_tracked")}


def _conv_nodes(state: dict, scope: str, prefix: str, *, folded: bool) -> list[bytes]:
    kernel = state[f"{prefix}.conv.weight"].transpose(2, 3, 1, 0)  # OIHW -> HWIO
    gamma, beta = state[f"{prefix}.bn.weight"], state[f"{prefix}.bn.bias"]
    mean, var = state[f"{prefix}.bn.running_mean"], state[f"{prefix}.bn.running_var"]
    if not folded:
        stats = {"gamma": gamma, "beta": beta, "moving_mean": mean, "moving_variance": var}
        return [const(f"{scope}/weights", kernel)] + [const(f"{scope}/BatchNorm/{k}", v) for k, v in stats.items()]
    scale = gamma / np.sqrt(var + BN_EPS)
    return [const(f"{scope}/weights", (kernel * scale).astype(np.float32)),
            node(f"{scope}/Conv2D", "Conv2D", ("input", f"{scope}/weights")),
            const(f"{scope}/Conv2D_bn_offset", (beta - mean * scale).astype(np.float32)),
            node(f"{scope}/BatchNorm/cond/FusedBatchNorm_1", "BiasAdd",
                 (f"{scope}/Conv2D", f"{scope}/Conv2D_bn_offset"))]


def _residual_nodes(state: dict, block: str, prefix: str, scale: float) -> list[bytes]:
    scope = f"{ROOT}/{block}"
    return [const(f"{scope}/Conv2d_1x1/weights", state[f"{prefix}.conv2d.weight"].transpose(2, 3, 1, 0)),
            const(f"{scope}/Conv2d_1x1/biases", state[f"{prefix}.conv2d.bias"]),
            const(f"{scope}/mul/x", np.array(scale, dtype=np.float32), as_values=True)]


def _bottleneck_nodes(state: dict, epsilon: float) -> list[bytes]:
    scope = f"{ROOT}/Bottleneck"
    variance = state["last_bn.running_var"] + BN_EPS - epsilon  # the same output with the graph's epsilon
    stats = {"gamma": state["last_bn.weight"], "beta": state["last_bn.bias"],
             "moving_mean": state["last_bn.running_mean"], "moving_variance": variance.astype(np.float32)}
    return ([const(f"{scope}/weights", state["last_linear.weight"].T)]
            + [const(f"{scope}/BatchNorm/{k}", v) for k, v in stats.items()]
            + [node(f"{scope}/BatchNorm/cond/FusedBatchNorm_1", "FusedBatchNorm",
                    tuple(f"{scope}/BatchNorm/{k}" for k in stats), {"epsilon": float_attr(epsilon)})])


def graph_bytes(model: InceptionResnetV1, *, folded: bool, scales: dict[str, float] | None = None,
                bottleneck_epsilon: float = 1e-5) -> bytes:
    """``model`` as a GraphDef; ``scales`` overrides some blocks' residual scales (graph scope -> scale)."""
    state = numpy_state(model)
    nodes = [node("input", "Placeholder")]
    for scope, prefix in facenet_graph.conv_scopes().items():
        nodes += _conv_nodes(state, scope, prefix, folded=folded)
    for block, prefix, _, scale in facenet_graph.residual_blocks():
        nodes += _residual_nodes(state, block, prefix, (scales or {}).get(block, scale))
    return graph(nodes + _bottleneck_nodes(state, bottleneck_epsilon))


def random_model(seed: int = 0) -> InceptionResnetV1:
    """A random InceptionResnetV1 whose batch norms are not the identity (non-trivial statistics)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = InceptionResnetV1()
    for module in model.modules():
        if isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d)):
            n = module.num_features
            module.weight.data = 0.5 + torch.rand(n, generator=generator)
            module.bias.data = 0.1 * torch.randn(n, generator=generator)
            module.running_mean = 0.1 * torch.randn(n, generator=generator)
            module.running_var = 0.5 + torch.rand(n, generator=generator)
    return model.eval()
