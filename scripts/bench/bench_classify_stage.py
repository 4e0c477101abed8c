"""Benchmark the main job's classify stage at full CelebA size: wall time and peak RSS, before and after.

Generates (once, seeded, in a child process) a feature store shaped like full CelebA (162,770 train /
19,867 val / 19,962 test rows) with the main job's six backbones at their registered dims
(efficientnet_lite0 1280, sface 128, sface_map 1024, dlib_resnet 128, dlib_age 256, dlib_gender 16),
each a different random ReLU mixing of one latent, with `scripts/bench/bench_classify.py`'s dataset (gender
a noisy function of the latent) and CelebA's ``Young`` attribute tied to gender as in CelebA. Then runs
what ``scripts/main.sh`` runs on it: ``python -m classify train`` with both heads on each backbone and
on their 2,832-d concatenation, ``--balance-by Young``. Each ``classify train`` is a child process;
its wall time and peak RSS (``wait4``'s ``ru_maxrss``, that child only) are measured, with the load
average of the machine before and after (it may be shared).

``--compare-ref DIR`` also runs the same command with DIR (a checkout of another version, e.g. main)
on ``PYTHONPATH``, reports before/after ratios, and checks that both wrote the same numbers
(`same_results`).

    python scripts/bench/bench_classify_stage.py                           # generate once, run the stage
    python scripts/bench/bench_classify_stage.py --compare-ref /tmp/main   # and main's code: ratios
    python scripts/bench/bench_classify_stage.py --rows 20000              # rows split as CelebA's
    python scripts/bench/bench_classify_stage.py --store S --backbones synthetic2048  # a store of
        # scripts/bench/bench_classify.py: its one 2,048-d backbone (no Young: trained without balancing)
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path[:0] = [str(ROOT), str(HERE)]  # the project, and bench_classify beside this script

from bench_classify import add_backbone, generate_in_child, make_dataset, split_sizes  # noqa: E402
from same_results import main as same_results  # noqa: E402

from extract.catalog import BUILTIN  # noqa: E402
from features.store import FeatureStore, Status  # noqa: E402

log = logging.getLogger("bench_classify_stage")
MAIN_JOB = ("efficientnet_lite0", "sface", "sface_map", "dlib_resnet", "dlib_age", "dlib_gender")  # main.sh
YOUNG = "Young"
YOUNG_SHARE = (0.87, 0.64)  # of CelebA's women, of its men (classify/balance.py)


def main_job_dims() -> dict[str, int]:
    """The main job's backbones and their output dims, from the backbone catalog."""
    return {name: BUILTIN[name].dim for name in MAIN_JOB}


def generate_store(path: str, sizes: tuple[int, int, int], dims: dict[str, int], seed: int) -> None:
    """Write the store backbone by backbone, unit by unit (never a whole matrix in memory)."""
    dataset, latent = make_dataset(sizes, seed=seed)
    rng = np.random.default_rng(seed + 2)
    share = np.where(dataset.gender == 1, YOUNG_SHARE[1], YOUNG_SHARE[0])
    dataset.attributes[YOUNG] = (rng.random(len(share)) < share).astype(np.int8)
    store = FeatureStore.create(path, dataset)
    for number, (name, dim) in enumerate(dims.items()):
        add_backbone(store, name, dim, latent, np.random.default_rng(seed + 10 + number), seed)
        log.info("generated %s (%d-d)", name, dim)


def ensure_store(path: Path, sizes: tuple[int, int, int], dims: dict[str, int], seed: int) -> FeatureStore:
    """The store at ``path``, generated in a child process when absent (its memory is not ours)."""
    if not path.exists():
        generate_in_child(generate_store, path, sizes, dims, seed)
    return FeatureStore.open(path)


def train_rows(store: FeatureStore, backbones: list[str]) -> int:
    """Train rows valid in every one of ``backbones`` (the rows of that run's train matrix)."""
    valid = store.split == 0
    for name in backbones:
        valid &= store.status(name) == Status.OK
    return int(valid.sum())


