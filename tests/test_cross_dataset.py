"""Cross-dataset evaluation, pooled training, feature treatment, the safe head file and the recommendation."""
from __future__ import annotations

import json
import logging
import pickle
import sys
import types
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import (accuracy_score, balanced_accuracy_score, brier_score_loss, f1_score, precision_score,
                             recall_score, roc_auc_score)

from classify import cli
from classify.compare import choose, leaderboard, recommend
from classify.decision import Decision
from classify.model import GenderModel
from classify.treatment import apply as apply_treatment
from features.store import Status
from tests.fixtures import result_record, scores_record, typed
from tests.test_classify_cli import make_store

TEST_INVALID = {460: Status.NO_FACE, 470: Status.NO_FACE, 480: Status.UNREADABLE}  # test rows of the eval store


@pytest.fixture(scope="module")
def crossed(tmp_path_factory):
    """Train on store a, evaluated on store b (another seed, a weaker signal, 3 invalid test rows)."""
    tmp = tmp_path_factory.mktemp("cross")
    a = make_store(tmp / "a.zarr", dims={"bb_a": 8, "bb_b": 4}, seed=0)
    b = make_store(tmp / "b.zarr", dims={"bb_a": 8, "bb_b": 4}, seed=1, shift=1.0, invalid=TEST_INVALID)
    out = tmp / "runs"
    assert cli.main(["train", "--store", a.path, "--eval-store", b.path, "--backbones", "bb_a", "bb_a+bb_b",
                     "--heads", "logreg", "--out", str(out), "--bootstrap", "100"]) == 0
    return a, b, out


def test_eval_store_metrics_equal_an_independent_computation(crossed):
    _, b, out = crossed
    record = json.loads((out / "bb_a+bb_b__logreg.json").read_text())
    cross = record["cross_dataset"]["synthetic:b"]
    assert cross["rows"] == "test" and cross["fingerprint"] == b.fingerprint
    model = GenderModel.load(out / "bb_a+bb_b__logreg.npz")
    head, _ = model.head, model.record
    decision = Decision.from_json(record["decision"])  # the calibrator and threshold chosen on a's val
    for split, got in (("test", cross["report"]), ("val", cross["val"])):
        rows = b.read(["bb_a", "bb_b"], split)
        x = apply_treatment(rows.x, record["treatment"]["chosen"], ("bb_a", "bb_b"), {"bb_a": 8, "bb_b": 4})
        proba = decision.calibrator.apply(head.predict_proba(x)[:, 1])
        pred = (proba > decision.value).astype(int)
        smiling = b.attributes["smiling"][rows.index] == 1
        groups = {g["group"]: g for g in got["groups"]["families"]["smiling"]["groups"]}
        assert groups["yes"]["n"] == smiling.sum()
        assert groups["yes"]["accuracy"] == pytest.approx(accuracy_score(rows.gender[smiling], pred[smiling]))
        assert groups["no"]["male_recall"] == pytest.approx(recall_score(rows.gender[~smiling], pred[~smiling]))
        assert got["groups"]["summary"]["balanced_accuracy"] == pytest.approx(
            balanced_accuracy_score(rows.gender, pred))
        assert got["calibration"]["after"]["brier"] == pytest.approx(brier_score_loss(rows.gender, proba))
        assert got["n"] == len(rows.gender)
        assert got["accuracy"] == pytest.approx(accuracy_score(rows.gender, pred))
        assert got["recall"] == pytest.approx(recall_score(rows.gender, pred))
        assert got["female_recall"] == pytest.approx(recall_score(rows.gender, pred, pos_label=0))
        assert got["precision"] == pytest.approx(precision_score(rows.gender, pred))
        assert got["f1"] == pytest.approx(f1_score(rows.gender, pred))
        assert got["roc_auc"] == pytest.approx(roc_auc_score(rows.gender, proba))
        assert got["ci95"]["accuracy"][0] <= got["accuracy"] <= got["ci95"]["accuracy"][1]
    report = cross["report"]
    assert report["n"] == 147 and report["invalid"] == {"no_face": 2, "unreadable": 1}
    n_test = int(np.sum(b.split == 2))
    assert report["accuracy_all"] == pytest.approx(report["accuracy"] * 147 / n_test)


