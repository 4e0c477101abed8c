"""Study: how does every run of a results directory do in domain and across datasets? One Markdown table.

In val-ranking order: in-domain val and test (all test rows, unusable images counted as errors), then
for each ``--all-rows`` store (datasets the heads never saw) the accuracy over all its rows and the
per-sex recalls, on the faces aged >= 15 when the store records ages. Photos a head was trained or
chosen on are left out and counted (`classify.protocol.seen_ids`). The recommended run is marked.

    .venv/bin/python scripts/studies/transfer_table.py --results runs/celeba/heads \\
        --all-rows runs/celeba/utkface.zarr --all-rows runs/celeba_wild.zarr
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from classify.compare import accuracy_all_test, rank_key, recommend, treatment_cell
from classify.evaluate import evaluate_head
from classify.results import load_results
from features.store import FeatureStore


def transfer_cells(head: Path, store: str) -> str:
    """'accuracy / male recall / female recall' of a head over all rows of a store (adults if aged)."""
    report = evaluate_head(head, store, n_resamples=10, all_rows=True)["report"]
    seen = f" ({report['seen_in_training']} seen in training, left out)" if report.get("seen_in_training") else ""
    rows, accuracy = (report["adults"], "accuracy") if "adults" in report else (report, "accuracy_all")
    return f"{rows[accuracy]:.4f} / {rows['recall']:.3f} / {rows['female_recall']:.3f}{seen}"


def column_title(store: str) -> str:
    opened = FeatureStore.open(store)
    rows = f"all {opened.n_rows:,}" + (", aged >= 15" if "age" in opened.attributes else "")
    return f"{opened.dataset_name} ({Path(store).name}) {rows}: acc / male / female recall"


def table(results: Path, stores: list[str]) -> str:
    runs = sorted(load_results(results), key=rank_key)
    chosen = recommend(runs).run
    header = ["backbones", "head", "treatment", "val", "test, all rows", *map(column_title, stores)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for run in runs:
        cells = ["+".join(run.backbones), run.head + (" (recommended)" if run.run == chosen else ""),
                 treatment_cell(run), f"{run.val.accuracy:.4f}", f"{accuracy_all_test(run):.4f}"]
        cells += [transfer_cells(results / f"{run.run}.npz", store) for store in stores]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", required=True, type=Path, help="a results directory written by train")
    parser.add_argument("--all-rows", action="append", default=[], metavar="STORE",
                        help="a store of a dataset the heads never saw; repeatable")
    args = parser.parse_args()
    print(table(args.results, args.all_rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