def measure(code: Path, command: list[str], log_path: Path) -> dict:
    """Run ``command`` with ``code`` first on PYTHONPATH: wall time, its own peak RSS, load around it."""
    env = {**os.environ, "PYTHONPATH": str(code)}
    load_before = os.getloadavg()
    started = time.perf_counter()
    with log_path.open("w") as output:
        child = subprocess.Popen(command, env=env, stdout=output, stderr=subprocess.STDOUT, cwd=tempfile.gettempdir())
        _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    return {"code": str(code), "exit": child.returncode, "wall_s": round(time.perf_counter() - started, 1),
            "peak_rss_gb": round(usage.ru_maxrss * 1024 / 1e9, 3), "cpu_s": round(usage.ru_utime + usage.ru_stime, 1),
            "load_before": [round(v, 2) for v in load_before],
            "load_after": [round(v, 2) for v in os.getloadavg()], "log": str(log_path)}


def bench(store: FeatureStore, specs: list[str], *, heads: list[str], out: Path, refs: dict[str, Path]) -> dict:
    """One ``classify train`` of the stage per code version in ``refs`` ("after" first), and ratios."""
    balance = ["--balance-by", YOUNG] if YOUNG in store.attributes else []
    largest = max(specs, key=lambda spec: sum(store.backbone_info(n)["dim"] for n in spec.split("+")))
    names = largest.split("+")
    matrix_gb = train_rows(store, names) * sum(store.backbone_info(n)["dim"] for n in names) * 4 / 1e9
    report = {"store": store.path, "rows": store.n_rows, "specs": specs, "heads": heads, "balance": balance,
              "largest_train_matrix": {"spec": largest, "gb": round(matrix_gb, 3)}, "cpus": os.cpu_count(), "runs": {}}
    for label, code in refs.items():
        results = out / label
        command = [sys.executable, "-m", "classify", "train", "--store", store.path, "--backbones", *specs,
                   "--heads", *heads, "--out", str(results), *balance]
        log.info("%s: %s", label, " ".join(command))
        run = measure(code, command, out / f"{label}.log")
        run["peak_over_train_matrix"] = round(run["peak_rss_gb"] / matrix_gb, 2)
        report["runs"][label] = run
        log.info("%s: %s", label, run)
        if run["exit"] != 0:
            raise SystemExit(f"{label} failed (exit {run['exit']}); see {run['log']}")
    if "before" in report["runs"]:
        after, before = report["runs"]["after"], report["runs"]["before"]
        report["after_over_before"] = {key: round(after[key] / before[key], 2)
                                       for key in ("wall_s", "cpu_s", "peak_rss_gb")}
        report["same_numbers"] = same_results([str(out / "before"), str(out / "after")]) == 0
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=None, help="total rows (default: CelebA's 202,599)")
    parser.add_argument("--store", type=Path, help="store to (re)use; default /tmp/bench_stage_<rows>_seed<seed>.zarr")
    parser.add_argument("--backbones", nargs="+", metavar="SPEC",
                        help="runs (default: the six backbones and their concatenation, as main.sh)")
    parser.add_argument("--heads", nargs="+", default=["logreg", "mlp"])
    parser.add_argument("--compare-ref", type=Path, metavar="DIR", help="also run this checkout's code (before)")
    parser.add_argument("--out", type=Path, help="results folders and logs (default: a new temporary folder)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the report here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s", datefmt="%H:%M:%S")
    sizes, dims = split_sizes(args.rows), main_job_dims()
    path = args.store or Path(f"/tmp/bench_stage_{sum(sizes)}_seed{args.seed}.zarr")
    store = ensure_store(path, sizes, dims, args.seed)
    specs = args.backbones or [*dims, "+".join(dims)]
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_stage_"))
    out.mkdir(parents=True, exist_ok=True)
    refs = {"after": ROOT, **({"before": args.compare_ref.resolve()} if args.compare_ref else {})}
    report = bench(store, specs, heads=args.heads, out=out, refs=refs)
    text = json.dumps(report, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
