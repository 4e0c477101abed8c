"""Gender of new images with a saved model: ``python -m classify predict --head H IMAGES``.

`classify.model.GenderModel.predict_images` does the work (the backbones run through `extract`,
`classify.images`); this module writes its answers as the console lines and the CSV.
"""
from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

from classify.images import Prediction
from features import atomic
from features.cli import one_line
from features.tables import csv_row

CSV_COLUMNS = ["path", "gender", "probability", "status", "reason", "face", "box_x", "box_y", "box_w", "box_h"]


def write_predictions(predictions: list[Prediction], path: Path) -> None:
    """CSV: path, gender, probability (of that gender), status, reason, then the face's index in its image
    (0 the largest) and box x, y, w, h in original-image pixels (empty when there is no face or box)."""
    with atomic.atomic_open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for p in predictions:  # a file named "=HYPERLINK(...).jpg" is text to a spreadsheet, not a formula
            box = [f"{v:.1f}" for v in p.box] if p.box is not None else [""] * 4
            writer.writerow(csv_row([p.path, p.gender or "", "" if p.probability is None else f"{p.probability:.4f}",
                                     p.status, p.reason, "" if p.face is None else p.face, *box]))


def format_predictions(predictions: list[Prediction], *, faces: bool = False) -> str:
    """A header, one line per image ('path  male  0.97' or 'path  unreadable: empty file'), totals; with
    ``faces``, one line per face with its index in the image and box ('path  0  12,40 88x104  male  0.97')."""
    rows = [("image", "face  box x,y wxh", "gender  probability of that gender")]
    for p in predictions:  # one line each, however the file is named
        answer = (f"{p.gender:<6}  {p.probability:.4f}" if p.status == "ok"
                  else f"{p.status}{': ' + one_line(p.reason, limit=200) if p.reason else ''}")
        rows.append((one_line(p.path, limit=300), _box_text(p), answer))
    width, where = (max(len(row[column]) for row in rows) for column in (0, 1))
    lines = [(f"{path:<{width}}  " + (f"{box:<{where}}  " if faces else "") + answer).rstrip()
             for path, box, answer in rows]
    return "\n".join(lines + [totals(predictions, faces=faces)])


def _box_text(p: Prediction) -> str:
    """'0     12,40 88x104' (face index, box rounded to pixels), or '' without a face."""
    if p.face is None:
        return ""
    if p.box is None:
        return f"{p.face:<4}  -"
    x, y, w, h = (round(v) for v in p.box)
    return f"{p.face:<4}  {x},{y} {w}x{h}"


def totals(predictions: list[Prediction], *, faces: bool = False) -> str:
    """'12 images: 5 male, 4 female, 2 no face found, 1 unreadable'; with faces, '12 images, 15 faces: ...'
    (male/female count faces, the other statuses images)."""
    counts = Counter(p.gender if p.status == "ok" else p.status for p in predictions)
    parts = [f"{counts[key]} {key}" for key in ["male", "female", *sorted(set(counts) - {"male", "female"})]]
    images = sum(1 for p in predictions if not p.face)  # face 0 or None: one such row per image
    found = f", {sum(1 for p in predictions if p.status == 'ok')} faces" if faces else ""
    return f"{images} images{found}: " + ", ".join(parts)
