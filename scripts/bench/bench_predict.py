"""Predict speed against extract speed on the same images and backbones, in one run.

On a CelebA folder of N shared aligned images (symlinks, real labels), back to back and --repeat times:
``python -m extract`` into a fresh store, as a user runs it (wall time; and its loops alone, the sum of its
passes' "N rows ... S s" summary lines), and `GenderModel.predict_images` with a head trained on the first
store over all the backbones at once (wall time; and without model loading, the time spent in
`extract.embed.load_checked`). Prints images/s of each and the ratio predict / extract.

    .venv/bin/python scripts/bench/bench_predict.py --n 200 --backbones dlib_resnet sface
    .venv/bin/python scripts/bench/bench_predict.py --n 200 --backbones sface --repeat 2
"""
from __future__ import annotations

import argparse
import contextlib
import io
import logging
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
CELEBA = ROOT / ".." / "shared" / "data" / "celeba"
SUMMARY = re.compile(r"^(\S+): (\d+) rows in \d+ units.*?; ([\d.]+) s, [\d.]+ images/s", re.M)


def build_celeba(root: Path, n: int) -> list[Path]:
    """A CelebA folder of n shared images (symlinks), evenly spaced so that every split has some; real labels."""
    every = sorted(p.name for p in (CELEBA / "img_align_celeba").glob("*.jpg"))
    names = every[::max(1, len(every) // n)][:n]
    if len(names) < n:
        raise SystemExit(f"only {len(names)} images in {CELEBA / 'img_align_celeba'}")
    keep = set(names)
    (root / "img_align_celeba").mkdir(parents=True)
    for name in names:
        (root / "img_align_celeba" / name).symlink_to((CELEBA / "img_align_celeba" / name).resolve())
    split = [line for line in (CELEBA / "list_eval_partition.txt").read_text().splitlines()
             if line.split()[:1] and line.split()[0] in keep]
    (root / "list_eval_partition.txt").write_text("\n".join(split) + "\n")
    attr = (CELEBA / "list_attr_celeba.txt").read_text().splitlines()
    rows = [line for line in attr[2:] if line.split()[:1] and line.split()[0] in keep]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(len(rows)), attr[1], *rows]) + "\n")
    return [root / "img_align_celeba" / name for name in names]


def run_extract(root: Path, store: Path, backbones: list[str]) -> tuple[float, float]:
    """(wall seconds of python -m extract, seconds of its loops from its summary lines)."""
    command = [sys.executable, "-m", "extract", "--dataset", "celeba", "--root", str(root), "--backbones",
               *backbones, "--store", str(store), "--no-progress"]
    start = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"extract failed:\n{done.stderr[-3000:]}")
    passes = {name: float(seconds) for name, _, seconds in SUMMARY.findall(done.stderr)}
    missing = {"_faces", *backbones} - set(passes)
    if missing:
        raise SystemExit(f"no summary line for {sorted(missing)} in extract's log:\n{done.stderr[-3000:]}")
    return wall, sum(passes.values())


def train_head(store: Path, out: Path, backbones: list[str]) -> Path:
    from classify import cli

    with contextlib.redirect_stdout(io.StringIO()):  # the leaderboard is not what this script reports
        code = cli.main(["train", "--store", str(store), "--backbones", "+".join(backbones), "--heads", "logreg",
                         "--bootstrap", "20", "--out", str(out)])
    if code != 0:
        raise SystemExit(f"classify train failed ({code})")
    return out / f"{'+'.join(sorted(backbones))}__logreg.npz"


def run_predict(head: Path, paths: list[Path]) -> tuple[float, float]:
    """(wall seconds of predict_images, seconds of it spent loading the backbones)."""
    from classify import GenderModel
    from extract import embed as pipeline

    loading = [0.0]
    original = pipeline.load_checked

    def timed_load(*args, **kwargs):
        start = time.perf_counter()
        try:
            return original(*args, **kwargs)
        finally:
            loading[0] += time.perf_counter() - start

    with mock.patch.object(pipeline, "load_checked", timed_load):
        start = time.perf_counter()
        predictions = GenderModel.load(head).predict_images([str(p) for p in paths])
        wall = time.perf_counter() - start
    if len(predictions) != len(paths):
        raise SystemExit(f"predict gave {len(predictions)} rows for {len(paths)} images")
    return wall, loading[0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200, help="images (N shared CelebA aligned ones, evenly spaced)")
    parser.add_argument("--backbones", nargs="+", default=["dlib_resnet", "sface"])
    parser.add_argument("--repeat", type=int, default=2, help="extract-then-predict rounds, back to back")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if not (CELEBA / "img_align_celeba").is_dir():
        raise SystemExit(f"no {CELEBA / 'img_align_celeba'}")
    n = args.n
    with tempfile.TemporaryDirectory(prefix="bench_predict_") as scratch:
        scratch = Path(scratch)
        paths = build_celeba(scratch / "celeba", n)
        head = None
        print(f"{n} images, backbones {' + '.join(args.backbones)}; images/s (wall; without start-up and model "
              "loading)")
        for round_ in range(1, args.repeat + 1):
            store = scratch / f"features{round_}.zarr"
            extract_wall, extract_loops = run_extract(scratch / "celeba", store, args.backbones)
            if head is None:
                head = train_head(store, scratch / "heads", args.backbones)
            predict_wall, loading = run_predict(head, paths)
            predict_loop = predict_wall - loading
            print(f"round {round_}: extract {n / extract_wall:6.1f} ({n / extract_loops:6.1f})  "
                  f"predict {n / predict_wall:6.1f} ({n / predict_loop:6.1f})  "
                  f"ratio predict/extract {extract_wall / predict_wall:.2f} ({extract_loops / predict_loop:.2f})  "
                  f"[s: extract {extract_wall:.1f} / {extract_loops:.1f}, predict {predict_wall:.1f} / "
                  f"{predict_loop:.1f}]", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
