"""One self-contained HTML report: plots as embedded PNG data URIs, face thumbnails as small JPEG data URIs.

Takes plain data (dicts and lists); no torch, no network, no script: the file opens offline, reads at
1,280 px without scrolling sideways (wide tables scroll in their box) and prints. Every text reaching the
page goes through `html.escape` (file and attribute names come from users). Sections of `render`, in order:

- ``summary``: {"recommended", "reason", "verdict", "scored": rows {"where", "accuracy", "ci", "male_recall",
  "female_recall", "n"}, "best_out_of_domain": [text], "label_checks": [text]}
- ``leaderboard``: rows in rank order; ``compact_columns`` shown at first (all behind a toggle); ``chosen``:
  the recommendation's text
- ``plots``: {title: PNG file} side by side (none: no section)
- ``dataset``: {"name", "root", "store", "n_rows", "splits": {split: n}, "male": n}
- ``extraction``: rows for a table, e.g. per backbone valid / unreadable / no face
- ``groups``: {label: `classify.groups.group_metrics` output} (label e.g. "celeba test")
- ``calibration``: {label: {"before": `calibration.calibration_report`, "after": the same on calibrated
  probabilities or None, "calibrator": `Calibrator.to_json()`, "threshold": `decision_threshold()` output,
  "recalls": {rule: {"accuracy", "male recall", "female recall", ...}} optional}}
- ``galleries``: [{"title", "n_scored", "errors", "rejected"}], rows as in errors.json (`classify.errors`),
  most confident first (None: no section)
"""
from __future__ import annotations

import base64
import html
import io
from pathlib import Path

import numpy as np

from features import atomic

THUMBNAIL_PX = 96
MAX_GALLERY = 60
CSS = """*{box-sizing:border-box}
body{font-family:system-ui,sans-serif;margin:0 auto;padding:1em 1.5em;max-width:1240px;color:#222;line-height:1.4}
h1{font-size:1.5em;margin:.3em 0}h2{border-bottom:2px solid #ddd;margin-top:1.5em}h3{margin:1em 0 .3em}
table{border-collapse:collapse;margin:.4em 0 1em;font-size:.85em}th{background:#f0f0f0}
td,th{border:1px solid #ccc;padding:.15em .45em;text-align:left;vertical-align:top}td{white-space:nowrap}
p,li,td,code{overflow-wrap:anywhere}img{max-width:100%;height:auto}.scroll{overflow-x:auto;max-width:100%}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(440px,1fr));gap:.5em 1.5em;align-items:start}
.pair{display:grid;grid-template-columns:minmax(0,max-content) minmax(320px,1fr);gap:1.5em;align-items:start}
.grid>*,.pair>*{min-width:0}@media(max-width:900px){.pair{grid-template-columns:1fr}}
tr.small td{color:#999}tr.chosen td{background:#eef7ee;font-weight:600}
.summary{border:2px solid #3a6;border-radius:6px;padding:.2em 1em .5em;background:#f7fbf8}
.summary h2{border:0;margin:.4em 0}.summary td:first-child{white-space:normal}.verdict{font-size:1.15em;font-weight:600}
.gallery{display:flex;flex-wrap:wrap;gap:.5em}.card img{display:block;margin:auto}
.card{border:1px solid #ccc;padding:.3em;width:150px;font-size:.75em;overflow-wrap:anywhere;white-space:normal}
.card.doubt{border:2px solid #d80;background:#fff8e8}.flag{color:#a50}
details>summary{cursor:pointer;color:#246;margin:.3em 0}.warn{background:#fee;border:1px solid #c00;padding:.5em}
@media print{body{max-width:none;padding:0}.card,tr,img{break-inside:avoid}.scroll{overflow:visible}}"""


def esc(value) -> str:
    return html.escape(str(value), quote=True)


