"""Benchmark the classify stage at CelebA size: time per head and peak memory, or the main job's stage.

Generates once (seeded, in a child process so that its memory is not measured) a store shaped like CelebA's
split (162,770 / 19,867 / 19,962 rows; ``--rows N`` splits N alike). Features are ReLU mixtures of a 96-d
latent; gender is a noisy function of it (2% flipped, like CelebA's annotation error) with part of the
signal in an interaction a linear head cannot use.

Default: one 2,048-d backbone; every head runs through `classify.protocol.run` in this process, whose
peak RSS is then the classify stage's only.

``--stage``: the main job's six backbones at their registered dims, each its own mixing of the latent, with
``Young`` tied to gender as in CelebA; runs ``python -m classify train`` as ``scripts/main.sh`` does (both
heads, each backbone and their concatenation, ``--balance-by Young``) as a child process: wall time, peak
RSS (``wait4``), load average around it. ``--compare-ref DIR`` also runs it with DIR (another checkout) on
``PYTHONPATH``: before/after ratios, and whether both wrote the same numbers (`same_results`).

    python scripts/bench/bench_classify.py                          # full size
    python scripts/bench/bench_classify.py --rows 20000             # total rows, split as CelebA's
    python scripts/bench/bench_classify.py --stage                  # generate once, run the stage
    python scripts/bench/bench_classify.py --stage --compare-ref /tmp/main   # and main's code: ratios
    python scripts/bench/bench_classify.py --stage --store S --backbones synthetic2048  # the default
        # mode's store: its one 2,048-d backbone (no Young: trained without balancing)
"""
from __future__ import annotations

import argparse
import json
import logging
import multiprocessing
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from classify.heads import head_names
from classify.protocol import RunConfig, read_training, run
from extract.catalog import BUILTIN
from features.dataset import Dataset
from features.store import FeatureStore, Status, StoreError
from same_results import main as same_results  # a sibling script

ROOT = Path(__file__).resolve().parents[2]  # the repository root
sys.path.insert(0, str(ROOT))  # for tests.fixtures
from tests.fixtures import fill_units, split_codes, synthetic_table  # noqa: E402

log = logging.getLogger("bench_classify")
CELEBA_SPLIT = (162_770, 19_867, 19_962)
BACKBONE = "synthetic2048"
LATENT = 96
UNIT_ROWS = 4096
MAIN_JOB = ("efficientnet_lite0", "sface", "sface_map", "dlib_resnet", "dlib_age", "dlib_gender")  # main.sh
YOUNG = "Young"
YOUNG_SHARE = (0.87, 0.64)  # of CelebA's women, of its men (classify/balance.py)


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


def generate_store(path: str, sizes: tuple[int, int, int], dims: dict[str, int], seed: int, stage: bool) -> None:
    """The store, backbone by backbone; the stage's also records Young (seeds as each mode always drew them)."""
    dataset, latent = make_dataset(sizes, seed=seed)
    if stage:
        rng = np.random.default_rng(seed + 2)
        share = np.where(dataset.gender == 1, YOUNG_SHARE[1], YOUNG_SHARE[0])
        dataset.attributes[YOUNG] = (rng.random(len(share)) < share).astype(np.int8)
    store = FeatureStore.create(path, dataset)
    for number, (name, dim) in enumerate(dims.items()):
        add_backbone(store, name, dim, latent, np.random.default_rng(seed + 10 + number if stage else seed + 1), seed)
        log.info("generated %s (%d-d)", name, dim)


def ensure_store(path: Path, sizes: tuple[int, int, int], dims: dict[str, int], seed: int, stage: bool) -> FeatureStore:
    """The store at ``path``, generated in a spawned child process when absent (its memory is not ours)."""
    if not path.exists():
        started = time.perf_counter()
        child = multiprocessing.get_context("spawn").Process(target=generate_store,
                                                              args=(str(path), sizes, dims, seed, stage))
        child.start()
        child.join()
        if child.exitcode != 0:
            raise SystemExit(f"generating {path} failed (exit {child.exitcode})")
        log.info("generated %s in %.0f s", path, time.perf_counter() - started)
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
        selection = {key: value for key, value in results["selection"].items() if key not in ("grid", "path")}
        report["heads"][name] = {**results["timings"], "test_accuracy": round(test["accuracy"], 4),
                                 "test_accuracy_ci95": [round(v, 4) for v in test["ci95"]["accuracy"]],
                                 "roc_auc": round(test["roc_auc"], 4), "selection": selection,
                                 "peak_rss_gb": peak_rss_bytes() / 1e9}
        log.info("%s: %s", name, report["heads"][name])
    report["peak_rss_gb"] = peak_rss_bytes() / 1e9
    report["peak_over_train_matrix"] = round(report["peak_rss_gb"] / report["train_matrix_gb"], 2)
    report["peak_over_all_splits"] = round(report["peak_rss_gb"] / report["all_splits_gb"], 2)
    return report