def test_a_one_split_eval_store_is_reported_on_all_rows_and_chooses_nothing(crossed, tmp_path):
    a, _, _ = crossed
    wild = make_store(tmp_path / "wild.zarr", n=100, dims={"bb_a": 8}, seed=5, split=np.full(100, 2, np.int8),
                      invalid={3: Status.NO_FACE})
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", a.path, "--eval-store", wild.path, "--backbones", "bb_a", "--heads",
                     "logreg", "--out", str(out), "--bootstrap", "20"]) == 0
    record = json.loads((out / "bb_a__logreg.json").read_text())
    cross = record["cross_dataset"]["synthetic:wild"]  # the training store is 'synthetic' too: named by file
    assert cross["rows"] == "all" and cross["val"] is None and cross["report"]["n"] == 99
    assert all(t["cross_val_accuracy"] is None for t in record["treatment"]["tried"])  # chosen on val alone


def test_leaderboard_shows_in_domain_and_cross_dataset_side_by_side(crossed):
    _, _, out = crossed
    text = (out / "leaderboard.md").read_text()
    header = text.splitlines()[0]
    assert "| accuracy |" in header and "| synthetic:b_accuracy |" in header and "synthetic:b_female_recall" in header
    assert "Recommended:" in text and "Best out of domain on synthetic:b:" in text


def test_evaluate_cli_reproduces_the_train_time_cross_dataset_record(crossed, tmp_path, capsys):
    _, b, out = crossed
    result = tmp_path / "eval.json"
    assert cli.main(["evaluate", "--head", str(out / "bb_a__logreg.npz"), "--store", b.path,
                     "--bootstrap", "100", "--out", str(result)]) == 0
    printed = capsys.readouterr().out
    assert "male recall" in printed and "female recall" in printed and "invalid counted as errors" in printed
    got = json.loads(result.read_text())
    recorded = json.loads((out / "bb_a__logreg.json").read_text())["cross_dataset"]["synthetic:b"]
    assert got["report"] == recorded["report"] and got["val"] == recorded["val"]


def test_evaluate_all_rows_scores_every_split_of_another_store_only(crossed, tmp_path, capsys):
    a, b, out = crossed
    result = tmp_path / "all.json"
    head = str(out / "bb_a__logreg.npz")
    assert cli.main(["evaluate", "--head", head, "--store", b.path, "--all-rows", "--bootstrap", "50",
                     "--out", str(result)]) == 0
    got = json.loads(result.read_text())
    every = b.read(["bb_a"])  # all splits, valid rows
    model = GenderModel.load(out / "bb_a__logreg.npz")
    loaded, record = model.head, model.record
    x = apply_treatment(every.x, record["treatment"]["chosen"], ("bb_a",), {"bb_a": 8})
    expected = Decision.from_json(record["decision"]).is_male(
        Decision.from_json(record["decision"]).p_male(loaded.predict_proba(x)[:, 1]))
    assert got["rows"] == "all" and got["val"] is None and got["report"]["n"] == len(every.gender)
    assert got["report"]["accuracy"] == pytest.approx(accuracy_score(every.gender, expected))
    capsys.readouterr()
    assert cli.main(["evaluate", "--head", head, "--store", a.path, "--all-rows"]) == 2
    err = capsys.readouterr().err
    assert "was trained on" in err and err.count("\n") == 1


def test_evaluate_refuses_a_store_with_other_weights(crossed, tmp_path, capsys):
    _, _, out = crossed
    other = make_store(tmp_path / "o.zarr", dims={"bb_a": 8}, weights="sha256:" + "ab" * 32)
    assert cli.main(["evaluate", "--head", str(out / "bb_a__logreg.npz"), "--store", other.path]) == 2
    err = capsys.readouterr().err
    assert "backbone bb_a has another weights" in err and err.count("\n") == 1


def test_pooled_training_uses_both_train_splits(tmp_path):
    a = make_store(tmp_path / "a.zarr", n=400, dims={"bb": 6}, seed=0)
    b = make_store(tmp_path / "b.zarr", n=200, dims={"bb": 6}, seed=1)
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", a.path, "--store", b.path, "--heads", "logreg", "--out", str(out),
                     "--bootstrap", "50"]) == 0
    record = json.loads((out / "bb__logreg.json").read_text())
    assert record["counts"]["train"]["n"] == 200 + 100 and record["counts"]["val"]["n"] == 100 + 50
    assert [s["fingerprint"] for s in record["training_stores"]] == [a.fingerprint, b.fingerprint]
    assert record["config"]["stores"] == [a.path, b.path]


