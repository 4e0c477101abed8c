"""Benchmark the classify stage at CelebA size: time per head and peak memory.

Generates (once, seeded) a feature store shaped like CelebA's official split with one 2,048-d backbone
(162,770 train / 19,867 val / 19,962 test rows by default), reads it back through `FeatureStore.read`
and runs every default head through `classify.protocol.run`, the code path of ``python -m classify
train``. The store is generated in a child process so that this process's peak RSS measures the
classify stage only.

The problem is realistic rather than trivially separable: features are ReLU mixtures of a 96-d latent
(non-negative, correlated, like pooled CNN features), gender is a noisy linear function of the latent
(2% of labels flipped, in the range of CelebA's annotation error), and part of the signal is in a feature
interaction that a linear head cannot use.

    python scripts/bench/bench_classify.py                 # full size
    python scripts/bench/bench_classify.py --rows 20000    # total rows, split in CelebA's proportions
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import resource
import sys
import time
from pathlib import Path

import numpy as np

from classify.heads import head_names
from classify.protocol import RunConfig, read_training, run
from extract.demo import fill_units, split_codes, synthetic_table
from features.dataset import Dataset
from features.store import FeatureStore, Status, StoreError

log = logging.getLogger("bench_classify")
CELEBA_SPLIT = (162_770, 19_867, 19_962)
BACKBONE = "synthetic2048"
LATENT = 96
UNIT_ROWS = 4096


def split_sizes(rows: int | None) -> tuple[int, int, int]:
    """CelebA's split sizes, or ``rows`` divided in the same proportions."""
    if rows is None:
        return CELEBA_SPLIT
    total = sum(CELEBA_SPLIT)
    val, test = round(rows * CELEBA_SPLIT[1] / total), round(rows * CELEBA_SPLIT[2] / total)
    return rows - val - test, val, test


def make_dataset(sizes: tuple[int, int, int], *, seed: int) -> tuple[Dataset, np.ndarray]:
    """The dataset table (gender drawn from the latent) and the latent itself."""
    rng = np.random.default_rng(seed)
    n = sum(sizes)
    latent = rng.standard_normal((n, LATENT)).astype(np.float32)
    signal = latent[:, 0] + 0.15 * latent[:, 1] * latent[:, 2] + 0.12 * rng.standard_normal(n)
    gender = (signal > 0.15).astype(np.int8)  # ~42% male, as in CelebA
    flip = rng.random(n) < 0.02
    gender[flip] = 1 - gender[flip]
    dataset = synthetic_table(n, name="bench-synthetic", root="/dev/null", ids=[f"{i + 1:06d}.jpg" for i in range(n)],
                              gender=gender, split=split_codes(sizes), split_seed=seed,
                              attributes={"smiling": rng.integers(0, 2, n).astype(np.int8)})
    return dataset, latent


def add_backbone(store: FeatureStore, name: str, dim: int, latent: np.ndarray, rng: np.random.Generator,
                 seed: int) -> None:
    """One backbone: a random ReLU mixing of the latent plus noise, a few faces not found; written unit by
    unit (never the whole matrix in memory)."""
    mixing = (rng.standard_normal((LATENT, dim)) / np.sqrt(LATENT)).astype(np.float32)
    offset = rng.uniform(-0.5, 0.5, dim).astype(np.float32)
    writer = store.add_backbone(name, dim=dim, unit_rows=UNIT_ROWS,
                                metadata={"weights": "random", "weights_source": f"bench seed {seed}"})

    def rows(start: int, stop: int) -> tuple[np.ndarray, np.ndarray]:
        noise = rng.standard_normal((stop - start, dim), dtype=np.float32)
        status = np.ones(stop - start, dtype=np.uint8)
        status[rng.random(stop - start) < 0.002] = Status.NO_FACE
        return np.maximum(latent[start:stop] @ mixing + offset + 0.7 * noise, 0.0), status

    fill_units(writer, rows)


