"""`python -m classify report`: the HTML and Markdown reports of a results folder, as the main job writes them.

Trained for real on generated stores (one for training, one evaluated across datasets), then reported
through the CLI; the browser test opens the HTML in Chromium in a 1,280 px window.
"""
from __future__ import annotations

import json

import pytest

from classify import cli
from classify.compare import recommend
from classify.results import load_results
from tests.test_classify_cli import make_store
from tests.test_html_report import browser, check_in_chromium


@pytest.fixture(scope="module")
def reported(tmp_path_factory):
    """(results folder, report.html) of runs trained on store a and evaluated on store b."""
    tmp = tmp_path_factory.mktemp("report")
    a = make_store(tmp / "a.zarr", dims={"bb_a": 8, "bb_b": 4}, seed=0, shift=0.6)
    b = make_store(tmp / "b.zarr", dims={"bb_a": 8, "bb_b": 4}, seed=1, shift=0.4)
    out = tmp / "runs"
    assert cli.main(["train", "--store", a.path, "--eval-store", b.path, "--backbones", "bb_a", "bb_a+bb_b",
                     "--out", str(out), "--bootstrap", "50"]) == 0
    assert cli.main(["report", "--store", a.path, "--results", str(out), "--out", str(tmp / "report.html")]) == 0
    return out, tmp / "report.html"


def test_report_writes_html_and_markdown_from_the_results(reported):
    out, html_path = reported
    page, markdown = html_path.read_text(encoding="utf-8"), html_path.with_suffix(".md").read_text()
    chosen = recommend(load_results(out))
    test = chosen.test
    low, high = test.accuracy_ci95.low, test.accuracy_ci95.high
    summary = page[page.index("<h2>Summary</h2>"):page.index("<h2>Leaderboard</h2>")]
    assert f"Recommended: <b>{chosen.title}</b>" in summary
    assert f"{test.accuracy:.3f} [{low:.3f}, {high:.3f}]" in summary  # in domain, with its interval
    cross = chosen.cross["synthetic:b"].report
    assert f"{cross.accuracy:.3f} [" in summary and "(cross-dataset)" in summary
    assert "Best out of domain:" in summary and "Label checks:" in summary
    # an error gallery for test and for the eval store, as many cards as errors.json lists
    errors = json.loads((out / "errors.json").read_text())
    assert "<h3>test (in domain)</h3>" in page and "<h3>synthetic:b, test rows (cross-dataset)</h3>" in page
    shown = len(errors["errors"]) + len(errors["cross_dataset"]["synthetic:b"]["errors"])
    assert page.count("<div class='card") == shown
    assert "## Leaderboard" in markdown and "### Cross-dataset" in markdown and "(runs/accuracy.png)" in markdown


def test_report_refuses_bad_input_in_one_line(tmp_path, capsys, reported):
    out, _ = reported
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["report", "--store", str(tmp_path / "missing.zarr"), "--results", str(out),
                     "--out", str(tmp_path / "r.html")]) == 2
    store = load_results(out)[0].stores[0]
    assert cli.main(["report", "--store", store, "--results", str(empty), "--out", str(tmp_path / "r.html")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("error: ") for line in lines)
    assert not (tmp_path / "r.html").exists()


@pytest.mark.skipif(browser() is None, reason="chromium not installed (apt-get install chromium)")
def test_report_reads_at_1280_px_without_scrolling_sideways(reported, tmp_path):
    _, html_path = reported
    result = check_in_chromium(html_path, tmp_path, width=1280)
    assert result["broken"] == [] and result["images"] == html_path.read_text(encoding="utf-8").count("<img ")
    assert result["scroll_width"] <= result["client_width"] <= 1280, result
    assert result["scripts"] == 1
