"""The HTML report (classify/html_report.py), rendered in a real headless browser (Debian's Chromium).

The browser test loads the report from file:// with a small checking script appended (the report itself
has no script), lets Chromium dump the DOM after the load event, and reads what the script wrote: every
<img> decoded (complete, naturalWidth > 0), the tables present, no element injected by a hostile name.
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
window.addEventListener('load', () => {
  const images = Array.from(document.images);
  const broken = images.filter(i => !i.complete || i.naturalWidth === 0).map(i => i.alt);
  const result = {images: images.length, broken: broken, tables: document.querySelectorAll('table').length,
                  scripts: document.querySelectorAll('script').length,
                  bold: Array.from(document.querySelectorAll('b')).map(b => b.textContent)};
  document.body.setAttribute('data-check', JSON.stringify(result));
});
</script>"""


def browser() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


def check_in_chromium(path: Path, work: Path) -> dict:
    """Load the report at ``path`` in headless Chromium with `CHECK` appended; what the check found."""
    checked = work / "checked.html"
    checked.write_text(path.read_text(encoding="utf-8").replace("</body>", CHECK + "</body>"), encoding="utf-8")
    done = subprocess.run([browser(), "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                           f"--user-data-dir={work / 'profile'}", "--virtual-time-budget=10000",
                           "--dump-dom", checked.as_uri()], capture_output=True, text=True, timeout=120)
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
               "groups": {"race": "Black", HOSTILE: "yes"}} for path in faces]
    errors.append({"path": str(hostile_face), "id": HOSTILE, "p_male": 0.9, "true": "female",
                   "predicted": "male", "groups": {}})
    return {"title": "report <test>", "dataset": {"name": "utkface", "root": str(tmp_path), "store": "s.zarr",
                                                 "n_rows": n, "splits": {"test": n}, "male": int(y.sum())},
            "extraction": [{"backbone": "sface", "valid": 398, "no face": 2}],
            "leaderboard": [{"rank": 1, "backbones": "sface", "head": "logreg", "val_accuracy": 0.9}],
            "chosen": "sface + logreg",
            "groups": {"sface__logreg, test": group_metrics(y, pred, attributes, n_resamples=100)},
            "calibration": {"sface__logreg, test": {
                "before": calibration_report(y[200:], p[200:]),
                "after": calibration_report(y[200:], calibrator.apply(p[200:])),
                "calibrator": calibrator.to_json(), "threshold": decision_threshold("balanced", y[:200], p[:200])}},
            "errors": errors,
            "rejected": [{"path": str(unreadable), "id": unreadable.name, "reason": "unreadable"}]}


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
    assert result["images"] >= 8  # group plots, reliability diagram, 4 thumbnails
    assert result["tables"] >= 6  # extraction, leaderboard, sex/age/race/race x age, attributes, calibration
    assert result["scripts"] == 1  # only the checker: the hostile name stayed text
    assert HOSTILE in result["bold"]


def test_an_attribute_no_row_records_is_named_not_plotted(tmp_path):
    sections = _sections(tmp_path)
    rng = np.random.default_rng(1)
    y, pred = rng.integers(0, 2, 200), rng.integers(0, 2, 200)
    attributes = {"Smiling": rng.integers(0, 2, 200), "Young": np.full(200, -1)}  # -1: no row records Young
    sections["groups"] = {"run, test": group_metrics(y, pred, attributes, n_resamples=50)}
    page = render(**sections)
    assert "No rows here record: Young." in page
    assert page.count('alt="accuracy by attribute"') == 1  # Smiling's plot, with no empty row for Young
