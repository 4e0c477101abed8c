"""dlib's face-recognition ResNet in torch (extract/backbones/dlib_torch.py) against dlib itself.

Real faces: 20 CelebA photos from ../shared/data (skipped when absent), cut into dlib's 150x150 chips
by the backbone's own aligner (YuNet box -> shape predictor -> get_face_chip). The issue's tolerance:
each descriptor component within 1e-4 of ``compute_face_descriptor(chip)`` (measured: ~5e-7).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from extract.backbones import dlib_resnet, load_backbone
from extract.backbones.dlib_torch import (ENGINE_VARIABLE, DlibResNet, dlib_engine, dlib_resnet_module,
                                          read_dat)
from extract.errors import UsageError, WeightsUnavailable

CELEBA = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "celeba" / "img_align_celeba"
TOLERANCE = 1e-4
N_FACES = 20

pytestmark = pytest.mark.skipif(not dlib_resnet.SPEC.available_offline(),
                                reason="face-recognition-models / dlib not installed")
needs_celeba = pytest.mark.skipif(not CELEBA.is_dir(), reason="no CelebA images")


def recognizer_path() -> Path:
    return dlib_resnet.default_weights_file(dlib_resnet.SPEC)


@pytest.fixture(scope="module")
def module() -> DlibResNet:
    return dlib_resnet_module(recognizer_path())


@pytest.fixture(scope="module")
def chips_and_dlib() -> tuple[np.ndarray, np.ndarray]:
    """(N, 150, 150, 3) uint8 RGB chips of real faces and dlib's (N, 128) descriptors of them."""
    if not CELEBA.is_dir():
        pytest.skip("no CelebA images")
    import dlib

    from extract.faces import FaceDetector

    landmarks = dlib_resnet.package_model_file("dlib_resnet", dlib_resnet.REQUIREMENT, dlib_resnet.LANDMARKS_FILE)
    aligner = dlib_resnet.DlibChip(str(landmarks))
    detector = FaceDetector()
    images = [cv2.imread(str(p)) for p in sorted(CELEBA.glob("*.jpg"))[:N_FACES]]
    chips = np.stack([aligner(image, detector.largest(image)) for image in images])
    net = dlib.face_recognition_model_v1(str(recognizer_path()))
    reference = np.stack([np.asarray(net.compute_face_descriptor(chip), np.float32) for chip in chips])
    return chips, reference


def embed(module: DlibResNet, chips: np.ndarray) -> np.ndarray:
    with torch.inference_mode():
        return module(torch.from_numpy(chips)).numpy()


@needs_celeba
def test_torch_net_equals_dlib_descriptors_on_real_faces(module, chips_and_dlib):
    chips, reference = chips_and_dlib
    ours = embed(module, chips)
    assert ours.shape == (N_FACES, 128) and ours.dtype == np.float32
    assert np.abs(ours - reference).max() <= TOLERANCE
    # not a trivially small output: the descriptors differ between people by far more than the tolerance
    assert np.abs(reference[0] - reference[1]).max() > 100 * TOLERANCE


@needs_celeba
def test_a_batch_gives_each_chip_its_own_descriptor(module, chips_and_dlib):
    chips, _ = chips_and_dlib
    batched = embed(module, chips[:8])
    single = np.concatenate([embed(module, chips[i:i + 1]) for i in range(8)])
    np.testing.assert_allclose(batched, single, rtol=0, atol=1e-6)


def test_parser_reads_the_whole_file_with_dlibs_input_means():
    net = read_dat(recognizer_path())
    np.testing.assert_allclose(net.means, (122.782, 117.001, 104.298), atol=1e-4)
    convs = [p["weight"].shape for p in net.params if "weight" in p and p["weight"].ndim == 4]
    assert len(convs) == 29 and convs[0] == (32, 3, 7, 7) and convs[-1] == (256, 256, 3, 3)
    assert net.params[-1]["weight"].shape == (256, 128)


