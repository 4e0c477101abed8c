"""Write the main job's self-contained HTML report (issue 10) beside the Markdown one.

Reads a feature store and a `python -m classify train` results folder (results version 3): everything it
shows was computed by train and compare, nothing is refitted here. Sections (`classify.html_report`):
dataset, extraction per backbone, the leaderboard with its cross-dataset columns and the recommendation,
per-group tables and plots with intervals and reliability diagrams (raw and calibrated) of the
recommended run on val, test and every eval store (its val and its reported rows), and the error gallery
(errors.json of compare, `classify.errors`: wrong test images most confident first, rejected images).
Imports neither torch nor extract.

    .venv/bin/python scripts/write_html_report.py --store S.zarr --results DIR --out report.html [--demo]
"""
from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np

from classify.compare import DEMO_MARKER, DEMO_TITLE, disagreements, leaderboard, recommend, recommendation_text
from classify.errors import error_analysis, read_error_file
from classify.label_audit import doubt_note
from classify.html_report import write_html
from classify.predict import status_text
from classify.results import HeadFileError, load_runs
from features.dataset import SPLITS
from features.store import FeatureStore, Status, StoreError

EXPECTED_ERRORS = (StoreError, HeadFileError, FileNotFoundError)


def extraction_rows(store: FeatureStore) -> list[dict]:
    """Per backbone: dim, and the rows per status (valid, unreadable, no face found, too large)."""
    rows = []
    for name in store.backbones():
        counts = np.bincount(store.status(name), minlength=len(Status))
        row = {"backbone": name, "dim": store.backbone_info(name)["dim"]}
        row.update({status_text(code): int(counts[code]) for code in Status if code != Status.PENDING})
        rows.append(row)
    return rows


def scored_sets(run: dict) -> list[tuple[str, dict]]:
    """(label, scored rows) of the run: in-domain val and test, then each eval store's val and report."""
    dataset = run["store"]["dataset"]
    sets = [(f"{dataset} {split}" + (" (choices made here)" if split == "val" else ""), run["metrics"][split])
            for split in ("val", "test")]
    for label, cross in run.get("cross_dataset", {}).items():
        if cross.get("val"):
            sets.append((f"{label} val (cross-dataset, choosing)", cross["val"]))
        sets.append((f"{label} {cross['rows']} (cross-dataset)", cross["report"]))
    return sets


def calibration_entry(run: dict, scores: dict) -> dict:
    return {"before": scores["calibration"]["before"], "after": scores["calibration"]["after"],
            "calibrator": run["decision"]["calibrator"], "threshold": run["decision"]["threshold"],
            "recalls": scores.get("recalls")}


def errors_of(run: dict, results_dir: Path) -> dict | None:
    """compare's errors.json when it is of this run, else computed now; None when it cannot be."""
    found = read_error_file(results_dir)
    if found is not None and found["run"] == run["run"]:
        return found
    try:
        return error_analysis(run, results_dir)
    except EXPECTED_ERRORS as error:
        logging.warning("no error gallery: %s", error)
        return None


def collect(store_path, results_dir, *, demo: bool = False) -> dict:
    """The sections for `write_html`."""
    store = FeatureStore.open(store_path)
    results_dir = Path(results_dir)
    runs = load_runs(results_dir)
    if not runs:
        raise FileNotFoundError(f"no results files (version 3) in {results_dir}")
    best = recommend(runs)
    demo = demo or (results_dir / DEMO_MARKER).exists()
    name = f"{store.dataset_name} (DEMO DATA)" if demo else store.dataset_name
    sets = scored_sets(best)
    errors = errors_of(best, results_dir)
    return {
        "title": f"facegender report: {name}",
        "warnings": ([f"{DEMO_TITLE}: generated cartoon faces with random labels, not a face dataset."]
                     if demo else []) + disagreements(runs),
        "dataset": {"name": name, "root": store.dataset_info["root"], "store": str(store_path),
                    "n_rows": store.n_rows, "male": int(store.gender.sum()),
                    "splits": {s: int((store.split == i).sum()) for i, s in enumerate(SPLITS)}},
        "extraction": extraction_rows(store), "leaderboard": leaderboard(runs),
        "chosen": "\n".join(filter(None, [recommendation_text(runs).strip(), errors and doubt_note(errors)])),
        "groups": {f"{best['run']}: {label}": scores["groups"] for label, scores in sets},
        "calibration": {f"{best['run']}: {label}": calibration_entry(best, scores) for label, scores in sets},
        "errors": None if errors is None else errors["errors"],
        "rejected": None if errors is None else errors["rejected"]}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--results", required=True, help="a `classify train` output folder")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--demo", action="store_true", help="mark the report as made on generated demo data")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        sections = collect(args.store, args.results, demo=args.demo)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {write_html(args.out, **sections)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
