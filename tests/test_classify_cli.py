"""`python -m classify` train / compare / predict end to end on tiny generated stores."""
from __future__ import annotations

import csv
import hashlib
import json
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from classify import cli
from classify.compare import choose, leaderboard, recommend
from classify.images import PredictError, weights_argument
from classify.model import GenderModel
from classify.results import HeadFileError
from tests.fixtures import fill_units, result_record, scores_record, synthetic_table, typed
from features.store import FeatureStore, Status

ROOT = Path(__file__).resolve().parents[1]
FAST_HEADS = {"mlp": {"max_epochs": 5}}


def make_store(path: Path, *, n: int = 600, dims: dict[str, int] | None = None, seed: int = 0,
               invalid: dict[int, int] | None = None, complete: bool = True,
               gender: np.ndarray | None = None, weights: str = "random", shift: float = 3.0,
               metadata: dict | None = None, split: np.ndarray | None = None,
               labels: np.ndarray | None = None, identity: np.ndarray | None = None) -> FeatureStore:
    """A store with a separable gender signal in every backbone; ``invalid`` maps row -> Status.
    ``labels``: the table's gender labels when they are not ``gender`` (the sex the embeddings show);
    ``identity``: one per row by default."""
    dims = dims or {"bb_a": 12, "bb_b": 6}
    rng = np.random.default_rng(seed)
    gender = rng.integers(0, 2, n).astype(np.int8) if gender is None else gender
    if split is None:
        split = np.repeat(np.array([0, 1, 2], dtype=np.int8), [n // 2, n // 4, n - n // 2 - n // 4])
    dataset = synthetic_table(n, root=str(path.parent), paths=[f"img/{i:06d}.jpg" for i in range(n)],
                              gender=gender if labels is None else labels, split=split, split_seed=seed,
                              attributes={"smiling": rng.integers(0, 2, n),
                                          "identity": np.arange(n) if identity is None else identity})
    store = FeatureStore.create(path, dataset)
    status = np.full(n, Status.OK, dtype=np.uint8)
    for row, code in (invalid or {}).items():
        status[row] = code
    for name, dim in dims.items():
        emb = rng.standard_normal((n, dim)).astype(np.float32)
        emb[:, :3] += shift * (2 * gender[:, None] - 1)
        writer = store.add_backbone(name, dim=dim, unit_rows=128, metadata={
            "weights": weights, "weights_source": f"seed:{seed}", **(metadata or {})})
        units = range(writer.n_units) if complete else range(writer.n_units - 1)
        fill_units(writer, lambda s, e, emb=emb: (emb[s:e], status[s:e]), units)
    return store


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One store with two backbones, trained with both heads on bb_a and bb_a+bb_b."""
    tmp = tmp_path_factory.mktemp("classify")
    store = make_store(tmp / "s.zarr", invalid={0: Status.NO_FACE, 1: Status.UNREADABLE, 599: Status.NO_FACE})
    out = tmp / "runs"
    code = cli.main(["train", "--store", store.path, "--backbones", "bb_a", "bb_a+bb_b", "--out", str(out),
                     "--bootstrap", "200", "--seed", "3"])
    assert code == 0
    return store, out


def test_train_writes_one_result_per_run_with_config_and_identity(trained):
    store, out = trained
    names = sorted(p.stem for p in out.glob("*.json"))
    assert names == ["bb_a+bb_b__logreg", "bb_a+bb_b__mlp", "bb_a__logreg", "bb_a__mlp", "errors"]
    record = json.loads((out / "bb_a+bb_b__mlp.json").read_text())
    assert record["config"]["backbones"] == ["bb_a", "bb_b"] and record["config"]["seed"] == 3
    assert record["store"]["fingerprint"] == store.fingerprint
    assert record["store"]["backbones"]["bb_b"]["metadata"]["weights"] == "random"
    assert {"numpy", "scikit-learn", "zarr"} <= set(record["library_versions"])
    test = record["metrics"]["test"]
    assert test["accuracy"] > 0.95 and test["n"] == 149  # 150 test rows, row 599 had no face
    assert record["counts"]["train"]["invalid"] == {"unreadable": 1, "no_face": 1}
    assert record["counts"]["test"]["invalid"] == {"no_face": 1}
    assert set(test["groups"]["families"]) == {"sex", "smiling"}  # identity has too many values to group
    assert "identity" in test["groups"]["skipped"]
    assert test["groups"]["summary"]["n"] == 149
    assert set(test["calibration"]) == {"before", "after"} and "bins" in test["calibration"]["after"]["binning"]
    assert record["decision"]["calibrate"] == "auto" and record["decision"]["threshold"]["value"] == 0.5
    assert record["selection"]["best_epoch"] >= 1


def test_compare_writes_leaderboard_and_plots(trained):
    _, out = trained
    for name in ("leaderboard.md", "leaderboard.csv", "roc.png", "confusion_matrices.png", "accuracy.png"):
        assert (out / name).stat().st_size > 0, name
    with open(out / "leaderboard.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    val_accuracies = [float(r["val_accuracy"]) for r in rows]
    assert val_accuracies == sorted(val_accuracies, reverse=True)
    assert (out / "roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert cli.main(["compare", str(out)]) == 0


def _fake_run(name: str, val: float, test: float) -> dict:
    return result_record(name, val=scores_record(val, n=10), test=scores_record(test, n=10, ci=(test - 0.1, test)))


def test_leaderboard_ranks_on_val_never_on_test():
    runs = [_fake_run("a", val=0.90, test=0.99), _fake_run("b", val=0.95, test=0.80)]
    runs[0]["counts"]["test"]["invalid"] = {"no_face": 10}  # 10 test images without a face for run a
    rows = leaderboard(choose(typed(runs)))
    assert [row["backbones"] for row in rows] == ["b", "a"]
    assert rows[1]["accuracy"] == "0.9900" and rows[1]["accuracy_all_test"] == "0.4950"  # 9.9 of 20
    assert recommend(typed(runs)).run == "b"


def test_tampered_head_is_refused(trained, tmp_path, capsys):
    _, out = trained
    model = GenderModel.load(out / "bb_a__logreg.npz")
    head, record = model.head, model.record
    assert record["run"] == "bb_a__logreg" and head.C_ in head.Cs
    bad = tmp_path / "bb_a__logreg.npz"
    bad.write_bytes((out / "bb_a__logreg.npz").read_bytes() + b"\0")
    (tmp_path / "bb_a__logreg.json").write_bytes((out / "bb_a__logreg.json").read_bytes())
    with pytest.raises(HeadFileError, match="does not match"):
        GenderModel.load(bad)
    assert cli.main(["predict", "--head", str(bad), str(tmp_path)]) == 2
    assert "does not match its sidecar" in capsys.readouterr().err


def test_predict_reports_no_face_and_unreadable(trained, tmp_path, monkeypatch, capsys):
    store, out = trained
    rng = np.random.default_rng(1)
    images = tmp_path / "imgs"
    images.mkdir()
    wanted = {"m.jpg": (1, Status.OK), "f.png": (0, Status.OK), "noface.jpg": (1, Status.NO_FACE),
              "broken.jpg": (0, Status.UNREADABLE), "empty.jpg": (0, Status.UNREADABLE)}
    for name in wanted:
        (images / name).write_bytes(b"" if name == "empty.jpg" else b"x")
    (images / "notes.txt").write_text("not an image")
    calls = []

    def fake_embed_images(paths, backbones, *, all_faces=False, device="auto"):
        calls.append(dict(backbones))
        gender = np.array([wanted[Path(p).name][0] for p in paths])
        status = np.array([wanted[Path(p).name][1] for p in paths], dtype=np.uint8)
        embeddings = {}
        for name, dim in (("bb_a", 12), ("bb_b", 6)):
            emb = rng.standard_normal((len(paths), dim)).astype(np.float32)
            emb[:, :3] += 3.0 * (2 * gender[:, None] - 1)
            emb[status != Status.OK] = np.nan
            embeddings[name] = emb
        box = np.tile(np.array([[10, 20, 30, 40]], np.float32), (len(paths), 1))
        box[status != Status.OK] = np.nan
        return types.SimpleNamespace(image=np.arange(len(paths)), box=box, status=status, embeddings=embeddings)

    # a stand-in `extract` module: predict imports it lazily and calls only embed_images, once
    monkeypatch.setitem(sys.modules, "extract", types.SimpleNamespace(embed_images=fake_embed_images))
    preds = tmp_path / "preds.csv"
    assert cli.main(["predict", "--head", str(out / "bb_a+bb_b__logreg.npz"), str(images),
                     "--out", str(preds)]) == 0
    # one call for both backbones, each with what the store recorded (extract's seeded random init)
    assert calls == [{name: {"weights": "random", "precision": "fp32", "tta": "none", "expect_weights": "random"}
                      for name in ("bb_a", "bb_b")}]
    with open(preds) as handle:
        rows = {Path(r["path"]).name: r for r in csv.DictReader(handle)}
    assert set(rows) == set(wanted)
    assert rows["m.jpg"]["gender"] == "male" and rows["f.png"]["gender"] == "female"
    assert float(rows["m.jpg"]["probability"]) > 0.5
    assert rows["noface.jpg"]["status"] == "no face found" and rows["noface.jpg"]["gender"] == ""
    assert rows["broken.jpg"]["status"] == "unreadable" and rows["broken.jpg"]["probability"] == ""
    assert rows["broken.jpg"]["reason"].startswith("not an image") and rows["empty.jpg"]["reason"] == "empty file"
    assert [rows["m.jpg"][k] for k in ("face", "box_x", "box_y", "box_w", "box_h")] == ["0", "10.0", "20.0", "30.0",
                                                                                     "40.0"]
    assert [rows["noface.jpg"][k] for k in ("face", "box_x", "box_w")] == ["", "", ""]
    out = capsys.readouterr().out.splitlines()
    assert "probability of that gender" in out[0]  # a header that says what the number is
    assert out[-1] == "5 images: 1 male, 1 female, 1 no face found, 2 unreadable"
    assert any(line.endswith("unreadable: empty file") for line in out)


def test_predict_all_faces_gives_one_row_per_face_with_its_box(trained, tmp_path, monkeypatch, capsys):
    """--all-faces: every face of an image, largest first, each with its box; an image without a face
    still gets its one row; the CSV has the face index and box columns."""
    _, out = trained
    images = tmp_path / "imgs"
    images.mkdir()
    for name in ("group.jpg", "nobody.jpg"):
        (images / name).write_bytes(b"\xff\xd8\xff")
    asked = []

    def fake_embed_images(paths, backbones, *, all_faces=False, device="auto"):
        asked.append(all_faces)
        assert [Path(p).name for p in paths] == ["group.jpg", "nobody.jpg"]
        sign = np.array([1.0, -1.0, 1.0, np.nan], np.float32)[:, None]  # male, female, male, no face
        return types.SimpleNamespace(
            image=np.array([0, 0, 0, 1]), status=np.array([1, 1, 1, Status.NO_FACE], np.uint8),
            box=np.array([[300, 40, 200, 240], [20, 30, 90, 110], [500, 60, 50, 61], [np.nan] * 4], np.float32),
            embeddings={"bb_a": np.tile(sign * 4, (1, 12)), "bb_b": np.tile(sign * 4, (1, 6))})

    monkeypatch.setitem(sys.modules, "extract", types.SimpleNamespace(embed_images=fake_embed_images))
    preds = tmp_path / "faces.csv"
    assert cli.main(["predict", "--head", str(out / "bb_a+bb_b__logreg.npz"), str(images), "--all-faces",
                     "--out", str(preds)]) == 0
    assert asked == [True]
    with open(preds) as handle:
        rows = list(csv.DictReader(handle))
    assert [(Path(r["path"]).name, r["face"], r["gender"], r["status"]) for r in rows] == [
        ("group.jpg", "0", "male", "ok"), ("group.jpg", "1", "female", "ok"), ("group.jpg", "2", "male", "ok"),
        ("nobody.jpg", "", "", "no face found")]
    assert [float(rows[1][k]) for k in ("box_x", "box_y", "box_w", "box_h")] == [20, 30, 90, 110]
    text = capsys.readouterr().out.splitlines()
    assert "face" in text[0] and "box" in text[0]
    assert text[2].split()[1:4] == ["1", "20,30", "90x110"] and text[2].split()[4] == "female"
    assert text[-1] == "2 images, 3 faces: 2 male, 1 female, 1 no face found"


def test_seeded_rerun_gives_identical_results(trained, tmp_path):
    store, out = trained
    again = tmp_path / "again"
    assert cli.main(["train", "--store", store.path, "--backbones", "bb_a", "--heads", "mlp", "--out", str(again),
                     "--bootstrap", "200", "--seed", "3"]) == 0
    first = json.loads((out / "bb_a__mlp.json").read_text())["metrics"]
    second = json.loads((again / "bb_a__mlp.json").read_text())["metrics"]
    assert first == second


@pytest.mark.parametrize("argv, message", [
    (["train", "--store", "{tmp}/missing.zarr", "--out", "{tmp}/o"], "no feature store"),
    (["train", "--store", "{store}", "--backbones", "nope", "--out", "{tmp}/o"], "no backbone 'nope'"),
    (["train", "--store", "{store}", "--backbones", "bb_a++bb_b", "--out", "{tmp}/o"], "bad backbone spec"),
    (["train", "--store", "{store}", "--heads", "svm", "--out", "{tmp}/o"], "unknown head 'svm'; valid: logreg, mlp"),
    (["train", "--store", "{store}", "--bootstrap", "0", "--out", "{tmp}/o"], "--bootstrap must be a positive"),
    (["compare", "{tmp}/empty"], "no classify results"),
    (["predict", "--head", "{tmp}/none.npz", "x.jpg"], "no head file"),
    (["predict", "--head", "{tmp}/run.json", "x.jpg"], "is not a head file"),
])
def test_expected_errors_are_one_line_exit_2(trained, tmp_path, capsys, argv, message):
    store, _ = trained
    (tmp_path / "empty").mkdir()
    argv = [a.format(tmp=tmp_path, store=store.path) for a in argv]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_incomplete_backbone_refused_and_skipped_by_default(tmp_path, capsys):
    store = make_store(tmp_path / "s.zarr", dims={"bb_x": 4, "bb_y": 4})
    writer = FeatureStore.open(store.path, mode="r+").add_backbone("partial2", dim=4, unit_rows=128,
                                                                   metadata={"weights": "random"})
    s, e = writer.unit_rows(0)
    writer.write_unit(0, np.zeros((e - s, 4), np.float32), np.ones(e - s, np.uint8))
    assert cli.main(["train", "--store", store.path, "--backbones", "partial2", "--out", str(tmp_path / "o")]) == 2
    assert "incomplete (1 of 5 units)" in capsys.readouterr().err
    assert cli.resolve_backbones(store, None) == [("bb_x",), ("bb_y",)]


def test_one_class_split_is_a_clear_error(tmp_path, capsys):
    store = make_store(tmp_path / "s.zarr", n=40, dims={"bb": 4}, gender=np.ones(40, dtype=np.int8))
    assert cli.main(["train", "--store", store.path, "--out", str(tmp_path / "o")]) == 2
    assert "holds one gender only" in capsys.readouterr().err


def test_classify_never_imports_torch(tmp_path):
    make_store(tmp_path / "s.zarr", n=200, dims={"bb": 6})
    code = ("import classify.cli, sys; "
            f"rc = classify.cli.main(['train', '--store', {str(tmp_path / 's.zarr')!r}, '--heads', 'logreg', "
            f"'--out', {str(tmp_path / 'o')!r}, '--bootstrap', '50']); "
            "assert rc == 0, rc; assert 'torch' not in sys.modules, 'torch was imported'")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "o" / "bb__logreg.json").is_file()


def test_predict_passes_the_recorded_weight_file_and_checks_it(tmp_path):
    weights = tmp_path / "net.pth"
    weights.write_bytes(b"w")
    recorded = "sha256:" + hashlib.sha256(b"w").hexdigest()
    assert weights_argument("bb", {"weights": recorded, "weights_source": str(weights)}) == str(weights)
    weights.write_bytes(b"other weights at the same path")
    with pytest.raises(PredictError, match="is not the weight file the head was trained on"):
        weights_argument("bb", {"weights": recorded, "weights_source": str(weights)})
    assert weights_argument("bb", {"weights": "random", "weights_source": "torch.manual_seed(0)"}) == "random"
    # a head moved to another machine: the default weights, checked by extract against the recorded identity
    assert weights_argument("bb", {"weights": "sha256:ab", "weights_source": str(tmp_path / "gone.pth")}) is None


def test_bad_threshold_is_one_line(tmp_path, capsys):
    assert cli.main(["train", "--store", str(tmp_path / "none.zarr"), "--threshold", "2", "--out",
                     str(tmp_path / "o")]) == 2
    assert capsys.readouterr().err.strip() == "error: threshold must be 'balanced' or a number in (0, 1), not '2'"


def test_heads_of_the_previous_version_are_refused_in_one_line(trained, tmp_path, capsys):
    _, out = trained
    for suffix in (".npz", ".json"):
        (tmp_path / f"bb_a__logreg{suffix}").write_bytes((out / f"bb_a__logreg{suffix}").read_bytes())
    record = json.loads((tmp_path / "bb_a__logreg.json").read_text())
    del record["decision"]
    (tmp_path / "bb_a__logreg.json").write_text(json.dumps({**record, "version": 2}))
    assert cli.main(["predict", "--head", str(tmp_path / "bb_a__logreg.npz"), str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "results file of version 2" in err and "retrain" in err


def test_the_face_detections_entry_is_not_a_backbone_to_train_on(tmp_path, capsys):
    from features.store import FACES

    store = make_store(tmp_path / "s.zarr", dims={"bb_a": 4})
    writer = store.add_backbone(FACES, dim=15, unit_rows=128, metadata={"weights": "random"})
    fill_units(writer, lambda s, e: (np.zeros((e - s, 15), np.float32), np.full(e - s, Status.OK, np.uint8)),
               range(writer.n_units))
    code = cli.main(["train", "--store", store.path, "--backbones", FACES, "--out", str(tmp_path / "runs")])
    assert code == 2
    err = capsys.readouterr().err
    assert f"has no backbone '{FACES}'; it holds: bb_a" in err and err.count("\n") == 1


def test_one_cli_convention_and_training_is_a_library_call(tmp_path, capsys):
    """classify's CLI shares features.cli's UsageError and exit codes; `train` works without the CLI."""
    import features.cli
    from classify.train import TrainSettings, train

    assert cli.UsageError is features.cli.UsageError and not hasattr(cli, "cmd_train_orchestration")
    store = make_store(tmp_path / "s.zarr", n=200)
    assert cli.main(["train", "--store", store.path, "--out", str(tmp_path / "x"), "--bootstrap", "0"]) == 2
    assert capsys.readouterr().err == "error: --bootstrap must be a positive number of resamples, not 0\n"
    markdown, paths = train(TrainSettings(stores=(store.path,), out=tmp_path / "runs", backbones=("bb_a",),
                                          heads=("logreg",), n_resamples=20))
    assert "Recommended: bb_a + logreg" in markdown and tmp_path / "runs" / "leaderboard.md" in paths
    assert (tmp_path / "runs" / "errors.json") in paths
