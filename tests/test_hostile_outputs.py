"""What classify writes survives kills and hostile names: outputs are old-or-new (atomic), a report never
shows another head's errors, unreadable earlier outputs count as absent, a FIFO never hangs compare,
and spreadsheet or Markdown cells cannot carry formulas or tags."""
from __future__ import annotations

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from classify import cli
from classify import train as train_module
from classify.compare import choose, leaderboard, to_markdown, write_csv
from classify.errors import ERRORS_JSON, read_error_file
from classify.images import Prediction
from classify.model import GenderModel
from classify.predict import format_predictions, write_predictions
from classify.results import load_results, read_result
from features.atomic import atomic_open, write_text
from features.provenance import sha256_file
from features.tables import csv_cell, markdown_cell
from tests.fixtures import result_record, scores_record, typed
from tests.test_classify_cli import make_store

REPO = Path(__file__).resolve().parents[1]
HOSTILE = ['=HYPERLINK("http://x","y").jpg', "+1+2", "-6+4", "@SUM(1)", "\tx", "\rx"]


def _train(store, out: Path, *extra: str) -> int:
    return cli.main(["train", "--store", store.path, "--backbones", "bb_a", "--heads", "logreg", "--bootstrap", "20",
                     "--out", str(out), *extra])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(tmp_path_factory.mktemp("hostile") / "s.zarr", n=300)


# ------------------------------------------------------------------------------------ stale error lists


def test_a_kill_between_train_and_compare_never_shows_the_old_heads_errors(store, tmp_path, monkeypatch, caplog):
    out = tmp_path / "runs"
    assert _train(store, out) == 0
    old = json.loads((out / ERRORS_JSON).read_text())
    assert old["head_sha256"] == sha256_file(out / "bb_a__logreg.npz")

    def killed(directory, *, demo=False):  # the run JSON is written; the process dies before the lists
        raise KeyboardInterrupt

    monkeypatch.setattr(train_module, "finish", killed)
    assert _train(store, out, "--threshold", "0.99") == 130
    monkeypatch.undo()
    run = read_result(out / "bb_a__logreg.json")
    assert run.threshold == 0.99 and run.head_sha256 == sha256_file(out / "bb_a__logreg.npz")
    assert not (out / ERRORS_JSON).exists()  # train removed the lists of the head it replaced

    (out / ERRORS_JSON).write_text(json.dumps(old))  # and should an old list be back (copied in, say)
    shown = []
    monkeypatch.setattr("classify.compare.doubt_note", lambda analysis: shown.append(analysis) or "")
    with caplog.at_level(logging.WARNING):
        assert cli.main(["compare", str(out)]) == 0
    assert shown == [] and "another head" in caplog.text
    assert read_error_file(out, run) is None
    assert cli.main(["errors", str(out)]) == 0  # the explicit step lists the current head's errors
    assert read_error_file(out, run)["head_sha256"] == run.head_sha256


# ---------------------------------------------------------------------------------------- kill points

