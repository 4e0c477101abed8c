"""Benchmark extraction: the project's pipeline against model-only and a naive loop, in one run.

On the same images, batch size and threads:
  (a) model only:   preprocessed arrays preloaded in memory, batches straight into `embed`;
  (b) pipeline:     `extract.pipeline.extract_units`: decode + preprocess in DataLoader workers,
                    model, rows written into a feature store (what `python -m extract` runs);
  (c) naive loop:   what a user would write: PIL open, the backbone's own preprocessing and net,
                    batch of one, one .npy file per image.
Prints images/s of each, the ratios b/a and b/c, and peak RSS (this process / the reader workers).

    .venv/bin/python scripts/bench/bench_extract.py --backbone efficientnet_lite0 --images 512
    .venv/bin/python scripts/bench/bench_extract.py --backbone resnet50 --weights random --device cuda \\
        --precision bf16 --batch-size 256 --workers 12 --images 4096 --skip-naive

With ``--load N``: the pipeline (b) only, quiet and then with N competing CPU-bound processes
(``python -c "while True: pass"``), back to back, ``--repeat`` times; prints both rates and the ratio
(the machine may be loaded by others too: the back-to-back pairs are what compare).

    .venv/bin/python scripts/bench/bench_extract.py --backbone efficientnet_lite0 --images 256 --load 1 --repeat 3
"""
from __future__ import annotations

import argparse
import contextlib
import os
import subprocess
import platform
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import torch

from extract.backbones import Backbone, load_backbone
from extract.catalog import PRECISIONS
from extract.images import ImageRows, configure_threads, default_workers
from extract.device import resolve_device
from extract.pipeline import extract_units, start_embedding
from features.datasets.folder import IMAGE_EXTENSIONS
from features.store import FeatureStore

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))  # the repository root: tests.fixtures
from tests.fixtures import synthetic_table  # noqa: E402

DEFAULT_IMAGES = Path(__file__).resolve().parents[3] / "shared" / "data" / "celeba" / "img_align_celeba"


def image_files(folder: Path, count: int) -> list[str]:
    files = sorted(str(p) for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
    if not files:
        raise SystemExit(f"no images in {folder}; pass --image-dir")
    return [files[i % len(files)] for i in range(count)]  # repeat a small folder to reach count


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def model_only(backbone: Backbone, paths: list[str], *, batch_size: int) -> float:
    """images/s of `embed` alone, on preprocessed arrays already in (pinned) memory."""
    rows = ImageRows(paths, backbone.preprocessor, input_shape=backbone.input_shape,
                     input_dtype=backbone.input_dtype)
    items = [rows[i] for i in range(len(paths))]
    arrays = torch.from_numpy(np.stack([array for _, array, _ in items]))
    status = torch.tensor([code for _, _, code in items], dtype=torch.uint8)
    if backbone.device.type == "cuda":
        arrays = arrays.pin_memory()
    batches = [(arrays[i:i + batch_size], status[i:i + batch_size]) for i in range(0, len(paths), batch_size)]
    start_embedding(backbone, *batches[0]).result()  # warm-up: lazy init, cuDNN autotune
    synchronize(backbone.device)
    start = time.perf_counter()
    pending = [start_embedding(backbone, batch, codes) for batch, codes in batches]  # the GPU queue stays full
    for embeddings in pending:
        embeddings.result()
    synchronize(backbone.device)
    return len(paths) / (time.perf_counter() - start)


def pipeline(backbone: Backbone, paths: list[str], *, batch_size: int, workers: int, scratch: Path) -> float:
    """images/s of the real extraction loop into a fresh store (warm-up on one unit first)."""
    n = len(paths)
    table = synthetic_table(n, name="bench", root=str(scratch), ids=[f"{i:07d}" for i in range(n)], paths=paths)
    store = FeatureStore.create(scratch / f"{backbone.name}.zarr", table)
    writer = store.add_backbone(backbone.name, dim=backbone.dim, unit_rows=batch_size * 4,
                                metadata=backbone.metadata)
    units, run = writer.pending_units(), dict(batch_size=batch_size, workers=workers, progress=False)
    extract_units(writer, backbone, paths, units[:1], **run)
    start = time.perf_counter()
    stats = extract_units(writer, backbone, paths, units[1:], **run)
    synchronize(backbone.device)
    seconds = time.perf_counter() - start
    assert store.is_complete(backbone.name), "the pipeline left units pending"
    return stats.rows / seconds


def naive_loop(backbone: Backbone, paths: list[str], *, scratch: Path) -> float:
    """images/s of a per-image loop: PIL open, the backbone's own preprocessing and net, np.save per image."""
    from PIL import Image

    out = scratch / "naive"
    out.mkdir(exist_ok=True)
    start = time.perf_counter()
    for i, path in enumerate(paths):
        image = np.asarray(Image.open(path).convert("RGB"))[:, :, ::-1].copy()  # BGR, as cv2 reads it
        with torch.inference_mode():
            array = backbone.preprocessor(image)
            embedding = backbone.embed(torch.from_numpy(array[None])).cpu().numpy()
        np.save(out / f"{i:07d}.npy", embedding[0])
    synchronize(backbone.device)
    return len(paths) / (time.perf_counter() - start)


@contextlib.contextmanager
def competing_load(processes: int):
    """``processes`` busy-looping Python processes for the duration of the block (killed by pid)."""
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(processes)]
    try:
        time.sleep(0.5)  # let them start spinning
        yield
    finally:
        for spinner in spinners:
            spinner.kill()
            spinner.wait()