def fmt(value) -> str:
    if isinstance(value, (float, np.floating)):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def table(rows: list[dict], columns: list[str] | None = None) -> str:
    """An HTML table of dict rows, every cell escaped. Columns: the first row's keys unless given, less
    those starting with "_"; a row's "_class" becomes its CSS class."""
    if not rows:
        return "<p>(none)</p>"
    columns = columns or [key for key in rows[0] if not str(key).startswith("_")]
    head = "".join(f"<th>{esc(c)}</th>" for c in columns)
    # a line-break opportunity after each "+": cells do not wrap, and a run over seven backbones
    # ("a+b+...+g") would otherwise push the table past the window
    body = "".join((f'<tr class="{esc(row["_class"])}">' if row.get("_class") else "<tr>")
                   + "".join(f"<td>{esc(fmt(row.get(c))).replace('+', '+<wbr>')}</td>" for c in columns) + "</tr>"
                   for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def scroll(inner: str) -> str:
    """A box that scrolls sideways when its content (a wide table) is wider than the page."""
    return f"<div class='scroll'>{inner}</div>"


def data_uri(kind: str, data: bytes) -> str:
    return f"data:image/{kind};base64," + base64.b64encode(data).decode()


def pyplot():
    """matplotlib.pyplot on the Agg backend, imported only where something is drawn."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_data_uri(figure) -> str:
    """A matplotlib figure as a PNG data URI (the figure is closed)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=90, bbox_inches="tight")
    pyplot().close(figure)
    return data_uri("png", buffer.getvalue())


def thumbnail_data_uri(path) -> str | None:
    """A JPEG data URI of the image shrunk to THUMBNAIL_PX at most; None when extract's checked decoder refuses it."""
    import cv2

    from extract.decode import ImageTooLarge, Unreadable, decode  # lazy: OpenCV only, no torch

    try:
        image = decode(path).image
    except (Unreadable, ImageTooLarge):
        return None
    scale = THUMBNAIL_PX / max(image.shape[:2])
    if scale < 1:
        image = cv2.resize(image, (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))),
                           interpolation=cv2.INTER_AREA)
    ok, encoded = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 80])
    return data_uri("jpeg", encoded.tobytes()) if ok else None


def img(uri: str, alt: str) -> str:
    return f'<img src="{uri}" alt="{esc(alt)}">'


# -- sections --------------------------------------------------------------------------------------------
def dataset_section(dataset: dict) -> str:
    splits = ", ".join(f"{esc(k)} {int(v):,}" for k, v in dataset["splits"].items())
    return (f"<h2>Dataset</h2><p><b>{esc(dataset['name'])}</b> at <code>{esc(dataset['root'])}</code>: "
            f"{int(dataset['n_rows']):,} images ({splits}); {int(dataset['male']):,} male. "
            f"Store: <code>{esc(dataset['store'])}</code>.</p>")


def groups_section(label: str, result: dict, *, open_: bool = True) -> str:
    """One scored set's per-group tables, a plot beside each, one line for what has no rows; folded unless ``open_``."""
    summary = result["summary"]
    worst, gap, odds = (summary.get(key) or {} for key in ("worst_group", "largest_accuracy_gap",
                                                           "equalised_odds_difference"))
    parts = [f"<p>{summary['n']:,} rows: accuracy {fmt(summary['accuracy'])}, balanced accuracy "
             f"{fmt(summary['balanced_accuracy'])}, male recall {fmt(summary['male_recall'])}, female recall "
             f"{fmt(summary['female_recall'])}. Worst group ({result['min_n']}+ rows): {esc(worst.get('family', '-'))} "
             f"= {esc(worst.get('group', '-'))} ({fmt(worst.get('accuracy'))}); largest accuracy gap "
             f"{fmt(gap.get('value'))} ({esc(gap.get('family', '-'))}); equalised-odds difference "
             f"{fmt(odds.get('value'))} ({esc(odds.get('family', '-'))}). Intervals: {int(result['level'] * 100)}% "
             f"percentile bootstrap, {result['n_resamples']} resamples; groups under {result['min_n']} rows are "
             "marked too small (grey) and left out of these summaries.</p>"]
    yes_no = {f: d for f, d in result["families"].items() if [g["group"] for g in d["groups"]] == ["yes", "no"]}
    binary = {f: d for f, d in yes_no.items() if any(g["n"] for g in d["groups"])}
    parts += [_family_block(family, data) for family, data in result["families"].items()
              if family not in yes_no and any(g["n"] for g in data["groups"])]
    if binary:
        series = [(-0.2, "tab:blue", "present", [data["groups"][0] for data in binary.values()]),
                  (0.2, "tab:orange", "absent", [data["groups"][1] for data in binary.values()])]
        plot = _accuracy_plot(list(binary), series, row_height=0.3, fontsize=7)
        parts.append("<h4>Attributes (present / absent)</h4><div class='pair'>"
                     + scroll(table([_binary_cells(f, d) for f, d in binary.items()]))
                     + img(plot, "accuracy by attribute") + "</div>")
    absent = [f for f in yes_no if f not in binary]
    if absent:  # one line, the names behind it: a CelebA subset can lack 39 of the 40 attributes
        parts.append(f"<details><summary>No rows here record {len(absent)} attribute{'s' * (len(absent) > 1)}"
                     f"</summary><p>{esc(', '.join(absent))}.</p></details>")
    if result.get("skipped"):
        parts.append("<p>Not groupings: " + "; ".join(f"{esc(k)} ({esc(v)})" for k, v in result["skipped"].items())
                     + "</p>")
    return (f"<h3>{esc(label)}</h3>" + "".join(parts) if open_
            else f"<details><summary><b>{esc(label)}</b></summary>{''.join(parts)}</details>")


