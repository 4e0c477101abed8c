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
from pathlib import Path

import numpy as np

from bench_classify import CELEBA_SPLIT, make_dataset, split_sizes  # a sibling script
from bench_labels import best_time  # a sibling script
from features.dataset import Dataset
from features.store import FeatureStore, Status
from tests.fixtures import fill_units  # importable: bench_classify put the repository root on sys.path



def bench_dtype(folder: Path, table: Dataset, *, dim: int, dtype: str, repeats: int, seed: int) -> None:
    """One table row: a store of ``dtype`` read against np.load of the same split."""
    store = FeatureStore.create(folder / f"{dtype}.zarr", table)
    writer = store.add_backbone("generated", dim=dim, dtype=dtype, metadata={"weights": "random"})
    rng = np.random.default_rng(seed)
    fill_units(writer, lambda start, stop: (rng.standard_normal((stop - start, dim), dtype=np.float32),
                                            np.full(stop - start, Status.OK, np.uint8)))
    store_s, feats = best_time(lambda: store.read("generated", "train"), repeats)
    npy = folder / f"{dtype}.npy"
    np.save(npy, feats.x.astype(dtype))
    n_rows, gigabytes = feats.x.shape[0], feats.x.nbytes / 1e9
    del feats
    npy_s = best_time(lambda: np.load(npy), repeats)[0]
    npy.unlink()
    print(f"| {dtype} | {n_rows} | {store_s:.2f} | {npy_s:.2f} | {gigabytes / store_s:.2f} | {store_s / npy_s:.2f} |",
          flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=sum(CELEBA_SPLIT))
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--dir", help="scratch folder (default: a temporary one)")
    args = parser.parse_args(argv)
    table, _ = make_dataset(split_sizes(args.rows), seed=args.seed)  # CelebA's split proportions
    print(f"# store read benchmark: {args.rows} rows x {args.dim} dims, train split, best of {args.repeats}; "
          f"{platform.processor() or platform.machine()}, numpy {np.__version__}")
    print("| store dtype | train rows | store.read s | np.load s | GB/s (store, as float32) | store / np.load |")
    print("|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory(dir=args.dir) as scratch:
        for dtype in ("float32", "float16"):
            bench_dtype(Path(scratch), table, dim=args.dim, dtype=dtype, repeats=args.repeats, seed=args.seed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