_KILL_AT = """
import os, signal, sys
from features import atomic
calls = {"n": 0}
real = os.replace
def replace(src, dst):
    calls["n"] += 1
    if calls["n"] == int(os.environ["KILL_AT"]):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(src, dst)
atomic.os.replace = replace
from classify.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _intact(out: Path) -> None:
    """Every output in ``out`` is whole: results validate, CSVs parse with their header's width, PNGs end
    with their IEND chunk, the leaderboard ends with its recommendation line."""
    for path in out.iterdir():
        if path.name.endswith(".tmp"):
            continue  # a killed write's leftover; no reader looks at it
        if path.suffix == ".json" and path.name != ERRORS_JSON:
            read_result(path)
        elif path.name == ERRORS_JSON:
            assert json.loads(path.read_text())["kind"] == "classify-errors"
        elif path.suffix == ".csv":
            rows = list(csv.reader(open(path, newline="")))
            assert rows and all(len(row) == len(rows[0]) for row in rows), path
        elif path.suffix == ".png":
            assert path.read_bytes()[-8:-4] == b"IEND", path
        elif path.name == "leaderboard.md":
            assert "Recommended:" in path.read_text(), path


@pytest.mark.parametrize("kill_at", [2, 4, 6])
def test_a_sigkill_at_any_write_leaves_old_or_new_outputs_never_torn(store, tmp_path, kill_at):
    out = tmp_path / "runs"
    assert _train(store, out) == 0
    args = ["train", "--store", store.path, "--backbones", "bb_a", "--heads", "logreg", "--bootstrap", "20",
            "--threshold", "0.99", "--out", str(out)]
    done = subprocess.run([sys.executable, "-c", _KILL_AT, *args], env={**os.environ, "KILL_AT": str(kill_at)},
                          capture_output=True, timeout=300, cwd=REPO)
    assert done.returncode == -9
    _intact(out)
    assert cli.main(["compare", str(out)]) == 0
    _intact(out)
    run = load_results(out)[0]
    listed = read_error_file(out, run)
    assert listed is None or listed["head_sha256"] == run.head_sha256


def test_a_failed_write_leaves_the_old_file(tmp_path):
    target = tmp_path / "leaderboard.md"
    target.write_text("old\n")
    with pytest.raises(RuntimeError), atomic_open(target) as handle:
        handle.write("half")
        raise RuntimeError("disk full")
    assert target.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["leaderboard.md"]
    write_text(target, "new\n")
    assert target.read_text() == "new\n"


# ----------------------------------------------------------------- unreadable earlier outputs, FIFOs


def test_an_unreadable_error_list_or_result_counts_as_absent(store, tmp_path, caplog):
    out = tmp_path / "runs"
    assert _train(store, out) == 0
    (out / ERRORS_JSON).write_text('{"kind": "classify-errors", "vers')  # torn by an older tool
    (out / "torn__logreg.json").write_text('{"kind": "classify-run", "version": 3, "metr')
    with caplog.at_level(logging.WARNING):
        assert cli.main(["compare", str(out)]) == 0
    assert "ignoring" in caplog.text and "torn__logreg.json" in caplog.text


@pytest.mark.parametrize("change", [
    {"errors": [{"id": 1}]},  # a row without the fields the gallery shows
    {"errors": "none"},
    {"rejected": [["a", "b"]]},
    {"cross_dataset": {"other": {"rows": "all", "n_scored": 3, "errors": [None], "rejected": []}}},
    {"cross_dataset": []},
    {"n_scored": "many"},
])
def test_a_crafted_error_list_of_the_current_head_is_ignored_not_a_traceback(store, tmp_path, caplog, change):
    # kind, version, run and head sha256 all right: before, compare and report raised KeyError / TypeError
    out = tmp_path / "runs"
    assert _train(store, out) == 0
    (out / ERRORS_JSON).write_text(json.dumps({**json.loads((out / ERRORS_JSON).read_text()), **change}))
    with caplog.at_level(logging.WARNING):
        assert cli.main(["compare", str(out)]) == 0
        assert cli.main(["report", "--store", store.path, "--results", str(out),
                         "--out", str(tmp_path / "report.html")]) == 0  # the gallery computed anew
    assert f"ignoring {out / ERRORS_JSON}: " in caplog.text
    assert read_error_file(out, load_results(out)[0]) is None


def test_a_fifo_in_the_results_folder_never_hangs_compare(store, tmp_path):
    out = tmp_path / "runs"
    assert _train(store, out) == 0
    os.mkfifo(out / "zz.json")
    (out / ERRORS_JSON).unlink()
    os.mkfifo(out / ERRORS_JSON)
    done = subprocess.run([sys.executable, "-m", "classify", "compare", str(out)], capture_output=True, text=True,
                          timeout=120, cwd=REPO)
    assert done.returncode == 0, done.stderr
    assert "zz.json: not a regular file" in done.stderr


def test_a_fifo_head_is_refused(tmp_path):
    os.mkfifo(tmp_path / "bb__logreg.npz")
    with pytest.raises(ValueError, match="not a regular file"):
        GenderModel.load(tmp_path / "bb__logreg.npz")


# ------------------------------------------------------------------------------------------ injection


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_cells_are_quoted_and_numbers_are_not(text):
    assert csv_cell(text) == "'" + text
    assert [csv_cell(v) for v in ("-0.5", "+3", "1e-3", "plain", 7, None)] == ["-0.5", "+3", "1e-3", "plain", 7, None]


def test_predict_csv_and_console_are_safe_with_hostile_file_names(tmp_path):
    names = [*HOSTILE, "two\nlines.jpg", "x" * 5000]
    predictions = [Prediction(name, "ok", "male", 0.9, 0.9, face=0) for name in names]
    table = tmp_path / "p.csv"
    write_predictions(predictions, table)
    rows = list(csv.DictReader(open(table, newline="")))
    assert [row["path"] for row in rows[:len(HOSTILE)]] == ["'" + name for name in HOSTILE]
    text = format_predictions(predictions)
    assert len(text.splitlines()) == len(names) + 2  # header, one per image, totals
    assert "two\\nlines.jpg" in text and max(map(len, text.splitlines())) < 500


def test_leaderboard_cells_cannot_inject_formulas_or_break_the_markdown_table(tmp_path):
    worst = {"family": "=1+1", "group": "yes", "accuracy": 0.5, "n": 3}
    test = scores_record(0.8, groups={"summary": {"balanced_accuracy": 0.8, "worst_group": worst}})
    run = result_record("bb__logreg", val=scores_record(0.9), test=test, backbones=["bb"])
    rows = leaderboard(choose(typed([run])))
    write_csv(rows, tmp_path / "leaderboard.csv")
    cell = next(csv.DictReader(open(tmp_path / "leaderboard.csv", newline="")))["worst_group"]
    assert cell == "'=1+1=yes (n=3)"
    worst["family"] = "|x|<i>y"
    markdown = to_markdown(leaderboard(choose(typed([run]))))
    row = markdown.splitlines()[2]
    assert "<i>" not in markdown and r"\|x\|&lt;i>y" in row
    assert row.count(" | ") - row.count(r"\| ") == markdown.splitlines()[0].count(" | ")  # no extra column
    assert markdown_cell("a\nb") == "a b"


def test_an_atomic_write_gets_the_mode_open_would_give_it(tmp_path):
    """The temporary file mkstemp makes is 0600: an output must not end up readable by its owner only
    (a shared results folder, a report served from disk)."""
    write_text(tmp_path / "atomic.txt", "x")
    with open(tmp_path / "plain.txt", "w") as handle:
        handle.write("x")
    assert (tmp_path / "atomic.txt").stat().st_mode & 0o777 == (tmp_path / "plain.txt").stat().st_mode & 0o777
