"""Write the main job's self-contained HTML report (issue 10) beside the Markdown one.

Reads a feature store and a `python -m classify train` results folder of the current format (results
JSON + sha256-checked head), recomputes the chosen run's val/test probabilities from the store, and
renders dataset, extraction, leaderboard, per-group metrics, calibration and the error gallery with
`classify.html_report.write_html`. Attributes and image paths come from re-reading the dataset (so a store
written before the reader gained an attribute file still gets its groups). Imports neither torch nor extract.

    .venv/bin/python scripts/write_html_report.py --store S.zarr --results DIR --out report.html \
        [--threshold 0.5|balanced|VALUE] [--no-calibration] [--json analysis.json]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from classify.calibration import CalibrationError, Calibrator, parse_threshold  # noqa: E402
from classify.compare import best_run, leaderboard  # noqa: E402
from classify.html_report import write_html  # noqa: E402
from classify.protocol import read_splits  # noqa: E402
from classify.results import HeadFileError, load_head, load_runs  # noqa: E402
from classify.run_analysis import analyse_predictions, error_rows  # noqa: E402
from features.dataset import SPLITS, DatasetError  # noqa: E402
from features.datasets import load_dataset  # noqa: E402
from features.store import FeatureStore, Status, StoreError  # noqa: E402

EXPECTED_ERRORS = (StoreError, HeadFileError, DatasetError, CalibrationError, FileNotFoundError)


def extraction_rows(store: FeatureStore) -> list[dict]:
    rows = []
    for name in store.backbones():
        counts = np.bincount(store.status(name), minlength=len(Status))
        rows.append({"backbone": name, "dim": store.backbone_info(name)["dim"], "valid": int(counts[Status.OK]),
                     "unreadable": int(counts[Status.UNREADABLE]), "no face": int(counts[Status.NO_FACE])})
    return rows


def rejected_rows(store: FeatureStore, backbones, paths: np.ndarray, split: str) -> list[dict]:
    """Rows of `split` that any of the run's backbones could not use, with the reason."""
    in_split = store.split == SPLITS.index(split)
    rows = []
    for name in backbones:
        status = store.status(name)
        for i in np.flatnonzero(in_split & (status != Status.OK)):
            rows.append({"id": str(store.ids[i]), "path": str(paths[i]),
                         "reason": f"{Status(int(status[i])).name.lower().replace('_', ' ')} ({name})"})
    return rows


def store_rows_in(dataset, store: FeatureStore) -> np.ndarray:
    """Row of the dataset for each store row (a store made with --limit holds some of the rows), checked."""
    position = {image: row for row, image in enumerate(dataset.ids)}
    rows = np.array([position.get(image, -1) for image in store.ids], dtype=np.int64)
    if np.any(rows < 0) or not (np.array_equal(dataset.gender[rows], store.gender)
                                and np.array_equal(dataset.split[rows], store.split)):
        raise StoreError(f"the dataset at {store.dataset_info['root']} is not the one in {store.path} "
                         "(images, labels or split differ)")
    return rows


def collect(store_path, results_dir, *, threshold="0.5", calibrate=True, seed=0) -> tuple[dict, dict]:
    """(sections for `write_html`, the JSON-ready analysis) for the run chosen on val."""
    store = FeatureStore.open(store_path)
    dataset = load_dataset(store.dataset_name, store.dataset_info["root"],
                           seed=store.dataset_info.get("split_seed") or 0)
    rows = store_rows_in(dataset, store)
    runs = load_runs(Path(results_dir))
    if not runs:
        raise FileNotFoundError(f"no results files in {results_dir}")
    best = best_run(runs)
    head, _ = load_head(Path(results_dir) / f"{best['run']}.joblib")
    backbones = tuple(best["config"]["backbones"])
    splits = read_splits(store, backbones)
    val, test = splits["val"], splits["test"]
    p_val, p_test = (head.predict_proba(s.x)[:, 1] for s in (val, test))
    test_attributes = {k: np.asarray(v)[rows][test.index] for k, v in dataset.attributes.items()}
    analysis = analyse_predictions(val.gender, p_val, test.gender, p_test, test_attributes,
                                   calibrate=calibrate, threshold=threshold, seed=seed)
    q_test = Calibrator.from_json(analysis["calibrator"]).apply(p_test)
    label = f"{best['run']}, {store.dataset_name} test"
    sections = {
        "title": f"facegender report: {store.dataset_name}",
        "dataset": {"name": store.dataset_name, "root": store.dataset_info["root"], "store": str(store_path),
                    "n_rows": store.n_rows, "male": int(store.gender.sum()),
                    "splits": {s: int((store.split == i).sum()) for i, s in enumerate(SPLITS)}},
        "extraction": extraction_rows(store), "leaderboard": leaderboard(runs), "chosen": best["run"],
        "groups": {f"{label}: raw, threshold 0.5": analysis["groups"]["before"],
                   f"{label}: calibrated, threshold {analysis['threshold']['rule']}": analysis["groups"]["after"]},
        "calibration": {label: {"before": analysis["calibration"]["before"], "after": analysis["calibration"]["after"],
                                "calibrator": analysis["calibrator"], "threshold": analysis["threshold"],
                                "recalls": analysis["recalls"]}},
        "errors": error_rows(store.ids[test.index], dataset.paths[rows][test.index], test.gender, q_test,
                             threshold=analysis["threshold"]["value"], attributes=test_attributes),
        "rejected": rejected_rows(store, backbones, dataset.paths[rows], "test")}
    return sections, {"run": best["run"], **analysis}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--results", required=True, help="a `classify train` output folder")
    parser.add_argument("--out", required=True, help="the HTML file to write")
    parser.add_argument("--threshold", default="0.5", help="0.5 (default), 'balanced' (chosen on val), or a value")
    parser.add_argument("--no-calibration", action="store_true", help="keep the head's raw probabilities")
    parser.add_argument("--json", help="also write the analysis (calibrator, threshold, groups) as JSON")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        threshold = parse_threshold(args.threshold)
        sections, analysis = collect(args.store, args.results, threshold=threshold,
                                     calibrate=not args.no_calibration, seed=args.seed)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(f"wrote {write_html(args.out, **sections)}", file=sys.stderr)
    if args.json:
        Path(args.json).write_text(json.dumps(analysis, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
