"""The HTML report (classify/html_report.py), rendered in a real headless browser (Debian's Chromium).

The browser test loads the report from file:// with a small checking script appended (the report itself
has no script), lets Chromium dump the DOM after the load event, and reads what the script wrote: every
<img> decoded (complete, naturalWidth > 0), the tables present, no element injected by a hostile name,
and the page's width in a 1,280 px window (it must not scroll sideways: wide tables scroll in their box).
It skips when no chromium is installed (CI installs it: .ci/run).
"""
import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from classify.calibration import calibration_report, decision_threshold, fit_calibrator
from classify.groups import group_metrics
from classify.html_report import render, thumbnail_data_uri, write_html
from tests.fixtures import write_face

HOSTILE = '<script>alert("x")</script>&<b>.jpg'
CHECK = """<script>
function compactLeaderboard() {  // the first table after the Leaderboard heading
  let node = Array.from(document.querySelectorAll('h2')).find(h => h.textContent === 'Leaderboard');
  while (node && !(node.tagName === 'TABLE' || node.querySelector('table'))) node = node.nextElementSibling;
  return node.tagName === 'TABLE' ? node : node.querySelector('table');
}
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const result = {images: images.length, broken: broken, tables: document.querySelectorAll('table').length,
                  scripts: document.querySelectorAll('script').length,
                  bold: Array.from(document.querySelectorAll('b')).map(b => b.textContent),
                  scroll_width: document.documentElement.scrollWidth,
                  compact_right: compactLeaderboard().getBoundingClientRect().right,
                  client_width: document.documentElement.clientWidth};
  document.body.setAttribute('data-check', JSON.stringify(result));
});
</script>"""


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_in_chromium(path: Path, work: Path, *, width: int = 1280) -> dict:
    """Load the report at ``path`` in headless Chromium, in a window ``width`` px wide, with `CHECK`
    appended; what the check found."""
    checked = work / "checked.html"
    checked.write_text(path.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    done = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=10000",
                           f"--window-size={width},900", "--dump-dom", checked.as_uri()],
                          capture_output=True, text=True, timeout=120)
    match = re.search(r"data-check=\"([^\"]*)\"", done.stdout)
    assert match, f"no check result in the dumped DOM (rc {done.returncode}): {done.stderr[-500:]}"
    import html

    return json.loads(html.unescape(match.group(1)))


def _sections(tmp_path: Path) -> dict:
    rng = np.random.default_rng(0)
    n = 400
    y = rng.integers(0, 2, n)
    race, age = rng.integers(0, 5, n), rng.integers(1, 80, n)
    z = rng.normal(0, 2, n) + (2 * y - 1)
    p = 1 / (1 + np.exp(-2.5 * z))
    pred = (p > 0.5).astype(int)
    attributes = {"race": race, "age": age, HOSTILE: rng.integers(0, 2, n), "Smiling": rng.integers(0, 2, n)}
    calibrator = fit_calibrator(y[:200], p[:200])
    faces = [write_face(tmp_path / "faces" / f"{i:03d}.jpg", seed=i) for i in range(3)]
    hostile_face = write_face(tmp_path / "faces" / "x.jpg", seed=9)
    unreadable = tmp_path / "faces" / "broken.jpg"
    unreadable.write_bytes(b"not a jpeg")
    errors = [{"path": str(path), "id": path.name, "p_male": 0.97, "true": "female", "predicted": "male",
               "groups": {"race": "Black", HOSTILE: "yes"}, "label_check": ""} for path in faces]
    errors.append({"path": str(hostile_face), "id": HOSTILE, "p_male": 0.9, "true": "female",
                   "predicted": "male", "groups": {}, "label_check": "29 of the 29 other images are labelled male"})
    long_id = "57_0_1_20170116000000081_a_very_long_file_name_without_any_break.jpg.chip.jpg"
    # a leaderboard as wide as the real one (25+ columns): only the compact columns show at first
    # and a run over many backbones, whose name is wider than the page unless it wraps
    seven = "+".join(["efficientnet_lite0", "sface", "sface_map", "dlib_resnet", "dlib_age", "dlib_gender",
                      "facenet_casia"] * 3)
    board = [{"rank": r, "backbones": seven if r == 2 else "sface+dlib_resnet+efficientnet_lite0", "head": "logreg",
              **{f"column_{c}": f"0.{r}{c:03d} long text {c}" for c in range(26)}, "choice": "recommended" * (r == 1)}
             for r in (1, 2)]
    return {"title": "report <test>", "dataset": {"name": "utkface", "root": str(tmp_path), "store": "s.zarr",
                                                 "n_rows": n, "splits": {"test": n}, "male": int(y.sum())},
            "summary": {"recommended": "sface + logreg", "reason": "best val accuracy", "verdict": "a verdict",
                        "scored": [{"where": "utkface test", "accuracy": 0.9, "ci": [0.88, 0.92], "male_recall": 0.91,
                                    "female_recall": float("nan"), "n": n}],
                        "best_out_of_domain": ["other: sface + mlp (0.8)"], "label_checks": ["test: 1 of 4"]},
            "extraction": [{"backbone": "sface", "valid": 398, "no face": 2}],
            "leaderboard": board, "compact_columns": ["rank", "backbones", "head", "column_0", "choice"],
            "chosen": "sface + logreg",
            "groups": {"utkface test": group_metrics(y, pred, attributes, n_resamples=100),
                       "utkface val (choices made here)": group_metrics(y, pred, attributes, n_resamples=100)},
            "calibration": {label: {
                "before": calibration_report(y[200:], p[200:]),
                "after": calibration_report(y[200:], calibrator.apply(p[200:])),
                "calibrator": calibrator.to_json(), "threshold": decision_threshold("balanced", y[:200], p[:200])}
                for label in ("utkface test", "utkface val")},
            "galleries": [{"title": "test", "n_scored": 200, "errors": errors,
                           "rejected": [{"path": str(unreadable), "id": unreadable.name, "reason": "unreadable"}]},
                          {"title": "other dataset", "n_scored": 100, "rejected": [],
                           "errors": [{**errors[0], "id": long_id}]}]}


