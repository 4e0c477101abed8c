"""Write the main job's Markdown report: dataset, extraction per backbone, leaderboard, plots.

Reads the feature store and a `python -m classify train` results folder (whose compare step already
wrote leaderboard.md and the PNG plots); imports neither torch nor extract.

    .venv/bin/python scripts/write_report.py --store S.zarr --results DIR --out report.md [--demo]
"""
from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from classify.compare import DEMO_MARKER, best_run, fmt
from classify.results import library_versions, load_runs
from features.dataset import SPLITS
from features.store import FeatureStore, Status

PLOTS = (("Accuracy on all test images with 95% bootstrap intervals, in val-ranking order", "accuracy.png"),
         ("ROC curves (test)", "roc.png"),
         ("Confusion matrices (test)", "confusion_matrices.png"))
DEMO_WARNING = ("> **DEMO DATA: THESE NUMBERS MEAN NOTHING.** No CelebA was found, so the job ran on generated "
                "cartoon faces with random labels. Set `CELEBA_ROOT` to a CelebA folder for real results.\n")


def dataset_section(store: FeatureStore) -> list[str]:
    split, gender = store.split, store.gender
    counts = ", ".join(f"{name} {int((split == code).sum()):,}" for code, name in enumerate(SPLITS))
    return ["## Dataset", "",
            f"`{store.dataset_name}` at `{store.dataset_info['root']}`: {store.n_rows:,} images ({counts}); "
            f"{int(gender.sum()):,} male ({gender.mean():.1%}). Store: `{store.path}`.", ""]


def extraction_section(store: FeatureStore) -> list[str]:
    lines = ["## Extraction", "", "| backbone | dim | weights | valid | unreadable | no face | complete |",
             "|---|---|---|---|---|---|---|"]
    for name in store.backbones():
        info = store.backbone_info(name)
        counts = np.bincount(store.status(name), minlength=len(Status))
        weights = info["metadata"]["weights"]
        lines.append(f"| {name} | {info['dim']} | {weights[:19]}{'...' if len(weights) > 19 else ''} | "
                     f"{counts[Status.OK]:,} | {counts[Status.UNREADABLE]:,} | {counts[Status.NO_FACE]:,} | "
                     f"{info['units_done']}/{info['n_units']} units |")
    return lines + [""]


def cross_dataset_lines(run: dict) -> list[str]:
    """The recommended run's numbers on each eval store (trained on one dataset, applied to another)."""
    lines = []
    for label, cross in run.get("cross_dataset", {}).items():
        report = cross["report"]
        low, high = report["ci95"]["accuracy"]
        line = (f"- **{run['store']['dataset']} -> {label}** ({cross['rows']} rows of `{cross['path']}`): accuracy "
                f"{fmt(report['accuracy'])} (95% CI {fmt(low)}-{fmt(high)}) on {report['n']:,} faces, "
                f"{fmt(report['accuracy_all'])} counting {sum(report['invalid'].values())} invalid rows as errors; "
                f"male recall {fmt(report['recall'])}, female recall {fmt(report['female_recall'])}")
        if "adults" in report:
            adults = report["adults"]
            line += (f"; aged >= {adults['min_age']}: {fmt(adults['accuracy'])} on {adults['n']:,} faces (male "
                     f"recall {fmt(adults['recall'])}, female {fmt(adults['female_recall'])})")
        lines.append(line + ".")
    return ["### Cross-dataset (the recommended head on other datasets)", "", *lines, ""] if lines else []


def results_section(results: Path, report_dir: Path) -> list[str]:
    runs = load_runs(results)
    best = best_run(runs)
    test = best["metrics"]["test"]
    low, high = test["ci95"]["accuracy"]
    lines = ["## Leaderboard (ranked on val, where every choice is made; test reported)", "",
             "Recommended (val, near-ties broken as the leaderboard says): "
             f"**{'+'.join(best['config']['backbones'])} + {best['config']['head']}** (val "
             f"accuracy {fmt(best['metrics']['val']['accuracy'])}): test accuracy **{fmt(test['accuracy'])}** "
             f"(95% bootstrap CI {fmt(low)}-{fmt(high)}), F1 (male) {fmt(test['f1'])}, ROC-AUC "
             f"{fmt(test['roc_auc'])}, on {test['n']:,} test images. Rows invalid for a backbone (no face "
             "found) are excluded from its runs and counted in `invalid_test`; `accuracy_all_test` counts them as "
             "errors, to compare runs on the same test images.", "",
             (results / "leaderboard.md").read_text(), "", *cross_dataset_lines(best)]
    for title, name in PLOTS:
        if (results / name).exists():
            lines += [f"### {title}", "", f"![{title}]({os.path.relpath(results / name, report_dir)})", ""]
    return lines


def environment_section() -> list[str]:
    versions = ", ".join(f"{name} {version}" for name, version in sorted(library_versions().items()))
    return ["## Environment", "", f"{versions}; {os.cpu_count()} CPUs. Per-run configs, seeds and timings are "
            "in the results JSON files beside the leaderboard.", ""]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", required=True)
    parser.add_argument("--results", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--demo", action="store_true", help="mark the report as made on generated demo data")
    args = parser.parse_args(argv)
    store = FeatureStore.open(args.store)
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    lines = ["# Gender recognition with frozen backbones: report", "", f"Written {stamp}.", ""]
    lines += [DEMO_WARNING] if args.demo or (args.results / DEMO_MARKER).exists() else []
    lines += dataset_section(store) + extraction_section(store)
    lines += results_section(args.results, args.out.resolve().parent) + environment_section()
    args.out.write_text("\n".join(lines))
    print(f"wrote {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