def load_comparison(backbone: Backbone, paths: list[str], args) -> None:
    """Pipeline images/s quiet vs with ``args.load`` competing processes, ``args.repeat`` pairs."""
    print(f"| backbone | workers | torch threads | quiet img/s | with {args.load} competing img/s | ratio |")
    print("|---|---|---|---|---|---|")
    for _ in range(args.repeat):
        with tempfile.TemporaryDirectory() as scratch:
            quiet = pipeline(backbone, paths, batch_size=args.batch_size, workers=args.workers, scratch=Path(scratch))
        with tempfile.TemporaryDirectory() as scratch, competing_load(args.load):
            loaded = pipeline(backbone, paths, batch_size=args.batch_size, workers=args.workers, scratch=Path(scratch))
        print(f"| {args.backbone} | {args.workers} | {torch.get_num_threads()} | {quiet:.1f} | {loaded:.1f} | "
              f"{loaded / quiet:.2f} |", flush=True)


def common_parser(*, backbone: str, images: int, batch_size: int, **options) -> argparse.ArgumentParser:
    """The options this script and bench_decode.py share (their defaults differ)."""
    parser = argparse.ArgumentParser(**options)
    parser.add_argument("--backbone", default=backbone)
    parser.add_argument("--weights", default=None, help="'random' for torch nets without weights here")
    parser.add_argument("--images", type=int, default=images, help="number of images (a folder is repeated)")
    parser.add_argument("--image-dir", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--workers", type=int, default=None, help="reader workers (default: extract's)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: extract's)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--precision", default="fp32", choices=PRECISIONS)
    return parser


def parse_timed(parser: argparse.ArgumentParser, argv) -> argparse.Namespace:
    """The timed loops run after a warm-up unit of 4 batches: fewer images would leave nothing to time."""
    args = parser.parse_args(argv)
    unit = 4 * args.batch_size
    if args.images <= unit:
        parser.error(f"--images {args.images} fits in the warm-up unit (4 x --batch-size = {unit}); give more "
                     "than that")
    return args


def prepare(args: argparse.Namespace, describe, check=None) -> tuple[torch.device, Backbone, list[str]]:
    """The run's device, backbone and images, ``args.workers`` and ``args.threads`` set as extract sets them;
    prints them in one line, ``describe(backbone)`` beside the backbone's name, once ``check(backbone)`` (a
    refusal of a backbone the benchmark cannot run) has passed."""
    device = resolve_device(args.device)
    backbone = load_backbone(args.backbone, weights=args.weights, device=device, precision=args.precision)
    if check is not None:
        check(backbone)
    if args.workers is None:  # extract's own default for this backbone
        args.workers = default_workers(gpu=device.type == "cuda", model_in_workers=backbone.runs_in_workers)
    args.threads = configure_threads(gpu=device.type == "cuda", workers=args.workers, threads=args.threads)
    paths = image_files(args.image_dir, args.images)
    card = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or platform.machine()
    print(f"# {args.backbone} ({describe(backbone)}), {len(paths)} images from {args.image_dir}, "
          f"batch {args.batch_size}, {args.workers} reader workers, {args.threads} torch threads, "
          f"{device} {card}, {args.precision}, {os.cpu_count()} CPUs, torch {torch.__version__}", flush=True)
    return device, backbone, paths


def main(argv=None) -> int:
    parser = common_parser(backbone="efficientnet_lite0", images=512, batch_size=32,
                           description=__doc__.splitlines()[0])
    parser.add_argument("--skip-naive", action="store_true")
    parser.add_argument("--load", type=int, default=0, help="competing CPU-bound processes: quiet vs loaded")
    parser.add_argument("--repeat", type=int, default=3, help="quiet/loaded pairs with --load")
    args = parse_timed(parser, argv)
    device, backbone, paths = prepare(args, lambda backbone: backbone.metadata["weights"][:19])
    if args.load:
        load_comparison(backbone, paths, args)
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        a = model_only(backbone, paths, batch_size=args.batch_size)
        b = pipeline(backbone, paths, batch_size=args.batch_size, workers=args.workers, scratch=Path(scratch))
        c = None if args.skip_naive else naive_loop(backbone, paths[:max(64, len(paths) // 4)],
                                                     scratch=Path(scratch))
    own, children = (resource.getrusage(who).ru_maxrss / 1024  # KiB -> MiB
                     for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print("| backbone | device | (a) model only img/s | (b) pipeline img/s | (c) naive img/s | b/a | b/c "
          "| peak RSS MiB (main / workers) |")
    print("|---|---|---|---|---|---|---|---|")
    naive = f"{c:.1f}" if c else "-"
    ratio_c = f"{b / c:.2f}" if c else "-"
    print(f"| {args.backbone} | {device.type} {args.precision} | {a:.1f} | {b:.1f} | {naive} | {b / a:.2f} | "
          f"{ratio_c} | {own:.0f} / {children:.0f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