@pytest.mark.parametrize("damage, detail", [("truncated", ""), ("version", ""), ("other_dlib_file", ""), ("empty", ""),
                                            ("trailing", "1 bytes left after the last layer")])
def test_a_file_that_is_not_the_net_gives_one_clear_error(tmp_path, damage, detail):
    data = recognizer_path().read_bytes()
    if damage == "truncated":
        data = data[: len(data) // 2]
    elif damage == "version":
        data = data.replace(b"\x05con_4", b"\x05con_9", 1)
    elif damage == "other_dlib_file":
        landmarks = dlib_resnet.package_model_file("dlib_resnet", dlib_resnet.REQUIREMENT,
                                                   dlib_resnet.LANDMARKS_FILE)
        data = landmarks.read_bytes()
    elif damage == "trailing":
        data += b"\x00"
    else:
        data = b""
    path = tmp_path / "broken.dat"
    path.write_bytes(data)
    with pytest.raises(WeightsUnavailable, match=f"{path}: not dlib's face recognition ResNet.*{detail}") as caught:
        read_dat(path)
    assert "\n" not in str(caught.value)


def test_engine_follows_the_environment_variable(monkeypatch):
    monkeypatch.delenv(ENGINE_VARIABLE, raising=False)
    assert dlib_engine(torch.device("cpu")) == "torch" == dlib_engine(torch.device("cuda"))  # faster on both
    for asked in ("torch", "dlib"):
        monkeypatch.setenv(ENGINE_VARIABLE, asked.upper())
        assert dlib_engine(torch.device("cpu")) == asked == dlib_engine(torch.device("cuda"))
    monkeypatch.setenv(ENGINE_VARIABLE, "tensorrt")
    with pytest.raises(UsageError, match="EXTRACT_DLIB_ENGINE='tensorrt' is not one of auto, torch, dlib"):
        dlib_engine(torch.device("cpu"))


@pytest.mark.parametrize("tta", ["none", "flip"])
def test_both_engines_make_resumable_records(monkeypatch, tta):
    """The store's resume keys (preprocessing, tta, precision) are the same for both engines, so a
    store made by one is resumed by the other; only ``implementation`` says which ran."""
    from extract.backbones._registry import with_tta

    records = {}
    for engine in ("dlib", "torch"):
        monkeypatch.setenv(ENGINE_VARIABLE, engine)
        backbone = with_tta(load_backbone("dlib_resnet", device="cpu"), tta)
        records[engine] = backbone
    dlib_side, torch_side = records["dlib"], records["torch"]
    for key in ("preprocessing", "tta", "precision", "weights", "aligner_weights", "dim"):
        assert dlib_side.metadata[key] == torch_side.metadata[key], key
    assert torch_side.metadata["implementation"].startswith("torch") and torch_side.uses_torch_device
    assert not torch_side.runs_in_workers and torch_side.input_shape == (150, 150, 3)
    assert dlib_side.metadata["implementation"].startswith("dlib") and dlib_side.runs_in_workers


@needs_celeba
@pytest.mark.parametrize("tta", ["none", "flip"])
def test_pipeline_rows_equal_between_engines(monkeypatch, tta):
    from extract.embed import embed_paths

    paths = [str(p) for p in sorted(CELEBA.glob("*.jpg"))[:4]]
    rows = {}
    for engine in ("dlib", "torch"):
        monkeypatch.setenv(ENGINE_VARIABLE, engine)
        rows[engine] = embed_paths(paths, "dlib_resnet", device="cpu", workers=0, tta=tta)
    (dlib_rows, dlib_status), (torch_rows, torch_status) = rows["dlib"], rows["torch"]
    np.testing.assert_array_equal(dlib_status, torch_status)
    assert not np.isnan(dlib_rows).any()
    assert np.abs(dlib_rows - torch_rows).max() <= TOLERANCE
