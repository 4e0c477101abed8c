"""Labels that disagree with their identity (`classify.label_audit`): flagged beside the errors, never
changed, and counted on the leaderboard."""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from classify import cli
from classify.label_audit import MISSING, LabelAuditError, cross_val_doubts, label_doubts
from test_classify_cli import make_store

REPO = Path(__file__).resolve().parents[1]


def test_a_label_most_of_its_identity_contradicts_is_flagged_and_the_rest_are_not():
    identity = np.array([7] * 10 + [8] * 5 + [9] * 10 + [MISSING] * 3)
    gender = np.array([1] + [0] * 9          # identity 7: one "male" among nine women -> flagged
                      + [1] + [0] * 4         # identity 8: only 4 others, too few to say anything
                      + [1] * 3 + [0] * 7     # identity 9: 30/70 is a mixed identity, not a stray label
                      + [1, 0, 1])            # no identity
    ids = np.array([f"{i:03d}.jpg" for i in range(len(gender))])
    doubts = label_doubts(ids, gender, identity)
    assert doubts == {"000.jpg": "9 of the 9 other images of identity 7 are labelled female"}


def test_a_woman_among_men_is_flagged_too_and_a_store_without_identity_gives_nothing():
    ids = np.array([str(i) for i in range(6)])
    gender, identity = np.array([1, 1, 1, 0, 1, 1]), np.zeros(6, dtype=int)
    assert label_doubts(ids, gender, identity) == {"3": "5 of the 5 other images of identity 0 are labelled male"}
    assert label_doubts(ids, gender, None) == {}


def test_flipped_test_labels_are_named_in_the_error_files_and_counted_on_the_leaderboard(tmp_path):
    n = 600
    identity = np.arange(n) // 10              # 60 people, 10 images each, each in one split
    sex = (identity % 2).astype(np.int8)        # what the embeddings show
    labels = sex.copy()
    flipped = [455, 512, 561]                   # test rows (450-599) given the other label
    labels[flipped] = 1 - labels[flipped]
    store = make_store(tmp_path / "s.zarr", n=n, gender=sex, labels=labels, identity=identity, dims={"bb_a": 8},
                       shift=4.0)
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", store.path, "--backbones", "bb_a", "--heads", "logreg", "--out", str(out),
                     "--bootstrap", "50"]) == 0
    rows = list(csv.DictReader(open(out / "errors.csv")))
    flagged = {row["id"]: row["label_check"] for row in rows if row["kind"] == "error" and row["label_check"]}
    assert flagged == {f"{row:06d}.jpg": f"9 of the 9 other images of identity {row // 10} are labelled "
                       f"{'male' if sex[row] else 'female'}" for row in flipped}
    errors = [row for row in rows if row["kind"] == "error"]
    board = (out / "leaderboard.md").read_text()
    assert f"Label check: 3 of the recommended run's {len(errors)} test errors" in board
    report = tmp_path / "report.html"  # the HTML report says it under the recommendation too
    assert cli.main(["report", "--store", store.path, "--results", str(out), "--out", str(report)]) == 0
    assert f"Label check: 3 of the recommended run&#x27;s {len(errors)} test errors" in report.read_text()


def test_the_html_gallery_shows_a_doubted_label_on_its_card():
    from classify.html_report import gallery_section

    row = {"id": "185464.jpg", "path": "", "p_male": 0.002, "true": "male", "predicted": "female", "groups": {},
           "label_check": "29 of the 29 other images of identity 7567 are labelled female"}
    rows = [row, {**row, "id": "1.jpg", "label_check": ""}]
    html = gallery_section({"title": "test", "n_scored": 10, "errors": rows})
    assert html.count("label in doubt:") == 1 and "identity 7567 are labelled female" in html
    assert html.count("card doubt") == 1


