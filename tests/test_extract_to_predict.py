"""The whole chain on the tiny test backbone, with nothing faked: `extract` embeds a generated CelebA
folder into a store, `classify train` fits a head on it, `classify predict` runs the same backbone on
image files and must give, for images of the dataset, the probabilities the head gives on their
stored embeddings."""
from __future__ import annotations

import json

import numpy as np
import pytest

from classify import cli as classify_cli
from classify import treatment
from classify.calibration import brier_score
from classify.decision import Decision
from classify.model import GenderModel
from extract.cli import main as extract_main
from features.store import FeatureStore
from tests.fixtures import make_celeba

pytestmark = pytest.mark.usefixtures("tiny_backbones")


def _extract_and_train(tmp_path, *, n: int, unit_rows: int, train: list[str]):
    """A generated CelebA folder, extracted with the tiny backbone, and a logreg head trained on it:
    (dataset root, store path, results folder)."""
    root = make_celeba(tmp_path, n=n)
    store_path, out = tmp_path / "features.zarr", tmp_path / "heads"
    assert extract_main(["--dataset", "celeba", "--root", str(root), "--backbones", "tiny_test",
                         "--store", str(store_path), "--workers", "0", "--unit-rows", str(unit_rows),
                         "--plugin", "tests.extract_tiny", "--no-progress"]) == 0
    assert classify_cli.main(["train", "--store", str(store_path), "--heads", "logreg", "--bootstrap", "20",
                              *train, "--out", str(out)]) == 0
    return root, store_path, out


def test_a_calibrated_head_predicts_its_calibrated_probabilities(tmp_path):
    """Platt calibration and the balanced threshold, chosen on val: predict reports the calibrated p(male)
    and decides at the recorded threshold, so its numbers are those in the results."""
    root, store_path, out = _extract_and_train(tmp_path, n=60, unit_rows=32,
                                               train=["--calibrate", "platt", "--threshold", "balanced"])
    head_path = out / "tiny_test__logreg.npz"
    model = GenderModel.load(head_path)
    head, record = model.head, model.record
    decision = Decision.from_json(record["decision"])
    assert decision.calibrator.method == "platt" and decision.threshold["rule"] == "balanced"

    test = FeatureStore.open(store_path).read("tiny_test", "test")
    images = [str(root / "img_align_celeba" / f"{row + 1:06d}.jpg") for row in test.index]
    predictions = GenderModel.load(head_path).predict_images(images, device="cpu")
    said_male = np.array([p.gender == "male" for p in predictions])
    p_male = np.where(said_male, [p.probability for p in predictions], [1 - p.probability for p in predictions])

    x = treatment.apply(test.x, record["treatment"]["chosen"], ("tiny_test",), {"tiny_test": test.x.shape[1]})
    raw = head.predict_proba(x)[:, 1]
    calibrated = decision.calibrator.apply(raw)
    assert np.abs(calibrated - raw).max() > 1e-3  # the calibrator changes the probabilities
    np.testing.assert_allclose(p_male, calibrated, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(said_male, calibrated > decision.value)
    # the results' calibrated test numbers are the ones predict's output gives
    recorded = record["metrics"]["test"]
    assert recorded["calibration"]["after"]["brier"] == pytest.approx(brier_score(test.gender, p_male), abs=1e-6)
    assert recorded["accuracy"] == pytest.approx(np.mean(said_male == (test.gender == 1)))
    errors = json.loads((out / "errors.json").read_text())
    assert len(errors["errors"]) == int(np.sum(said_male != (test.gender == 1)))
    assert all(row["path"].startswith(str(root)) for row in errors["errors"])


def test_extract_train_predict_on_the_tiny_backbone(tmp_path):
    root, store_path, out = _extract_and_train(tmp_path, n=40, unit_rows=16,
                                               train=["--calibrate", "none"])  # raw: the head's own numbers
    head_path = out / "tiny_test__logreg.npz"

    test = FeatureStore.open(store_path).read("tiny_test", "test")
    images = [str(root / "img_align_celeba" / f"{row + 1:06d}.jpg") for row in test.index]
    (tmp_path / "empty.jpg").write_bytes(b"")
    assert len(images) == 8  # 20% of 40
    predictions = GenderModel.load(head_path).predict_images([*images, str(tmp_path / "empty.jpg")], device="cpu")

    model = GenderModel.load(head_path)

    head, record = model.head, model.record
    x = treatment.apply(test.x, record["treatment"]["chosen"], ("tiny_test",),
                        {"tiny_test": test.x.shape[1]})
    male = head.predict_proba(x)[:, 1]
    assert [p.status for p in predictions] == ["ok"] * len(images) + ["unreadable"]
    assert [p.gender for p in predictions[:-1]] == ["male" if p > 0.5 else "female" for p in male]
    np.testing.assert_allclose([p.probability for p in predictions[:-1]], np.maximum(male, 1 - male),
                               rtol=1e-5)
    assert all(p.face == 0 and p.box is None for p in predictions[:-1])  # no face detector: no box
    # --all-faces with a backbone that takes the whole image: still one row per image, the same numbers
    assert GenderModel.load(head_path).predict_images(images, device="cpu", all_faces=True) == predictions[:-1]
