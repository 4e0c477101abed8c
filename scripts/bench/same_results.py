"""Do two results folders of ``python -m classify train`` hold the same numbers, to the last digit?

Compares every run's results JSON (``<run>.json``) of folder A with the same run of folder B exactly
(floats by equality, not closeness), leaving out what differs run to run by design: ``created``,
``timings``, the results folder's paths, and the head file's sha256 (its npz zip records file times).
The head arrays inside the two ``<run>.npz`` are compared bit for bit instead, and so are the
leaderboards (``leaderboard.csv``, without the timing column).

    python scripts/bench/same_results.py RESULTS_A RESULTS_B     # exit 0 identical, 1 different
"""
from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np

VOLATILE = {"created", "timings", "head_file"}  # differ between two runs of the same code and data
VOLATILE_COLUMNS = {"fit_s"}


def differences(a, b, where: str = "") -> list[str]:
    """Every path at which the JSON values ``a`` and ``b`` differ (exact equality; NaN equals NaN)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out = [f"{where}.{key}: only in {'A' if key in a else 'B'}" for key in sorted(set(a) ^ set(b))]
        for key in sorted(set(a) & set(b)):
            out += differences(a[key], b[key], f"{where}.{key}")
        return out
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{where}: {len(a)} vs {len(b)} items"]
        return [d for i, (x, y) in enumerate(zip(a, b)) for d in differences(x, y, f"{where}[{i}]")]
    same = a == b or (isinstance(a, float) and isinstance(b, float) and a != a and b != b)
    return [] if same and type(a) is type(b) else [f"{where}: {a!r} vs {b!r}"]


def run_differences(a: Path, b: Path) -> list[str]:
    """Differences between one run's results JSON and head arrays in two folders."""
    left, right = ({k: v for k, v in json.loads(p.read_text()).items() if k not in VOLATILE} for p in (a, b))
    out = differences(left, right, a.stem)
    head_a, head_b = a.with_suffix(".npz"), b.with_suffix(".npz")
    if head_a.exists() or head_b.exists():
        with np.load(head_a) as x, np.load(head_b) as y:
            for name in sorted(set(x.files) | set(y.files)):
                if name not in x.files or name not in y.files or x[name].tobytes() != y[name].tobytes():
                    out.append(f"{head_a.name}: array {name} differs")
    return out


def leaderboard(folder: Path) -> list[dict]:
    with (folder / "leaderboard.csv").open() as handle:
        return [{k: v for k, v in row.items() if k not in VOLATILE_COLUMNS} for row in csv.DictReader(handle)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args(argv)
    runs = sorted(p.name for p in args.a.glob("*.json") if p.name != "errors.json")
    missing = sorted(set(runs) ^ {p.name for p in args.b.glob("*.json") if p.name != "errors.json"})
    found = [f"{name}: only in one folder" for name in missing]
    for name in sorted(set(runs) - set(missing)):
        found += run_differences(args.a / name, args.b / name)
    if (args.a / "leaderboard.csv").exists() or (args.b / "leaderboard.csv").exists():
        found += [] if leaderboard(args.a) == leaderboard(args.b) else ["leaderboard.csv differs"]
    print("\n".join(found) if found else f"identical: {len(runs)} runs, every number equal")
    return 1 if found else 0


if __name__ == "__main__":
    raise SystemExit(main())