def test_pooled_training_refuses_stores_with_different_weights(tmp_path, capsys):
    a = make_store(tmp_path / "a.zarr", n=200, dims={"bb": 6})
    b = make_store(tmp_path / "b.zarr", n=200, dims={"bb": 6}, weights="sha256:" + "cd" * 32)
    assert cli.main(["train", "--store", a.path, "--store", b.path, "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "backbone bb has another weights" in err and "re-extract" in err and err.count("\n") == 1
    assert not (tmp_path / "o").exists()


def test_l2_treatment_follows_the_store_hint_and_is_applied_at_predict(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=300, dims={"bb": 6}, metadata={"normalisation": "l2"})
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", store.path, "--heads", "logreg", "--treatments", "l2", "--out", str(out),
                     "--bootstrap", "50"]) == 0
    record = json.loads((out / "bb__logreg.json").read_text())
    assert record["treatment"]["chosen"] == {"name": "l2", "per_backbone": {"bb": "l2"}}
    model = GenderModel.load(out / "bb__logreg.npz")
    head, _ = model.head, model.record
    test = store.read("bb", "test")
    normed = test.x / np.linalg.norm(test.x, axis=1, keepdims=True)
    accuracy = np.mean(head.predict(normed) == test.gender)
    assert accuracy == pytest.approx(record["metrics"]["test"]["accuracy"])


# ---------------------------------------------------------------------------------------- forged heads