def _family_block(family: str, data: dict) -> str:
    """A grouping's table of the groups with rows, one line naming the empty ones, and its plot beside."""
    present = [g for g in data["groups"] if g["n"]]
    empty = [g["group"] for g in data["groups"] if not g["n"]]
    notes = ([f"No rows: {', '.join(empty)}."] if empty else []) + (
        [f"{data['n_missing']:,} rows have no {family} value."] if data["n_missing"] else [])
    return (f"<h4>{esc(family)}</h4><div class='pair'><div>" + scroll(table([_group_cells(g) for g in present]))
            + "".join(f"<p>{esc(note)}</p>" for note in notes) + "</div>"
            + img(_accuracy_plot([g["group"] for g in present], [(0.0, "tab:blue", None, present)], row_height=0.28,
                                 fontsize=8, title=family), f"accuracy by {family}") + "</div>")


def _interval(value, ci) -> str:
    if value is None or value != value:  # NaN: a sex with no rows
        return "n/a"
    return f"{value:.3f}" + (f" [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else "")


def _group_cells(group: dict) -> dict:
    return {"group": group["group"], "n": group["n"], "male": group["n_male"], "female": group["n_female"],
            **{f"{key.replace('_', ' ')} [CI]": _interval(group[key], group[f"{key}_ci"])
               for key in ("accuracy", "male_recall", "female_recall")},
            "note": "too small" if group["too_small"] else "", "_class": "small" if group["too_small"] else None}


def _binary_cells(family: str, data: dict) -> dict:
    yes, no = data["groups"]
    return {"attribute": family, "n present": yes["n"],
            "accuracy present [CI]": _interval(yes["accuracy"], yes["accuracy_ci"]),
            "n absent": no["n"], "accuracy absent [CI]": _interval(no["accuracy"], no["accuracy_ci"]),
            "gap": data["accuracy_gap"], "equalised-odds diff.": data["equalised_odds_difference"],
            "note": "too small" if yes["too_small"] or no["too_small"] else ""}


def _accuracy_plot(names: list[str], series: list[tuple], *, row_height: float, fontsize: int,
                   title: str | None = None) -> str:
    """A line per name, top down; per series (offset, colour, legend name, a group per name) a dot per group
    with its interval, grey when too small (dots, not bars: the axis starts just below the lowest shown)."""
    figure, ax = pyplot().subplots(figsize=(6, 0.6 + row_height * len(names)))
    for offset, color, name, groups in series:
        drawn = [(row, group) for row, group in enumerate(groups) if group["accuracy"] is not None]
        for i, (row, group) in enumerate(drawn):
            value, ci = group["accuracy"], group["accuracy_ci"]
            ax.errorbar([value], [row + offset], xerr=[[value - ci[0]], [ci[1] - value]] if ci else None, fmt="o",
                        capsize=2, color="#bbb" if group["too_small"] else color, label=None if i else name)
    ax.set_yticks(range(len(names)), names, fontsize=fontsize)
    ax.invert_yaxis()
    lows = [g["accuracy_ci"][0] if g["accuracy_ci"] else g["accuracy"]
            for *_, groups in series for g in groups if g["accuracy"] is not None]
    ax.set_xlim(max(0.0, min(lows + [1.0]) - 0.05), 1.005)
    if ax.get_legend_handles_labels()[0]:  # no dot at all when every group lacks an accuracy
        ax.legend(fontsize=7)
    ax.set_xlabel("accuracy with 95% interval (grey: too small)")
    if title:
        ax.set_title(title)
    return png_data_uri(figure)


def calibration_section(calibration: dict) -> str:
    """One table across the scored sets, then the reliability diagrams side by side."""
    rows = [_calibration_cells(label, entry) for label, entry in calibration.items()]
    first = next(iter(calibration.values()))
    calibrator, threshold, fitted = first["calibrator"], first["threshold"], first["calibrator"]["fitted_on"]
    text = (f"<p>Calibrator: <b>{esc(calibrator['method'])}</b> ({esc(fitted.get('selection', 'not fitted'))}; "
            f"criterion {esc(fitted.get('criterion', '-'))}). Decision threshold: {esc(threshold['rule'])} = "
            f"{fmt(threshold['value'])}. ECE binning: {esc(first['before']['binning'])}. Recalls: of the "
            "final decision (calibrated p(male) at the threshold).</p>")
    diagrams = "".join(img(_reliability_plot(label, entry), f"reliability diagram {label}")
                       for label, entry in calibration.items())
    return text + scroll(table(rows)) + f"<div class='grid small-plots'>{diagrams}</div>"


def _calibration_cells(label: str, entry: dict) -> dict:
    before, after = entry["before"], entry.get("after") or {}
    final = list((entry.get("recalls") or {}).values())[-1:] or [{}]
    return {"scored rows": label, "n": before["n"], "ECE raw": before["ece"], "ECE calibrated": after.get("ece"),
            "Brier raw": before["brier"], "Brier calibrated": after.get("brier"), "log loss raw": before["log_loss"],
            "log loss calibrated": after.get("log_loss"), "male recall": final[0].get("male recall"),
            "female recall": final[0].get("female recall")}


def _reliability_plot(label: str, entry: dict) -> str:
    figure, ax = pyplot().subplots(figsize=(4, 3.6))
    ax.plot([0, 1], [0, 1], color="#999", linestyle="--", linewidth=1)
    for name, report, marker in (("raw", entry["before"], "o"), ("calibrated", entry.get("after"), "s")):
        if report:
            bins = [b for b in report["reliability"] if b["n"]]
            ax.plot([b["mean_predicted"] for b in bins], [b["observed"] for b in bins], marker=marker,
                    label=f"{name} (ECE {report['ece']:.3f})")
    ax.set(xlabel="mean predicted p(male)", ylabel="fraction male")
    ax.set_title(label, fontsize=9)
    ax.legend(fontsize=8)
    return png_data_uri(figure)


def gallery_section(gallery: dict) -> str:
    """One set's wrong images, a flagged card for each doubted label; the images not used, folded."""
    errors, rejected = gallery["errors"], gallery.get("rejected", [])
    doubted = sum(1 for row in errors if row.get("label_check"))
    parts = [f"<h3>{esc(gallery['title'])}</h3><p>{len(errors):,} wrong of {int(gallery.get('n_scored', 0)):,} "
             f"scored, most confident first{f' (first {MAX_GALLERY} shown)' if len(errors) > MAX_GALLERY else ''}; "
             f"<span class='flag'>{doubted} with a label in doubt</span> (orange cards).</p><div class='gallery'>"]
    for row in errors[:MAX_GALLERY]:
        doubt = [f"<b>label in doubt:</b> {esc(row['label_check'])}"] if row.get("label_check") else []
        parts.append(_card(row, f"true {row['true']}, said {row['predicted']} (p(male) {row['p_male']:.3f})",
                           "<br>".join(doubt + [f"{esc(k)}: {esc(v)}" for k, v in row.get("groups", {}).items()]),
                           doubt=bool(doubt)))
    parts.append("</div>")
    if rejected:
        cards = "".join(_card(row, row["reason"], "") for row in rejected[:MAX_GALLERY])
        parts.append(f"<details><summary>{len(rejected):,} images could not be used (unreadable, no face found, too "
                     f"large)</summary><div class='gallery'>{cards}</div></details>")
    return "".join(parts)


def _card(row: dict, headline: str, details: str, *, doubt: bool = False) -> str:
    uri = thumbnail_data_uri(row["path"]) if row.get("path") else None
    picture = img(uri, row["id"]) if uri else "<i>(cannot be read)</i>"
    return (f"<div class='card{' doubt' if doubt else ''}'>{picture}<b>{esc(row['id'])}</b><br>{esc(headline)}"
            f"<br>{details}</div>")


def summary_section(summary: dict) -> str:
    """The first screen (the module docstring's ``summary``)."""
    rows = [{"scored on": row["where"], "accuracy [95% CI]": _interval(row["accuracy"], row["ci"]),
             "male recall": _interval(row["male_recall"], None), "female recall": _interval(row["female_recall"], None),
             "n": row["n"]} for row in summary["scored"]]
    lists = [("Best out of domain", summary.get("best_out_of_domain")), ("Label checks", summary.get("label_checks"))]
    items = "".join(f"<p><b>{title}:</b> {esc('; '.join(values))}.</p>" for title, values in lists if values)
    return (f"<section class='summary'><h2>Summary</h2><p class='verdict'>{esc(summary['verdict'])}</p>"
            f"<p>Recommended: <b>{esc(summary['recommended'])}</b> ({esc(summary['reason'])}).</p>"
            + scroll(table(rows)) + items + "</section>")


def leaderboard_section(rows: list[dict], columns: list[str], chosen: str) -> str:
    """The compact leaderboard (the recommended row marked), every column behind a toggle."""
    marked = [{**row, "_class": "chosen" if "recommended" in row["choice"] else None} for row in rows]
    return ("<h2>Leaderboard</h2><p>Ranked on val accuracy, where every choice is made; test reported.</p>"
            + scroll(table(marked, [c for c in columns if c in rows[0]]))
            + f"<details><summary>All {len(rows[0])} columns</summary>{scroll(table(marked))}</details>"
            + f"<p style='white-space:pre-line'>{esc(chosen)}</p>")


def plots_section(plots: dict) -> str:
    figures = "".join(f"<figure style='margin:0'>{img(data_uri('png', Path(path).read_bytes()), title)}"
                      f"<figcaption>{esc(title)}</figcaption></figure>" for title, path in plots.items())
    return f"<h2>Plots</h2><div class='grid'>{figures}</div>"


def render(*, title: str, summary: dict, dataset: dict, extraction: list[dict], leaderboard: list[dict],
           compact_columns: list[str], chosen: str, groups: dict, calibration: dict, galleries: list[dict] | None,
           plots: dict | None = None, warnings: list[str] = ()) -> str:
    """The whole report as one HTML string (sections given as plain data; see the module docstring)."""
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
             "<meta name='viewport' content='width=device-width, initial-scale=1'>"
             f"<title>{esc(title)}</title><style>{CSS}</style></head><body><h1>{esc(title)}</h1>"]
    parts += [f"<p class='warn'>{esc(w)}</p>" for w in warnings]
    parts += [summary_section(summary), leaderboard_section(leaderboard, compact_columns, chosen),
              plots_section(plots) if plots else "", dataset_section(dataset),
              "<h2>Extraction</h2>" + scroll(table(extraction)),
              "<h2>Per-group metrics</h2>" + "".join(groups_section(label, result, open_="val" not in label.split())
                                                    for label, result in groups.items()),
              "<h2>Calibration</h2>" + calibration_section(calibration),
              "<h2>Errors</h2>" + ("".join(gallery_section(g) for g in galleries) or "<p>(none)</p>")
              if galleries is not None else ""]
    return "".join(parts) + "</body></html>"


def write_html(path, **sections) -> Path:
    """`render` into ``path`` (UTF-8); returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic.write_text(path, render(**sections))  # a kill leaves the old report or the new one
    return path