def measure(code: Path, command: list[str], log_path: Path) -> dict:
    """Run ``command`` with ``code`` first on PYTHONPATH: wall time, its own peak RSS, load around it."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    load_before = os.getloadavg()
    started = time.perf_counter()
    with log_path.open("w") as output:
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(child.pid, 0)
    return {"code": str(code), "exit": os.waitstatus_to_exitcode(status),
            "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()], "log": str(log_path)}


def bench_stage(store: FeatureStore, specs: list[str], *, heads: list[str], out: Path, refs: dict[str, Path]) -> dict:
    """One ``classify train`` of the stage per code version in ``refs`` ("after" first), and ratios."""
    balance = ["--balance-by", YOUNG] if YOUNG in store.attributes else []
    width = {spec: sum(store.backbone_info(n)["dim"] for n in spec.split("+")) for spec in specs}
    largest = max(specs, key=width.get)
    valid = store.split == 0  # the train rows valid in every backbone of the largest run: its train matrix
    for name in largest.split("+"):
        valid &= store.status(name) == Status.OK
    matrix_gb = int(valid.sum()) * width[largest] * 4 / 1e9
    report = {"store": store.path, "rows": store.n_rows, "specs": specs, "heads": heads, "balance": balance,
              "largest_train_matrix": {"spec": largest, "gb": round(matrix_gb, 3)}, "cpus": os.cpu_count(), "runs": {}}
    for label, code in refs.items():
        command = [sys.executable, "-m", "classify", "train", "--store", store.path, "--backbones", *specs,
                   "--heads", *heads, "--out", str(out / label), *balance]
        log.info("%s: %s", label, " ".join(command))
        result = measure(code, command, out / f"{label}.log")
        result["peak_over_train_matrix"] = round(result["peak_rss_gb"] / matrix_gb, 2)
        report["runs"][label] = result
        log.info("%s: %s", label, result)
        if result["exit"] != 0:
            raise SystemExit(f"{label} failed (exit {result['exit']}); see {result['log']}")
    if "before" in report["runs"]:
        after, before = report["runs"]["after"], report["runs"]["before"]
        report["after_over_before"] = {key: round(after[key] / before[key], 2)
                                       for key in ("wall_s", "cpu_s", "peak_rss_gb")}
        report["same_numbers"] = same_results([str(out / "before"), str(out / "after")]) == 0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="total rows (default: CelebA's 202,599)")
    parser.add_argument("--stage", action="store_true", help="the main job's classify stage (see above)")
    parser.add_argument("--dim", type=int, default=2048, help="the one backbone's dim (without --stage)")
    parser.add_argument("--heads", nargs="+", default=head_names())
    parser.add_argument("--store", type=Path, default=None, help="store to (re)use; default /tmp/bench_classify_"
                        "<rows>x<dim>_seed<seed>.zarr, with --stage /tmp/bench_stage_<rows>_seed<seed>.zarr")
    parser.add_argument("--backbones", nargs="+", metavar="SPEC",
                        help="--stage runs (default: the six backbones and their concatenation, as main.sh)")
    parser.add_argument("--compare-ref", type=Path, metavar="DIR",
                        help="--stage: also run this checkout's code (before)")
    parser.add_argument("--out", type=Path, help="--stage: results folders and logs (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    sizes = split_sizes(args.rows)
    if args.stage:
        dims = {name: BUILTIN[name].dim for name in MAIN_JOB}
        path = args.store or Path(f"/tmp/bench_stage_{sum(sizes)}_seed{args.seed}.zarr")
    else:
        dims = {BACKBONE: args.dim}
        path = args.store or Path(f"/tmp/bench_classify_{sum(sizes)}x{args.dim}_seed{args.seed}.zarr")
    try:
        store = ensure_store(path, sizes, dims, args.seed, args.stage)
        if not args.stage and (store.n_rows != sum(sizes) or store.backbone_info(BACKBONE)["dim"] != args.dim):
            raise StoreError(f"{path} holds another benchmark shape; delete it or pass another --store")
    except StoreError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    if args.stage:
        out = args.out or Path(tempfile.mkdtemp(prefix="bench_stage_"))
        out.mkdir(parents=True, exist_ok=True)
        refs = {"after": ROOT, **({"before": args.compare_ref.resolve()} if args.compare_ref else {})}
        report = bench_stage(store, args.backbones or [*dims, "+".join(dims)], heads=args.heads, out=out, refs=refs)
    else:
        report = bench(store, args.heads, seed=args.seed)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
