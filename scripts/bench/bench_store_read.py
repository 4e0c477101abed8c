"""Benchmark: load one split of a full-CelebA-size backbone from the feature store into numpy.

Baseline, measured in the same run on the same array: `np.load` of the split saved as a .npy file.
Each timing is the best of --repeats reads (the OS page cache is warm after the first; both get the
same treatment). Prints seconds, GB/s and the store/np.load ratio for float32 and float16 stores.

    .venv/bin/python scripts/bench/bench_store_read.py [--rows 202599] [--dim 2048]
"""
from __future__ import annotations

import argparse
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

from bench_classify import CELEBA_SPLIT, split_sizes  # a sibling script
from extract.demo import fill_units, split_codes, synthetic_table
from features.dataset import Dataset
from features.store import FeatureStore, Status


def celeba_sized_table(rows: int, *, seed: int) -> Dataset:
    """A generated table with CelebA's split proportions (train rows first, as in CelebA)."""
    sizes = split_sizes(rows)
    rng = np.random.default_rng(seed)
    return synthetic_table(rows, name="generated", root="generated", ids=[f"{i + 1:06d}.jpg" for i in range(rows)],
                           gender=rng.integers(0, 2, rows), split=split_codes(sizes))


def fill_backbone(store: FeatureStore, *, dim: int, dtype: str, seed: int) -> None:
    writer = store.add_backbone("generated", dim=dim, dtype=dtype, metadata={"weights": "random"})
    rng = np.random.default_rng(seed)
    fill_units(writer, lambda start, stop: (rng.standard_normal((stop - start, dim), dtype=np.float32),
                                            np.full(stop - start, Status.OK, np.uint8)))


def best_time(function, repeats: int) -> tuple[float, object]:
    best, result = float("inf"), None
    for _ in range(repeats):
        result = None  # drop the previous result first: never hold two copies
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def bench_dtype(folder: Path, table: Dataset, *, dim: int, dtype: str, repeats: int, seed: int) -> dict:
    store = FeatureStore.create(folder / f"{dtype}.zarr", table)
    fill_backbone(store, dim=dim, dtype=dtype, seed=seed)
    store_s, feats = best_time(lambda: store.read("generated", "train"), repeats)
    npy = folder / f"{dtype}.npy"
    np.save(npy, feats.x.astype(dtype))
    n_rows, gigabytes = feats.x.shape[0], feats.x.nbytes / 1e9
    del feats
    npy_s, array = best_time(lambda: np.load(npy), repeats)
    del array
    npy.unlink()
    return {"dtype": dtype, "rows": n_rows, "store_s": store_s, "npy_s": npy_s, "gb_float32": gigabytes}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=sum(CELEBA_SPLIT))
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    table = celeba_sized_table(args.rows, seed=args.seed)
    print(f"# store read benchmark: {args.rows} rows x {args.dim} dims, train split, best of {args.repeats}; "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    print("| store dtype | train rows | store.read s | np.load s | GB/s (store, as float32) | store / np.load |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for dtype in ("float32", "float16"):
            row = bench_dtype(Path(scratch), table, dim=args.dim, dtype=dtype, repeats=args.repeats,
                              seed=args.seed)
            print(f"| {dtype} | {row['rows']} | {row['store_s']:.2f} | {row['npy_s']:.2f} | "
                  f"{row['gb_float32'] / row['store_s']:.2f} | {row['store_s'] / row['npy_s']:.2f} |",
                  flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
