"""The README's main command, end to end, on the generated demo data (no CelebA at CELEBA_ROOT)."""
import json
import os
import re
import subprocess
from pathlib import Path

from tests.test_html_report import browser, check_in_chromium

REPO = Path(__file__).resolve().parents[1]


def test_main_job_without_celeba_runs_the_demo_and_says_so(tmp_path):
    env = {**os.environ, "CELEBA_ROOT": str(tmp_path / "no_celeba_here"), "OUT": str(tmp_path / "out")}
    result = subprocess.run(["bash", "scripts/main.sh"], cwd=REPO, env=env, capture_output=True, text=True,
                            timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "No CelebA at" in result.stderr and "THE NUMBERS BELOW MEAN NOTHING" in result.stderr
    assert "| rank | backbones | head |" in result.stdout  # the leaderboard is printed
    # not a terminal: extraction progress comes as lines (rows done, rate, time left)
    assert re.search(r"efficientnet_lite0: \d+ of 300 rows \(\d+%\), [\d.]+ images/s, ", result.stderr)
    # the demo mark is on what is printed last and on every file
    assert result.stdout.startswith("> **DEMO DATA: THESE NUMBERS MEAN NOTHING.**")
    assert "| celeba (DEMO DATA) |" in result.stdout
    assert "celeba (DEMO DATA)" in (tmp_path / "out" / "heads" / "leaderboard.csv").read_text()
    report = (tmp_path / "out" / "report.md").read_text()
    assert "DEMO DATA: THESE NUMBERS MEAN NOTHING" in report
    assert "| efficientnet_lite0 | 1280 | sha256:" in report
    for plot in ("accuracy.png", "roc.png", "confusion_matrices.png"):
        assert (tmp_path / "out" / "heads" / plot).stat().st_size > 0
        assert f"(heads/{plot})" in report
    _check_html_report(tmp_path / "out")


def _check_html_report(out: Path) -> None:
    """report.html beside report.md: marked as demo, the run's groups, calibration and errors, and (where
    Chromium is installed) every image decodes in a real browser."""
    page = (out / "report.html").read_text(encoding="utf-8")
    assert "DEMO DATA: THESE NUMBERS MEAN NOTHING" in page and "celeba (DEMO DATA)" in page
    for section in ("<h2>Leaderboard</h2>", "<h2>Per-group metrics</h2>", "<h2>Calibration</h2>", "<h2>Errors</h2>"):
        assert section in page
    assert "celeba val" in page and "celeba test" in page and "worst_group_accuracy" in page
    errors = json.loads((out / "heads" / "errors.json").read_text())
    assert errors["errors"], "random demo labels: the recommended run must get some test images wrong"
    if browser() is None:
        return
    result = check_in_chromium(out / "report.html", out)
    assert result["broken"] == [] and result["images"] == page.count("<img ")
    # per split (val, test) a sex plot and a reliability diagram, plus the thumbnails of the errors shown
    assert result["images"] >= 4 + min(len(errors["errors"]), 60)
    assert result["tables"] >= 7 and result["scripts"] == 1
    assert result["scroll_width"] <= result["client_width"]  # no sideways scrolling at 1,280 px