def test_audit_labels_lists_every_doubted_row_of_every_split(tmp_path, capsys):
    n = 600
    identity = np.arange(n) // 10
    labels = (identity % 2).astype(np.int8)
    flipped = [3, 301, 455]                     # one train, one val, one test row
    labels[flipped] = 1 - labels[flipped]
    store = make_store(tmp_path / "s.zarr", n=n, labels=labels, identity=identity, dims={"bb_a": 4})
    assert cli.main(["audit-labels", "--store", store.path, "--out", str(tmp_path / "doubts.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("3 of 600 labels disagree with at least 80% of the other images (>= 5) of the same identity")
    assert [line.split()[:2] for line in out[1:]] == [["train", "000003.jpg"], ["val", "000301.jpg"],
                                                      ["test", "000455.jpg"]]
    rows = list(csv.DictReader(open(tmp_path / "doubts.csv")))
    assert [row["id"] for row in rows] == ["000003.jpg", "000301.jpg", "000455.jpg"]
    assert rows[0]["label"] == ("female" if labels[3] == 0 else "male")


def separable(n: int = 600, *, seed: int = 0, shift: float = 3.0):
    """Embeddings that show each row's sex plainly, and that sex."""
    rng = np.random.default_rng(seed)
    sex = rng.integers(0, 2, n).astype(np.int8)
    x = rng.standard_normal((n, 8))
    x[:, :3] += shift * (2 * sex[:, None] - 1)
    return x, sex


def test_the_cross_validated_check_flags_exactly_the_labels_the_faces_contradict():
    x, sex = separable()
    labels = sex.copy()
    flipped = [4, 77, 310, 599]
    labels[flipped] = 1 - labels[flipped]
    ids = np.array([f"{i}.jpg" for i in range(len(sex))])
    doubts = cross_val_doubts(ids, x, labels, features="bb_a")
    assert set(doubts) == {f"{i}.jpg" for i in flipped}
    assert all(why.startswith("a head fitted on the store's other folds (bb_a, 5-fold") for why in doubts.values())
    same = cross_val_doubts(ids, x, labels, features="bb_a")
    assert same == doubts  # the folds come from the seed


def test_folds_keep_each_identity_on_one_side_and_unknown_identities_apart():
    from classify.label_audit import _folds

    identity = np.concatenate([np.repeat(np.arange(40), 10), np.full(100, MISSING)])
    gender = (np.arange(len(identity)) % 2).astype(np.int8)
    folds = _folds(gender, identity, seed=0)
    assert len(folds) == 5
    for train, held_out in folds:
        known = identity >= 0
        assert not set(identity[train][known[train]]) & set(identity[held_out][known[held_out]])
    unknown_per_fold = [int(np.sum(identity[held_out] == MISSING)) for _, held_out in folds]
    assert sum(unknown_per_fold) == 100 and max(unknown_per_fold) < 100  # not one group


def test_the_cross_validated_check_needs_both_sexes_in_every_fold():
    x, _ = separable(40)
    labels = np.zeros(40, dtype=np.int8)
    labels[:3] = 1
    with pytest.raises(LabelAuditError, match="at least 5 rows of each sex, these rows have 3 male and 37 female"):
        cross_val_doubts(np.arange(40).astype(str), x, labels)


def test_audit_labels_checks_a_store_without_identity_against_a_cross_validated_head(tmp_path, capsys):
    n = 600
    rng = np.random.default_rng(5)
    sex = rng.integers(0, 2, n).astype(np.int8)
    labels = sex.copy()
    flipped = [10, 320, 500]
    labels[flipped] = 1 - labels[flipped]
    store = make_store(tmp_path / "s.zarr", n=n, gender=sex, labels=labels, dims={"bb_a": 8}, shift=4.0)
    out_csv = tmp_path / "doubts.csv"
    assert cli.main(["audit-labels", "--store", store.path, "--backbones", "bb_a", "--out", str(out_csv)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].endswith("0 of 600 labels disagree with at least 80% of the other images (>= 5) of the "
                               "same identity")  # one image per identity: nothing to compare with
    assert printed[1].endswith("3 labels get p < 0.05 from a head fitted on the store's other folds (bb_a, "
                               "5-fold cross-validation)")
    rows = list(csv.DictReader(open(out_csv)))
    assert [row["id"] for row in rows] == [f"{i:06d}.jpg" for i in flipped]
    assert all(row["cross_val_check"] and not row["identity_check"] for row in rows)
    assert cli.main(["audit-labels", "--store", store.path, "--backbones", "nope"]) == 2
    assert "nope" in capsys.readouterr().err
    for spec in (["bb_a", "bb_b"], ["bb_a+bb_b"]):  # two backbones, concatenated, either way of writing it
        two = make_store(tmp_path / f"two{len(spec)}.zarr", n=n, gender=sex, labels=labels, dims={"bb_a": 8, "bb_b": 4},
                         shift=4.0)
        assert cli.main(["audit-labels", "--store", two.path, "--backbones", *spec]) == 0
        assert "labels get p < 0.05 from a head fitted on the store's other folds (bb_a+bb_b" in capsys.readouterr().out


def test_evaluate_lists_the_wrong_rows_with_their_label_checks(tmp_path, capsys):
    from classify.decision import Decision
    from classify.model import GenderModel
    from classify.treatment import apply as apply_treatment
    from features.store import Status

    train = make_store(tmp_path / "a.zarr", dims={"bb_a": 8}, shift=4.0)
    n = 600
    sex = np.random.default_rng(9).integers(0, 2, n).astype(np.int8)
    labels = sex.copy()
    flipped = [15, 333, 555]
    labels[flipped] = 1 - labels[flipped]
    other = make_store(tmp_path / "b.zarr", n=n, seed=9, gender=sex, labels=labels, dims={"bb_a": 8}, shift=1.0,
                       invalid={40: Status.NO_FACE})
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", train.path, "--backbones", "bb_a", "--heads", "logreg", "--out", str(out),
                     "--bootstrap", "50"]) == 0
    errors_csv = tmp_path / "errors.csv"
    assert cli.main(["evaluate", "--head", str(out / "bb_a__logreg.npz"), "--store", other.path, "--all-rows",
                     "--bootstrap", "50", "--errors", str(errors_csv)]) == 0
    model = GenderModel.load(out / "bb_a__logreg.npz")
    head, record = model.head, model.record
    decision = Decision.from_json(record["decision"])
    every = other.read(["bb_a"])
    x = apply_treatment(every.x, record["treatment"]["chosen"], ("bb_a",), {"bb_a": 8})
    wrong = decision.is_male(decision.p_male(head.predict_proba(x)[:, 1])) != (every.gender == 1)
    rows = list(csv.DictReader(open(errors_csv)))
    listed = [row for row in rows if row["kind"] == "error"]
    assert {row["id"] for row in listed} == set(other.ids[every.index[wrong]].tolist())
    doubted = {row["id"] for row in listed if row["label_check"]}
    assert {f"{i:06d}.jpg" for i in flipped} <= doubted  # the head gets them "wrong"; their labels are
    assert [row["id"] for row in rows if row["kind"] == "rejected"] == ["000040.jpg"]
    printed = capsys.readouterr().out
    assert f"errors: {len(listed)} wrong rows, {len(doubted)} of them with a label in doubt" in printed


def test_compare_lists_the_recommended_runs_errors_on_each_eval_store_with_their_label_checks(tmp_path):
    train = make_store(tmp_path / "a.zarr", dims={"bb_a": 8}, shift=4.0)
    n = 600
    sex = np.random.default_rng(11).integers(0, 2, n).astype(np.int8)
    labels = sex.copy()
    flipped = [460, 520, 590]                   # test rows of the eval store
    labels[flipped] = 1 - labels[flipped]
    other = make_store(tmp_path / "b.zarr", n=n, seed=11, gender=sex, labels=labels, dims={"bb_a": 8}, shift=4.0)
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", train.path, "--eval-store", other.path, "--backbones", "bb_a", "--heads",
                     "logreg", "--out", str(out), "--bootstrap", "50"]) == 0
    label = "synthetic:b"  # both stores hold a dataset named "synthetic": the eval set's label tells them apart
    rows = [row for row in csv.DictReader(open(out / "errors.csv")) if row["dataset"] == label]
    assert rows
    assert {f"{i:06d}.jpg" for i in flipped} <= {row["id"] for row in rows if row["label_check"]}
    assert all(int(row["id"][:6]) >= 450 for row in rows)  # the eval store's test rows, as it was reported on
    doubted = sum(1 for row in rows if row["label_check"])
    board = (out / "leaderboard.md").read_text()
    assert f"Label check on {label} (test rows): {doubted} of the recommended run's {len(rows)} errors there" in board


