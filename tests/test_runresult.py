"""`RunResult`: a results file read as typed records, validated on read; compare skips a bad file."""
from __future__ import annotations

import json
import logging

import pytest

from classify import cli
from classify.compare import compare
from classify.errors import ERRORS_KIND, ERRORS_VERSION, read_error_file
from classify.results import RunResult, RunResultError, read_result
from tests.fixtures import result_record, scores_record


def _record(name: str = "bb__logreg", val: float = 0.9) -> dict:
    return result_record(name, val=scores_record(val), test=scores_record(0.8, n=50), backbones=[name.split("__")[0]])


def test_fields_are_typed_records():
    run = RunResult.from_json(_record(), "r.json")
    assert run.run == "bb__logreg" and run.backbones == ("bb",) and run.head == "logreg"
    assert run.val.accuracy == 0.9 and run.test.n == 50
    assert run.test.accuracy_ci95.low == pytest.approx(0.79) and run.test.worst_group is None
    assert run.threshold == 0.5 and run.calibrator == "none" and run.invalid_test == 0


@pytest.mark.parametrize("edit, field", [
    (lambda r: r["metrics"]["val"].update(accuracy="high"), "metrics.val.accuracy must be a number, not 'high'"),
    (lambda r: r.pop("metrics"), "field metrics is missing"),
    (lambda r: r["config"].update(backbones=[1, 2]), "config.backbones must be a list of strings"),
    (lambda r: r["metrics"]["test"]["ci95"].update(accuracy=[0.1]), "metrics.test.ci95.accuracy must be [low, high]"),
    (lambda r: r["metrics"]["test"].update(n=True), "metrics.test.n must be an integer"),
])
def test_a_wrong_type_or_missing_field_is_one_line_naming_file_and_field(edit, field):
    record = _record()
    edit(record)
    with pytest.raises(RunResultError) as caught:
        RunResult.from_json(record, "runs/x.json")
    assert str(caught.value).startswith("runs/x.json: ") and field in str(caught.value)
    assert "\n" not in str(caught.value)


def test_compare_skips_malformed_results_with_a_warning(tmp_path, caplog, capsys):
    (tmp_path / "good__logreg.json").write_text(json.dumps(_record("good__logreg")))
    bad = _record("bad__logreg", val=0.99)
    bad["metrics"]["val"]["accuracy"] = "high"
    (tmp_path / "bad__logreg.json").write_text(json.dumps(bad))
    none = _record("none__logreg", val=0.99)
    del none["metrics"]
    (tmp_path / "none__logreg.json").write_text(json.dumps(none))
    with caplog.at_level(logging.WARNING):
        markdown, _ = compare(tmp_path)
    assert "good" in markdown and "bad" not in markdown and "none__" not in markdown
    warned = " ".join(caplog.messages)
    assert "bad__logreg.json: field metrics.val.accuracy must be a number" in warned
    assert "none__logreg.json: field metrics is missing" in warned
    assert cli.main(["compare", str(tmp_path)]) == 0


def test_an_eval_label_with_a_dot_is_one_key(tmp_path):
    """An eval store labelled "wild.v2" reads back from its results file, compares, and keeps its error list."""
    cross = {"wild.v2": {"path": "w.zarr", "dataset": "wild.v2", "fingerprint": "w", "rows": "all",
                         "report": scores_record(0.7, accuracy_all=0.7), "val": scores_record(0.75)}}
    record = {**_record(), "cross_dataset": cross}
    (tmp_path / "bb__logreg.json").write_text(json.dumps(record))
    run = read_result(tmp_path / "bb__logreg.json")
    assert run.cross["wild.v2"].report.accuracy == 0.7 and run.cross["wild.v2"].val.accuracy == 0.75
    markdown, _ = compare(tmp_path)
    assert "wild.v2_accuracy" in markdown and "Best out of domain on wild.v2: bb + logreg (0.7000)" in markdown
    row = {"dataset": "wild.v2", "id": "a", "path": "", "p_male": 0.9, "true": "female", "predicted": "male",
           "groups": {}, "label_check": ""}
    errors = {"kind": ERRORS_KIND, "version": ERRORS_VERSION, "run": run.run, "head_sha256": run.head_sha256,
              "split": "test", "n_scored": 0, "errors": [], "rejected": [],
              "cross_dataset": {"wild.v2": {"rows": "all", "n_scored": 1, "errors": [row], "rejected": []}}}
    (tmp_path / "errors.json").write_text(json.dumps(errors))
    assert read_error_file(tmp_path, run) == errors
    del record["cross_dataset"]["wild.v2"]["report"]["n"]
    with pytest.raises(RunResultError, match=r"field cross_dataset\.wild\.v2\.report\.n is missing"):
        RunResult.from_json(record, "x.json")


def test_another_runs_error_list_is_not_shown_and_not_warned_about(tmp_path, caplog):
    """errors.json lists the errors of one run (the recommended one when it was written): for any other run it
    is simply absent, not damage, and the warning that a stale list of the same run gets is not given."""
    (tmp_path / "aa__logreg.json").write_text(json.dumps(_record("aa__logreg")))
    (tmp_path / "bb__logreg.json").write_text(json.dumps(_record("bb__logreg")))
    listed, other = (read_result(tmp_path / f"{name}__logreg.json") for name in ("aa", "bb"))
    errors = {"kind": ERRORS_KIND, "version": ERRORS_VERSION, "run": listed.run, "head_sha256": "a" * 64,
              "split": "test", "n_scored": 0, "errors": [], "rejected": [], "cross_dataset": {}}
    (tmp_path / "errors.json").write_text(json.dumps(errors))
    with caplog.at_level(logging.WARNING):
        assert read_error_file(tmp_path, other) is None
    assert caplog.messages == []
    with caplog.at_level(logging.WARNING):  # the same run with another head: a stale list, said so
        assert read_error_file(tmp_path, listed) is None
    assert "another head" in caplog.text
