"""Write a small generated demo dataset in the official CelebA layout and print its folder.

Drawn cartoon faces with random labels (`extract.demo`, also the test suite's builder): enough to run the main
job end to end on a machine without CelebA, and nothing to learn from. Deterministic for a given --seed.

    .venv/bin/python scripts/make_demo_celeba.py OUT_PARENT [--images 300]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from extract.demo import make_celeba


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("parent", type=Path, help="folder to create the demo CelebA folder in")
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    root = args.parent / "celeba_flat"
    if not (root / "list_eval_partition.txt").exists():  # already there: keep it, so reruns resume
        root = make_celeba(args.parent, n=args.images, layout="flat", seed=args.seed)
    print(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
