"""Seconds to parse CelebA's label files: a generated full-size list_attr_celeba.txt (202,599 x 40), and
the real full label files under ../shared/data/celeba_labels_full when present. Prints one line each.

    .venv/bin/python scripts/bench/bench_labels.py [--repeats 3]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from features.datasets.celeba import read_attribute_file, read_identity_file, read_partition_file

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.fixtures
from tests.fixtures import write_full_size_attribute_file  # noqa: E402


def best_time(function, repeats: int) -> tuple[float, object]:
    """Seconds of the fastest of ``repeats`` calls (the least disturbed by other work), and a result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        result = None  # drop the previous result first: never hold two copies
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


FULL = Path(__file__).resolve().parents[3] / "shared" / "data" / "celeba_labels_full"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as scratch:
        path, _ = write_full_size_attribute_file(Path(scratch) / "list_attr_celeba.txt")
        seconds, _ = best_time(partial(read_attribute_file, path), args.repeats)
        print(f"generated list_attr_celeba.txt (202,599 x 40): {seconds:.3f} s")
    real = (("list_eval_partition.txt", read_partition_file, {}),
            ("identity_CelebA.txt", read_identity_file, {}),
            ("list_attr_celeba_rows000001-020000.txt", read_attribute_file, {"check_count": False}))
    for name, reader, options in real:
        if (FULL / name).is_file():
            seconds, _ = best_time(partial(reader, FULL / name, **options), args.repeats)
            print(f"{name}: {seconds:.3f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
