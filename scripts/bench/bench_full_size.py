"""Full-size benchmark: the main job's extraction over a full-size CelebA (202,599 images), timed.

Builds a CelebA folder in the official flat layout from the shared data: its FULL label files (the
attribute file with the Male column only) and, as image ``i``, a symlink to shared image ``i mod 6000``
(the content repeats, the decode/detect/embed work per image is real). Then runs ``python -m extract``
(as scripts/main.sh does) one backbone at a time: wall time per backbone and in total. By default three of the
main job's seven backbones, one per engine (torch ImageNet net, ONNX face net, dlib), to fit a lent GPU's minutes;
``--backbones`` names others.

    .venv/bin/python scripts/bench/bench_full_size.py --scratch /tmp/full               # 202,599 images
    .venv/bin/python scripts/bench/bench_full_size.py --scratch /tmp/small --size 512   # a quick check
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

SHARED = Path(__file__).resolve().parents[3] / "shared" / "data"
FULL_SIZE = 202_599
DEFAULT_BACKBONES = ("efficientnet_lite0", "sface", "dlib_resnet")


def read_pairs(path: Path) -> list[tuple[str, str]]:
    """'000001.jpg 0' lines -> [(id, value)]."""
    return [tuple(line.split()[:2]) for line in path.read_text().splitlines() if line.strip()]


def build_celeba(root: Path, *, size: int, images: Path, labels: Path) -> Path:
    """A flat-layout CelebA of the first ``size`` official ids, images symlinked round-robin."""
    sources = sorted(images.glob("*.jpg"))
    if not sources:
        raise SystemExit(f"no images in {images}")
    ids = [image_id for image_id, _ in read_pairs(labels / "list_eval_partition.txt")][:size]
    if len(ids) < size:
        raise SystemExit(f"only {len(ids)} ids in {labels}; --size must be <= {len(ids)}")
    folder = root / "img_align_celeba"
    folder.mkdir(parents=True, exist_ok=True)
    for index, image_id in enumerate(ids):
        link = folder / image_id
        if not link.is_symlink():
            link.symlink_to(sources[index % len(sources)])
    keep = set(ids)
    for name in ("list_eval_partition.txt", "identity_CelebA.txt"):
        rows = [f"{i} {v}" for i, v in read_pairs(labels / name) if i in keep]
        (root / name).write_text("\n".join(rows) + "\n")
    lines = (labels / "celeba-att-male-partitions.csv").read_text().splitlines()[1:]  # id,Attractive,Partition,Male
    male = {fields[0]: "1" if fields[3] == "1" else "-1" for fields in (line.split(",") for line in lines)}
    rows = [f"{i} {male[i]}" for i in ids]
    (root / "list_attr_celeba.txt").write_text("\n".join([str(len(ids)), "Male", *rows]) + "\n")
    return root


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scratch", type=Path, required=True, help="folder for the generated CelebA and store")
    parser.add_argument("--size", type=int, default=FULL_SIZE, help=f"images (default {FULL_SIZE:,})")
    parser.add_argument("--backbones", nargs="+", default=list(DEFAULT_BACKBONES))
    parser.add_argument("--images", type=Path, default=SHARED / "celeba" / "img_align_celeba")
    parser.add_argument("--labels", type=Path, default=SHARED / "celeba_labels_full")
    parser.add_argument("extract_args", nargs="*", help="passed to python -m extract after --, e.g. -- --device cuda")
    args = parser.parse_args(argv)
    if args.size < 1:
        print(f"--size must be positive, not {args.size}", file=sys.stderr)
        return 2
    start = time.perf_counter()
    root = build_celeba(args.scratch / "celeba", size=args.size, images=args.images, labels=args.labels)
    print(f"# built {args.size:,} images in {root} in {time.perf_counter() - start:.1f} s; "
          f"{os.cpu_count()} CPUs; extract args: {' '.join(args.extract_args) or '(defaults)'}", flush=True)
    store = args.scratch / "features.zarr"
    seconds = {}
    for backbone in args.backbones:  # one `python -m extract` each, as the main job runs it
        command = [sys.executable, "-m", "extract", "--dataset", "celeba", "--root", str(root),
                   "--backbones", backbone, "--store", str(store), "--no-progress", *args.extract_args]
        start = time.perf_counter()
        subprocess.run(command, check=True, cwd=Path(__file__).resolve().parents[2])
        seconds[backbone] = time.perf_counter() - start
        print(f"| {backbone} | {args.size:,} | {seconds[backbone]:.1f} s | {args.size / seconds[backbone]:.1f} img/s |",
              flush=True)
    total = sum(seconds.values())
    print(f"| total | {args.size:,} | {total:.1f} s ({total / 60:.1f} min) | |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