def generate_store(path: str, sizes: tuple[int, int, int], dim: int, seed: int) -> None:
    dataset, latent = make_dataset(sizes, seed=seed)
    add_backbone(FeatureStore.create(path, dataset), BACKBONE, dim, latent, np.random.default_rng(seed + 1), seed)


def generate_in_child(target, path: Path, *args) -> None:
    """``target(str(path), *args)`` in a spawned child process, so that its memory is not ours."""
    started = time.perf_counter()
    child = multiprocessing.get_context("spawn").Process(target=target, args=(str(path), *args))
    child.start()
    child.join()
    if child.exitcode != 0:
        raise SystemExit(f"generating {path} failed (exit {child.exitcode})")
    log.info("generated %s in %.0f s", path, time.perf_counter() - started)


def ensure_store(path: Path, sizes: tuple[int, int, int], dim: int, seed: int) -> FeatureStore:
    """Open the store at ``path`` if it has the requested shape, else generate it."""
    try:
        store = FeatureStore.open(path)
        if store.n_rows == sum(sizes) and store.backbone_info(BACKBONE)["dim"] == dim:
            return store
        raise StoreError(f"{path} holds another benchmark shape; delete it or pass another --store")
    except StoreError as error:
        if path.exists():
            raise error
    generate_in_child(generate_store, path, sizes, dim, seed)
    return FeatureStore.open(path)


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


def bench(store: FeatureStore, heads: list[str], *, seed: int) -> dict:
    """Read the splits, run each head; timings, accuracy and peak RSS after each phase."""
    baseline = peak_rss_bytes()
    started = time.perf_counter()
    data = read_training([store], (BACKBONE,))
    splits = data.splits
    report = {"read_s": round(time.perf_counter() - started, 1), "rss_before_read_gb": baseline / 1e9,
              "rows": {s: int(len(d.gender)) for s, d in splits.items()},
              "invalid": {s: d.n_invalid for s, d in splits.items()},
              "train_matrix_gb": splits["train"].x.nbytes / 1e9,
              "all_splits_gb": sum(d.x.nbytes for d in splits.values()) / 1e9,
              "peak_rss_after_read_gb": peak_rss_bytes() / 1e9, "heads": {}}
    for name in heads:
        config = RunConfig(stores=(store.path,), backbones=(BACKBONE,), head=name, seed=seed, treatments=("none",))
        head, results = run(config, data)
        test = results["metrics"]["test"]
        report["heads"][name] = {**results["timings"], "test_accuracy": round(test["accuracy"], 4),
                                 "test_accuracy_ci95": [round(v, 4) for v in test["ci95"]["accuracy"]],
                                 "roc_auc": round(test["roc_auc"], 4), "selection": _short(results["selection"]),
                                 "peak_rss_gb": peak_rss_bytes() / 1e9}
        log.info("%s: %s", name, report["heads"][name])
    report["peak_rss_gb"] = peak_rss_bytes() / 1e9
    report["peak_over_train_matrix"] = round(report["peak_rss_gb"] / report["train_matrix_gb"], 2)
    report["peak_over_all_splits"] = round(report["peak_rss_gb"] / report["all_splits_gb"], 2)
    return report


def _short(selection: dict) -> dict:
    return {key: value for key, value in selection.items() if key not in ("grid", "path")}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="total rows (default: CelebA's 202,599)")
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--heads", nargs="+", default=head_names())
    parser.add_argument("--store", type=Path, default=None,
                        help="store to (re)use; default /tmp/bench_classify_<rows>x<dim>.zarr")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    sizes = split_sizes(args.rows)
    path = args.store or Path(f"/tmp/bench_classify_{sum(sizes)}x{args.dim}_seed{args.seed}.zarr")
    try:
        store = ensure_store(path, sizes, args.dim, args.seed)
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report = bench(store, args.heads, seed=args.seed)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
