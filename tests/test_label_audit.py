"""Labels that disagree with their identity (`classify.label_audit`): flagged beside the errors, never
changed, and counted on the leaderboard."""
from __future__ import annotations

import csv
import subprocess
import sys
from pathlib import Path

import numpy as np

from classify import cli
from classify.label_audit import MISSING, label_doubts
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
    subprocess.run([sys.executable, str(REPO / "scripts" / "write_html_report.py"), "--store", store.path,
                    "--results", str(out), "--out", str(report)], check=True, capture_output=True)
    assert f"Label check: 3 of the recommended run&#x27;s {len(errors)} test errors" in report.read_text()


def test_the_html_gallery_shows_a_doubted_label_on_its_card():
    from classify.html_report import gallery_section

    row = {"id": "185464.jpg", "path": "", "p_male": 0.002, "true": "male", "predicted": "female", "groups": {},
           "label_check": "29 of the 29 other images of identity 7567 are labelled female"}
    html = gallery_section([row, {**row, "id": "1.jpg", "label_check": ""}], [])
    assert html.count("label in doubt") == 1 and "identity 7567 are labelled female" in html


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
