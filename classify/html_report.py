"""One self-contained HTML report: plots as embedded PNG data URIs, face thumbnails as small JPEG data URIs.

Takes plain data (dicts and lists), so any results format can feed it; no torch, no network, no script:
the file opens offline in any browser. Every text that reaches the page goes through `html.escape`
(file names and attribute names come from users). Sections, each optional:

- ``dataset``: {"name", "root", "store", "n_rows", "splits": {split: n}, "male": n}
- ``extraction``: rows (dicts) for a table, e.g. per backbone valid / unreadable / no face
- ``leaderboard``: rows (dicts) for a table, in rank order
- ``groups``: {label: `classify.groups.group_metrics` output} (label e.g. "sface__logreg, test")
- ``calibration``: {label: {"before": `calibration.calibration_report`, "after": the same on calibrated
  probabilities or None, "calibrator": `Calibrator.to_json()`, "threshold": `decision_threshold()` output,
  "recalls": {"before": {...}, "after": {...}} optional}}
- ``errors``: rows {"path", "id", "p_male", "true", "predicted", "groups": {name: text}, "label_check"}
  (most confident first is the caller's order); ``rejected``: rows {"path", "id", "reason"}.
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

THUMBNAIL_PX = 96
MAX_GALLERY = 60
CSS = """body{font-family:system-ui,sans-serif;margin:2em;max-width:1200px;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:.9em}td,th{border:1px solid #ccc;padding:.2em .5em}
th{background:#f0f0f0}tr.small td{color:#999}.gallery{display:flex;flex-wrap:wrap;gap:.6em}
.card{border:1px solid #ccc;padding:.3em;width:150px;font-size:.75em}.card img{display:block;margin:auto}
.warn{background:#fee;border:1px solid #c00;padding:.5em}"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return str(value)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """An HTML table of dict rows, every cell escaped. Columns: the first row's keys unless given, less
    those starting with "_"; a row's "_class" becomes its CSS class."""
    if not rows:
        return "<p>(none)</p>"
    columns = columns or [key for key in rows[0] if not str(key).startswith("_")]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    body = "".join(f"<tr{_class(row.get('_class'))}>"
                   + "".join(f"<td>{esc(fmt(row.get(c)))}</td>" for c in columns) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _class(name: str | None) -> str:
    return f' class="{esc(name)}"' if name else ""


def png_data_uri(figure) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    import matplotlib.pyplot as plt

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def thumbnail_data_uri(path, *, size: int = THUMBNAIL_PX) -> str | None:
    """A JPEG data URI of the image shrunk to fit size x size, or None when it cannot be read (or is over
    extract's limits: decoded by extract's checked decoder, never unbounded)."""
    import cv2

    from extract.decode import ImageTooLarge, Unreadable, decode  # lazy: OpenCV only, no torch

    try:
        image = decode(path).image
    except (Unreadable, ImageTooLarge):
        return None
    scale = size / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return "data:image/jpeg;base64," + base64.b64encode(encoded.tobytes()).decode() if ok else None


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


# -- sections --------------------------------------------------------------------------------------------
def dataset_section(dataset: dict) -> str:
    splits = ", ".join(f"{esc(k)} {int(v):,}" for k, v in dataset.get("splits", {}).items())
    return (f"<h2>Dataset</h2><p><b>{esc(dataset.get('name', '?'))}</b> at <code>{esc(dataset.get('root', '?'))}"
            f"</code>: {int(dataset.get('n_rows', 0)):,} images ({splits}); {int(dataset.get('male', 0)):,} male. "
            f"Store: <code>{esc(dataset.get('store', '?'))}</code>.</p>")


def groups_section(label: str, result: dict) -> str:
    summary = result["summary"]
    worst = summary.get("worst_group") or {}
    gap = summary.get("largest_accuracy_gap") or {}
    odds = summary.get("equalised_odds_difference") or {}
    parts = [f"<h3>{esc(label)}</h3>",
             f"<p>{summary['n']:,} rows: accuracy {fmt(summary['accuracy'])}, balanced accuracy "
             f"{fmt(summary['balanced_accuracy'])}, male recall {fmt(summary['male_recall'])}, female recall "
             f"{fmt(summary['female_recall'])}. Worst group ({result['min_n']}+ rows): {esc(worst.get('family', '-'))} "
             f"= {esc(worst.get('group', '-'))} ({fmt(worst.get('accuracy'))}); largest accuracy gap "
             f"{fmt(gap.get('value'))} ({esc(gap.get('family', '-'))}); equalised-odds difference "
             f"{fmt(odds.get('value'))} ({esc(odds.get('family', '-'))}). Intervals: {int(result['level'] * 100)}% "
             f"percentile bootstrap, {result['n_resamples']} resamples; groups under {result['min_n']} rows are "
             "marked too small (grey) and left out of these summaries.</p>"]
    yes_no = {f: d for f, d in result["families"].items() if [g["group"] for g in d["groups"]] == ["yes", "no"]}
    binary = {f: d for f, d in yes_no.items() if any(g["n"] for g in d["groups"])}
    for family, data in result["families"].items():
        if family in yes_no:
            continue
        present = [g for g in data["groups"] if g["n"]]
        empty = [g["group"] for g in data["groups"] if not g["n"]]
        if not present:
            continue
        parts.append(f"<h4>{esc(family)}</h4>" + img(_group_plot(family, present), f"accuracy by {family}")
                     + table([_group_cells(g) for g in present])
                     + (f"<p>No rows: {esc(', '.join(empty))}.</p>" if empty else "")
                     + (f"<p>{data['n_missing']:,} rows have no {esc(family)} value.</p>" if data["n_missing"] else ""))
    if binary:
        parts.append("<h4>Attributes (present / absent)</h4>" + img(_binary_plot(binary), "accuracy by attribute")
                     + table([_binary_cells(f, d) for f, d in binary.items()]))
    if len(binary) < len(yes_no):
        parts.append("<p>No rows here record: " + esc(", ".join(f for f in yes_no if f not in binary)) + ".</p>")
    if result.get("skipped"):
        parts.append("<p>Not groupings: " + "; ".join(f"{esc(k)} ({esc(v)})" for k, v in result["skipped"].items())
                     + "</p>")
    return "".join(parts)


def _interval(value, ci) -> str:
    return "n/a" if value is None else f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _group_cells(group: dict) -> dict:
    return {"group": group["group"], "n": group["n"], "male": group["n_male"], "female": group["n_female"],
            "accuracy [CI]": _interval(group["accuracy"], group["accuracy_ci"]),
            "male recall [CI]": _interval(group["male_recall"], group["male_recall_ci"]),
            "female recall [CI]": _interval(group["female_recall"], group["female_recall_ci"]),
            "note": "too small" if group["too_small"] else "", "_class": "small" if group["too_small"] else None}


def _binary_cells(family: str, data: dict) -> dict:
    yes, no = data["groups"]
    return {"attribute": family, "n present": yes["n"],
            "accuracy present [CI]": _interval(yes["accuracy"], yes["accuracy_ci"]),
            "n absent": no["n"], "accuracy absent [CI]": _interval(no["accuracy"], no["accuracy_ci"]),
            "gap": data["accuracy_gap"], "equalised-odds diff.": data["equalised_odds_difference"],
            "note": "too small" if yes["too_small"] or no["too_small"] else ""}


def _dots(ax, values, cis, small, *, offset=0.0, color="tab:blue", name=None):
    """One dot per group with its interval as whiskers (dots, not bars: the axis need not start at 0)."""
    labelled = False
    for row, (value, ci, too_small) in enumerate(zip(values, cis, small)):
        if value is None:
            continue
        whiskers = [[value - ci[0]], [ci[1] - value]] if ci else None
        ax.errorbar([value], [row + offset], xerr=whiskers, fmt="o", capsize=2,
                    color="#bbb" if too_small else color, label=None if labelled else name)
        labelled = True


def _accuracy_axis(ax, groups: list[dict]) -> None:
    """From a little below the lowest interval end shown, to 1."""
    lows = [g["accuracy_ci"][0] if g["accuracy_ci"] else g["accuracy"] for g in groups if g["accuracy"] is not None]
    ax.set_xlim(max(0.0, min(lows + [1.0]) - 0.05), 1.005)


def _group_plot(family: str, groups: list[dict]) -> str:
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(6, 0.6 + 0.28 * len(groups)))
    _dots(ax, [g["accuracy"] for g in groups], [g["accuracy_ci"] for g in groups], [g["too_small"] for g in groups])
    ax.set_yticks(range(len(groups)), [g["group"] for g in groups], fontsize=8)
    ax.invert_yaxis()
    _accuracy_axis(ax, groups)
    ax.set_xlabel("accuracy with 95% interval (grey: too small)")
    ax.set_title(family)
    return png_data_uri(figure)


def _binary_plot(binary: dict) -> str:
    plt = _pyplot()
    names = list(binary)
    figure, ax = plt.subplots(figsize=(6, 0.6 + 0.3 * len(names)))
    for offset, index, color, name in ((-0.2, 0, "tab:blue", "present"), (0.2, 1, "tab:orange", "absent")):
        groups = [binary[f]["groups"][index] for f in names]
        _dots(ax, [g["accuracy"] for g in groups], [g["accuracy_ci"] for g in groups],
              [g["too_small"] for g in groups], offset=offset, color=color, name=name)
    ax.set_yticks(range(len(names)), names, fontsize=7)
    ax.invert_yaxis()
    _accuracy_axis(ax, [group for f in names for group in binary[f]["groups"]])
    if ax.get_legend_handles_labels()[0]:  # no dot at all when every group lacks an accuracy
        ax.legend(fontsize=7)
    ax.set_xlabel("accuracy with 95% interval (grey: too small)")
    return png_data_uri(figure)


def calibration_section(label: str, entry: dict) -> str:
    rows = [{"probabilities": name, "ECE": report["ece"], "top-label ECE": report["ece_confidence"],
             "Brier": report["brier"], "log loss": report["log_loss"], "n": report["n"]}
            for name, report in (("raw", entry["before"]), ("calibrated", entry.get("after"))) if report]
    calibrator = entry.get("calibrator") or {}
    threshold = entry.get("threshold") or {}
    fitted = calibrator.get("fitted_on", {})
    text = (f"<p>ECE binning: {esc(entry['before']['binning'])}. Calibrator: <b>{esc(calibrator.get('method', 'none'))}"
            f"</b> ({esc(fitted.get('selection', 'not fitted'))}; criterion {esc(fitted.get('criterion', '-'))}). "
            f"Decision threshold: {esc(threshold.get('rule', 'default'))} = {fmt(threshold.get('value', 0.5))}.</p>")
    recalls = entry.get("recalls")
    recall_table = table([{"": k, **v} for k, v in recalls.items()]) if recalls else ""
    return (f"<h3>{esc(label)}</h3>{text}" + table(rows) + recall_table
            + img(_reliability_plot(label, entry), f"reliability diagram {label}"))


def _reliability_plot(label: str, entry: dict) -> str:
    plt = _pyplot()
    figure, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    for name, report, marker in (("raw", entry["before"], "o"), ("calibrated", entry.get("after"), "s")):
        if report:
            bins = [b for b in report["reliability"] if b["n"]]
            ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker=marker,
                    label=f"{name} (ECE {report['ece']:.3f})")
    ax.set_xlabel("mean predicted p(male)")
    ax.set_ylabel("fraction male")
    ax.set_title(label, fontsize=9)
    ax.legend(fontsize=8)
    return png_data_uri(figure)


def gallery_section(errors: list[dict], rejected: list[dict], *, limit: int = MAX_GALLERY) -> str:
    parts = [f"<h2>Errors</h2><p>{len(errors):,} test images wrong, most confident first"
             f"{f' (first {limit} shown)' if len(errors) > limit else ''}.</p><div class='gallery'>"]
    for row in errors[:limit]:
        doubt = [f"<b>label in doubt:</b> {esc(row['label_check'])}"] if row.get("label_check") else []
        parts.append(_card(row, f"true {row['true']}, said {row['predicted']} (p(male) {row['p_male']:.3f})",
                           "<br>".join(doubt + [f"{esc(k)}: {esc(v)}" for k, v in row.get("groups", {}).items()])))
    parts.append(f"</div><h3>Rejected images</h3><p>{len(rejected):,} images could not be used "
                 "(unreadable, or no face found).</p><div class='gallery'>")
    for row in rejected[:limit]:
        parts.append(_card(row, row["reason"], ""))
    return "".join(parts) + "</div>"


def _card(row: dict, headline: str, details: str) -> str:
    uri = thumbnail_data_uri(row["path"]) if row.get("path") else None
    picture = img(uri, row["id"]) if uri else "<i>(cannot be read)</i>"
    return f"<div class='card'>{picture}<b>{esc(row['id'])}</b><br>{esc(headline)}<br>{details}</div>"


def render(*, title: str, dataset: dict | None = None, extraction: list[dict] | None = None,
           leaderboard: list[dict] | None = None, chosen: str | None = None, groups: dict | None = None,
           calibration: dict | None = None, errors: list[dict] | None = None, rejected: list[dict] | None = None,
           warnings: list[str] = ()) -> str:
    """The whole report as one HTML string (sections given as plain data; see the module docstring)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{CSS}</style></head><body><h1>{esc(title)}</h1>"]
    parts += [f"<p class='warn'>{esc(w)}</p>" for w in warnings]
    if dataset:
        parts.append(dataset_section(dataset))
    if extraction is not None:
        parts.append("<h2>Extraction</h2>" + table(extraction))
    if leaderboard is not None:
        parts.append("<h2>Leaderboard</h2>" + (f"<p style='white-space:pre-line'>{esc(chosen)}</p>" if chosen else "")
                     + table(leaderboard))
    if groups:
        parts.append("<h2>Per-group metrics</h2>" + "".join(groups_section(k, v) for k, v in groups.items()))
    if calibration:
        parts.append("<h2>Calibration</h2>" + "".join(calibration_section(k, v) for k, v in calibration.items()))
    if errors is not None or rejected is not None:
        parts.append(gallery_section(errors or [], rejected or []))
    return "".join(parts) + "</body></html>"


def write_html(path, **sections) -> Path:
    """`render` into ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(**sections), encoding="utf-8")
    return path