def test_rows_that_cannot_be_split_into_folds_are_one_clear_error_and_evaluate_still_lists_errors(tmp_path, capsys):
    x, sex = separable(60)
    identity = np.repeat(np.arange(3), 20)      # three people: fewer than the five folds
    with pytest.raises(LabelAuditError, match="cannot split these rows into 5 folds"):
        cross_val_doubts(np.arange(60).astype(str), x, sex, identity)
    store = make_store(tmp_path / "s.zarr", n=60, dims={"bb_a": 8}, identity=identity)
    assert cli.main(["audit-labels", "--store", store.path, "--backbones", "bb_a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the cross-validated label check cannot split") and err.count("\n") == 1
    from classify import label_audit

    found = label_audit.store_doubts(store, ["bb_a"], required=False)  # what evaluate --errors uses
    assert found["cross_val"] == {}


def test_the_error_step_lists_no_errors_from_another_dataset_put_where_the_training_store_was(tmp_path, caplog):
    import shutil

    store = make_store(tmp_path / "s.zarr", dims={"bb_a": 8}, shift=1.0)
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", store.path, "--backbones", "bb_a", "--heads", "logreg", "--out", str(out),
                     "--bootstrap", "20"]) == 0
    assert (out / "errors.json").is_file()
    shutil.rmtree(store.path)
    make_store(tmp_path / "s.zarr", dims={"bb_a": 8}, seed=7, shift=1.0)  # another dataset, the same path
    assert cli.main(["errors", str(out)]) == 0  # compare only reads the lists; this step computes them
    assert "now holds another dataset than bb_a__logreg was trained on" in caplog.text
    assert not (out / "errors.json").exists() and not (out / "errors.csv").exists()  # none stale either