class _Payload:
    """A pickle that creates a file when unpickled: what an attacker would send as a head."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return open, (str(self.marker), "w")


def _copy_run(out: Path, dest: Path, name: str = "bb_a__logreg") -> tuple[Path, dict]:
    dest.mkdir(exist_ok=True)
    (dest / f"{name}.npz").write_bytes((out / f"{name}.npz").read_bytes())
    return dest / f"{name}.npz", json.loads((out / f"{name}.json").read_text())


def _rehash(head: Path, record: dict) -> None:
    import hashlib

    record["head_file"]["sha256"] = hashlib.sha256(head.read_bytes()).hexdigest()
    head.with_suffix(".json").write_text(json.dumps(record))


@pytest.fixture
def no_backbone(monkeypatch):
    """A stand-in `extract` whose embed_paths records any call: a refused head must cause none."""
    calls = []
    def ran(*args, **kwargs):
        calls.append(args)
        pytest.fail("a backbone ran")

    monkeypatch.setitem(sys.modules, "extract", types.SimpleNamespace(embed_paths=ran, embed_images=ran))
    return calls


def test_a_pickle_renamed_npz_is_refused_and_never_run(crossed, tmp_path, capsys, no_backbone):
    _, _, out = crossed
    head, record = _copy_run(out, tmp_path / "h")
    marker = tmp_path / "pwned"
    head.write_bytes(pickle.dumps(_Payload(marker)))
    _rehash(head, record)  # whoever sends a head sends its sidecar too
    assert cli.main(["predict", "--head", str(head), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "is not a head file" in err and err.count("\n") == 1
    assert not marker.exists() and no_backbone == []


@pytest.mark.parametrize("edit, message", [
    (lambda r: r["config"].update(backbones=["bb_b"]) or r["store"]["backbones"].update(
        bb_b={**r["store"]["backbones"]["bb_a"], "dim": 4}), "bb_b"),
    (lambda r: r["store"]["backbones"]["bb_a"].update(dim=9), "sidecar names"),
    (lambda r: r["config"].update(backbones=["../../etc"]), "list of backbone names"),
    (lambda r: r["config"].update(head="svm"), "unknown head 'svm'"),
    (lambda r: r["store"]["backbones"]["bb_a"]["metadata"].update(weights="sha256:" + "ee" * 32), "sidecar names"),
    (lambda r: r.update(version=1), "retrain"),
    (lambda r: r.update(treatment="x"), "no treatment record"),  # wrong types: one line, not a traceback
    (lambda r: r["store"]["backbones"]["bb_a"].update(metadata="oops"), "metadata recorded for backbone 'bb_a'"),
    (lambda r: r.update(training_stores="oops"), "training_stores must be a list"),
])
def test_an_edited_sidecar_is_one_line_before_any_backbone(crossed, tmp_path, capsys, no_backbone, edit, message):
    _, _, out = crossed
    head, record = _copy_run(out, tmp_path / "h")
    edit(record)
    head.with_suffix(".json").write_text(json.dumps(record))
    assert cli.main(["predict", "--head", str(head), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err
    assert no_backbone == []


def test_an_old_joblib_head_is_refused_with_retrain(tmp_path, capsys):
    old = tmp_path / "bb__logreg.joblib"
    old.write_bytes(b"old pickle")
    assert cli.main(["predict", "--head", str(old), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "old pickle format" in err and "retrain" in err and err.count("\n") == 1


# ---------------------------------------------------------------------------------------- recommendation


def _run(name: str, val: float, *, backbones: int = 1, ci: float = 0.01, cross_val=None, cross=None,
         head: str = "logreg") -> dict:
    scores = scores_record(val, ci=(val - ci, val + ci))
    crossed = None
    if cross is not None:
        crossed = {"utk": {"path": "u.zarr", "dataset": "utkface", "fingerprint": "u", "rows": "test",
                           "report": scores_record(cross, accuracy_all=cross),
                           "val": None if cross_val is None else scores_record(cross_val)}}
    return result_record(name, val=scores, test=scores, backbones=[f"{name}{i}" for i in range(backbones)],
                         head=head, cross=crossed)


def test_near_tie_without_eval_stores_goes_to_the_simpler_run():
    runs = [_run("big", 0.990, backbones=3), _run("small", 0.985, backbones=1)]
    assert recommend(typed(runs)).run == "small"


def test_near_tie_with_eval_stores_goes_to_the_better_cross_dataset_val():
    runs = [_run("big", 0.990, backbones=3, cross_val=0.90, cross=0.90),
            _run("small", 0.985, backbones=1, cross_val=0.96, cross=0.96)]
    assert recommend(typed(runs)).run == "small"
    runs[1]["cross_dataset"]["utk"]["val"]["accuracy"] = 0.80
    assert recommend(typed(runs)).run == "big"
    runs[1]["cross_dataset"]["utk"]["val"]["accuracy"] = 0.90  # equal on cross val too: the simpler run
    assert recommend(typed(runs)).run == "small"


def test_a_clear_val_winner_is_kept_and_the_disagreement_is_warned():
    runs = [_run("best", 0.99, ci=0.002, cross_val=0.80, cross=0.80),
            _run("other", 0.95, ci=0.002, cross_val=0.97, cross=0.97)]
    assert recommend(typed(runs)).run == "best"
    warnings = choose(typed(runs)).warnings
    assert len(warnings) == 1 and "WARNING: on utk" in warnings[0] and "other0 + logreg" in warnings[0]
    rows = leaderboard(choose(typed(runs)))
    assert rows[0]["choice"] == "recommended" and rows[1]["choice"] == "best on utk"
    assert rows[1]["utk_accuracy"] == "0.9700"


# ---------------------------------------------------------------------------------------- train log


def test_train_logs_one_line_per_run_and_steps_only_with_v(crossed, tmp_path, caplog):
    a, _, _ = crossed
    with caplog.at_level(logging.INFO):
        assert cli.main(["train", "--store", a.path, "--backbones", "bb_a", "--heads", "logreg", "mlp",
                         "--out", str(tmp_path / "o"), "--bootstrap", "20"]) == 0
    info = [r.getMessage() for r in caplog.records if r.levelno == logging.INFO and r.name.startswith("classify")]
    runs = [m for m in info if "(the selection criterion)" in m]
    assert len(runs) == 2 and not any("epoch" in m or "C=" in m for m in info)
    caplog.clear()
    with caplog.at_level(logging.DEBUG):
        assert cli.main(["-v", "train", "--store", a.path, "--backbones", "bb_a", "--heads", "mlp",
                         "--out", str(tmp_path / "o2"), "--bootstrap", "20"]) == 0
    epochs = [r.getMessage() for r in caplog.records if "epoch" in r.getMessage()]
    assert epochs and all("val log loss" in m and "early-stopping criterion" in m for m in epochs)


def test_evaluate_never_imports_torch(crossed, tmp_path):
    import subprocess

    _, b, out = crossed
    code = ("import classify.cli, sys; "
            f"rc = classify.cli.main(['evaluate', '--head', {str(out / 'bb_a__logreg.npz')!r}, '--store', {b.path!r}, "
            "'--bootstrap', '20']); assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[1], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]


def test_two_eval_stores_with_one_name_are_both_reported(tmp_path):
    a = make_store(tmp_path / "a.zarr", dims={"bb_a": 4}, seed=0)
    first = make_store(tmp_path / "x" / "ev.zarr", dims={"bb_a": 4}, seed=1, shift=1.0)
    second = make_store(tmp_path / "y" / "ev.zarr", dims={"bb_a": 4}, seed=2, shift=0.5)
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", a.path, "--eval-store", first.path, "--eval-store", second.path,
                     "--backbones", "bb_a", "--heads", "logreg", "--out", str(out), "--bootstrap", "20"]) == 0
    cross = json.loads((out / "bb_a__logreg.json").read_text())["cross_dataset"]
    assert {label: entry["path"] for label, entry in cross.items()} == {
        "synthetic:ev": first.path, "synthetic:ev#2": second.path}


def test_photos_the_head_was_trained_or_chosen_on_are_left_out_of_another_copy_of_the_dataset(
        tmp_path, monkeypatch, caplog):
    """CelebA's in-the-wild release holds photos of the subset's train split under the same ids: scored
    again, they would flatter the head. Datasets whose ids name photos get them left out and counted."""
    monkeypatch.setattr("features.datasets.RELEASE_IDS", frozenset({"synthetic"}))
    a = make_store(tmp_path / "a.zarr", dims={"bb_a": 4}, seed=0)        # ids 000000.jpg ... 000599.jpg
    wild = make_store(tmp_path / "wild.zarr", dims={"bb_a": 4}, seed=1, shift=1.0,
                      split=np.zeros(600, dtype=np.int8))                # one split: every row reported
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", a.path, "--eval-store", wild.path, "--backbones", "bb_a", "--heads",
                     "logreg", "--out", str(out), "--bootstrap", "20"]) == 0
    seen = int(np.sum(np.isin(a.split, [0, 1])))                         # a's train and val rows: 450
    cross = json.loads((out / "bb_a__logreg.json").read_text())["cross_dataset"]["synthetic:wild"]
    assert cross["report"]["seen_in_training"] == seen and cross["report"]["n"] == 600 - seen
    result = tmp_path / "r.json"
    assert cli.main(["evaluate", "--head", str(out / "bb_a__logreg.npz"), "--store", wild.path, "--all-rows",
                     "--bootstrap", "20", "--out", str(result)]) == 0
    assert json.loads(result.read_text())["report"]["seen_in_training"] == seen
    monkeypatch.setattr("features.datasets.RELEASE_IDS", frozenset())    # ids that name nothing: all kept
    assert cli.main(["evaluate", "--head", str(out / "bb_a__logreg.npz"), "--store", wild.path, "--all-rows",
                     "--bootstrap", "20", "--out", str(result)]) == 0
    assert json.loads(result.read_text())["report"]["n"] == 600
    monkeypatch.setattr("features.datasets.RELEASE_IDS", frozenset({"synthetic"}))
    import shutil

    shutil.rmtree(a.path)                                                # the training store is gone: warned
    assert cli.main(["evaluate", "--head", str(out / "bb_a__logreg.npz"), "--store", wild.path, "--all-rows",
                     "--bootstrap", "20", "--out", str(result)]) == 0
    assert "cannot leave out the photos bb_a__logreg was trained on" in caplog.text


def test_a_sex_an_eval_store_lacks_has_no_recall_rather_than_a_zero_one(tmp_path, capsys):
    a = make_store(tmp_path / "a.zarr", dims={"bb_a": 4}, seed=0)
    women = make_store(tmp_path / "women.zarr", dims={"bb_a": 4}, seed=1, gender=np.zeros(600, dtype=np.int8))
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", a.path, "--backbones", "bb_a", "--heads", "logreg", "--out", str(out),
                     "--bootstrap", "20"]) == 0
    result = tmp_path / "r.json"
    assert cli.main(["evaluate", "--head", str(out / "bb_a__logreg.npz"), "--store", women.path, "--all-rows",
                     "--bootstrap", "20", "--out", str(result)]) == 0
    report = json.loads(result.read_text())["report"]
    assert report["recall"] is None and report["f1"] is None and report["ci95"]["f1"] == [None, None]  # no men
    assert report["female_recall"] == pytest.approx(report["accuracy"])
    assert report["macro_recall"] == pytest.approx(report["female_recall"])  # the mean over the sex present
    assert "male recall n/a" in capsys.readouterr().out


def test_near_tie_between_heads_goes_to_logreg_over_mlp():
    """Equal backbones: the simpler head wins a near-tie, whatever their order on val."""
    runs = [_run("a", 0.990, head="mlp"), _run("a", 0.985, head="logreg")]
    runs[0]["run"], runs[1]["run"] = "a__mlp", "a__logreg"
    assert recommend(typed(runs)).run == "a__logreg"
    assert "tie broken by fewest backbones, then the simpler head" in choose(typed(runs)).text
    runs.append(_run("b", 0.986, backbones=2))  # more backbones loses before the head is looked at
    assert recommend(typed(runs)).run == "a__logreg"
    clear = [_run("a", 0.999, head="mlp", ci=0.001), _run("a", 0.90, head="logreg", ci=0.001)]
    clear[0]["run"] = "a__mlp"
    assert recommend(typed(clear)).run == "a__mlp"  # not a tie: the val winner stays