def test_text_is_escaped_and_images_embedded(tmp_path):
    page = render(**_sections(tmp_path))
    assert "<script" not in page and "&lt;script&gt;" in page
    assert "src=\"file:" not in page and "http" not in page.replace("http-equiv", "")  # nothing fetched
    uris = re.findall(r'src="(data:image/(png|jpeg);base64,[^"]+)"', page)
    assert len(uris) == page.count("<img ")
    assert any(kind == "jpeg" for _, kind in uris) and any(kind == "png" for _, kind in uris)
    assert "(cannot be read)" in page  # the unreadable file has no <img>, not a broken one


def test_thumbnail_is_small_jpeg(tmp_path):
    import base64

    import cv2

    uri = thumbnail_data_uri(write_face(tmp_path / "a.jpg", size=(400, 300)))
    image = cv2.imdecode(np.frombuffer(base64.b64decode(uri.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
    assert max(image.shape[:2]) == 96
    assert thumbnail_data_uri(tmp_path / "missing.jpg") is None


@pytest.mark.skipif(browser() is None, reason="chromium not installed (apt-get install chromium)")
def test_report_renders_in_headless_chromium(tmp_path):
    path = write_html(tmp_path / "report.html", **_sections(tmp_path))
    result = check_in_chromium(path, tmp_path)
    assert result["broken"] == []
    assert result["images"] == path.read_text(encoding="utf-8").count("<img ")
    assert result["images"] >= 12  # group plots of two sets, two reliability diagrams, 5 thumbnails
    assert result["tables"] >= 8  # summary, extraction, leaderboard (compact, full), groups, calibration
    assert result["scripts"] == 1  # only the checker: the hostile name stayed text
    assert HOSTILE in result["bold"]
    # readable at 1,280 px without scrolling sideways: the 30-column leaderboard scrolls in its own box
    assert result["scroll_width"] <= result["client_width"] <= 1280, result
    assert result["compact_right"] <= result["client_width"], result  # the compact leaderboard is not cut


def test_the_first_screen_is_the_summary_and_a_compact_leaderboard(tmp_path):
    page = render(**_sections(tmp_path))
    order = [page.index(mark) for mark in ("<h2>Summary</h2>", "<h2>Leaderboard</h2>", "<h2>Per-group metrics</h2>",
                                           "<h2>Calibration</h2>", "<h2>Errors</h2>")]
    assert order == sorted(order)
    summary = page[order[0]:order[1]]
    assert "a verdict" in summary and "0.900 [0.880, 0.920]" in summary and "n/a" in summary  # NaN recall
    compact, full = page[order[1]:].split("<details>", 1)
    assert "column_0" in compact and "column_1<" not in compact  # the other columns wait behind the toggle
    assert "All 30 columns" in full and "column_25" in full
    assert "<tr class=\"chosen\">" in compact  # the recommended row stands out
    # one calibration table across the sets, a diagram per set
    calibration = page[order[3]:order[4]]
    assert calibration.count("<table>") == 1 and calibration.count("reliability diagram") == 2
    # val's groups are folded, test's open; one gallery per scored set, the doubted label flagged
    assert "<details><summary><b>utkface val (choices made here)</b>" in page
    errors = page[order[4]:]
    assert "<h3>test</h3>" in errors and "<h3>other dataset</h3>" in errors
    assert errors.count("card doubt") == 1 and "1 with a label in doubt" in errors


def test_an_attribute_no_row_records_is_named_not_plotted(tmp_path):
    sections = _sections(tmp_path)
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    attributes = {"Smiling": rng.integers(0, 2, 200), "Young": np.full(200, -1)}  # -1: no row records Young
    sections["groups"] = {"run, test": group_metrics(y, pred, attributes, n_resamples=50)}
    page = render(**sections)
    assert "<summary>No rows here record 1 attribute</summary><p>Young.</p>" in page
    assert page.count('alt="accuracy by attribute"') == 1  # Smiling's plot, with no empty row for Young
