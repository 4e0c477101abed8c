"""`python -m extract`: embed a dataset with one or more backbones into a feature store.

    python -m extract --dataset celeba --root data/celeba --backbones sface resnet50 --store out.zarr
    python -m extract list                      # registered backbones, dims, offline weights
    torchrun --nproc-per-node 4 -m extract ...  # same result, units dealt round-robin to the ranks

Rerunning the same command resumes: units already marked done in the store are skipped. Exit codes:
0 done, 1 unexpected error, 2 bad input (one line on stderr says what), 130 interrupted (finished units
are kept).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from dataclasses import replace
from typing import Sequence

import numpy as np

from extract import distributed
from extract.backbones import (Backbone, WeightsUnavailable, backbone_names, describe_backbones,
                               load_backbone)
from extract.images import configure_threads, quiet_opencv
from extract.pipeline import ExtractionInterrupted, RunStats, extract_units, resolve_device
from features.dataset import Dataset, DatasetError
from features.store import FeatureStore, StoreError

log = logging.getLogger(__name__)

EXPECTED_ERRORS = (DatasetError, StoreError, WeightsUnavailable, ValueError, FileNotFoundError)
CPU_BATCH, CUDA_BATCH = 8, 256  # measured: efficientnet_lite0 on 2 CPU cores runs ~2x faster at 8 than 32
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m extract", description="Embed face images into a feature store "
        "(rerun the same command to resume). `python -m extract list` shows the backbones.")
    # No argparse choices: a --plugin may register more kinds (features.datasets.register), and
    # load_dataset names the valid ones when the kind is unknown.
    parser.add_argument("--dataset", required=True, metavar="KIND",
                        help="dataset kind: celeba, utkface, folder, or one a --plugin registers")
    parser.add_argument("--root", required=True, help="dataset folder")
    parser.add_argument("--backbones", required=True, nargs="+", metavar="NAME")
    parser.add_argument("--store", required=True, help="feature store path or fsspec URL (*.zarr)")
    parser.add_argument("--weights", nargs="+", default=[], metavar="NAME=PATH",
                        help="per-backbone weight files (NAME=PATH or NAME=random), or 'random' for all")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per forward pass (default {CPU_BATCH} on CPU, where small batches "
                        f"stay in cache and run fastest; {CUDA_BATCH} on CUDA)")
    parser.add_argument("--workers", type=int, default=None, help="image decoding processes "
                        "(default half the CPUs, at most 4 without a GPU; torch then uses the CPUs left; "
                        "0 decodes in the main process)")
    parser.add_argument("--device", default="auto", help="auto (cuda when available), cpu, cuda, cuda:N")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--dtype", default="float32", choices=("float32", "float16"),
                        help="embedding dtype in the store")
    parser.add_argument("--unit-rows", type=int, default=1024,
                        help="rows per store unit (the unit of resume and of work per rank)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only N images: the first of each split, in proportion to its size and at "
                        "least one per split (a quick try; the store holds that smaller table)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated splits")
    _add_common(parser)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register extra backbones); repeatable")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    ranks = distributed.ranks_from_env()
    _configure_logging(ranks)
    quiet_opencv()
    try:
        if argv[:1] == ["list"]:
            return list_backbones(_parse(_list_parser(), argv[1:]))
        return extract(_parse(build_parser(), argv), ranks)
    except _ParseExit as stop:
        return stop.code
    except distributed.SetupFailed as failure:
        if failure.expected:
            return EXIT_BAD_INPUT  # rank 0 reported the error
        log.error("error: %s", failure)
        return EXIT_FAILED
    except EXPECTED_ERRORS as error:
        log.error("error: %s", error)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        log.warning("interrupted; finished units are kept; rerun the same command to resume")
        return EXIT_INTERRUPTED


class _ParseExit(Exception):
    def __init__(self, code: int):
        self.code = code


def _parse(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """parse_args, returning instead of exiting (argparse has already printed usage and error)."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as stop:
        raise _ParseExit(EXIT_OK if stop.code in (0, None) else EXIT_BAD_INPUT) from None
    for module in args.plugin:
        try:
            importlib.import_module(module)
        except ImportError as error:
            raise ValueError(f"--plugin {module}: cannot import it ({error})") from None
    return args


def _configure_logging(ranks: distributed.Ranks) -> None:
    """One stderr handler on the root logger (replaced on each call, so tests may call main again)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "extract_cli", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.extract_cli = True
    prefix = f"[rank {ranks.rank}] " if ranks.distributed else ""
    handler.setFormatter(logging.Formatter(prefix + "%(message)s"))
    root.addHandler(handler)
    root.setLevel(logging.INFO)


# -- list --------------------------------------------------------------------------------------------
def _list_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m extract list",
                                     description="Registered backbones and whether their weights are here.")
    _add_common(parser)
    return parser


def list_backbones(args: argparse.Namespace) -> int:
    """Print name, dim, input shape and offline availability of every registered backbone."""
    rows = [("name", "dim", "input", "weights offline")]
    for info in describe_backbones():
        available = {True: "yes", False: "no (pass --weights)", None: "unknown"}[info["available_offline"]]
        shape = "x".join(map(str, info["input_shape"])) if info["input_shape"] else "?"
        rows.append((info["name"], str(info["dim"] or "?"), shape, available))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


# -- extract -----------------------------------------------------------------------------------------
def parse_weights(specs: Sequence[str], backbones: Sequence[str]) -> dict[str, str]:
    """--weights values -> {backbone: "random" | path}; backbones not named keep their defaults."""
    if list(specs) == ["random"]:
        return {name: "random" for name in backbones}
    weights = {}
    for spec in specs:
        name, sep, value = spec.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"--weights {spec!r}: expected NAME=PATH, NAME=random, or 'random' alone")
        if name not in backbones:
            raise ValueError(f"--weights {spec!r}: {name!r} is not among --backbones "
                             f"({', '.join(backbones)})")
        weights[name] = value
    return weights


def default_batch_size(args: argparse.Namespace, backbone: Backbone) -> int:
    if args.batch_size is not None:
        return args.batch_size
    return CUDA_BATCH if backbone.device.type == "cuda" else CPU_BATCH


def _check_args(args: argparse.Namespace) -> None:
    for option in ("batch_size", "unit_rows", "limit"):
        value = getattr(args, option)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be a positive integer, not {value}")
    if args.workers is not None and args.workers < 0:
        raise ValueError(f"--workers must be 0 or more, not {args.workers}")
    unknown = [name for name in args.backbones if name not in backbone_names()]
    if unknown:
        raise ValueError(f"unknown backbone(s) {', '.join(map(repr, unknown))}; valid names: "
                         f"{', '.join(backbone_names())}")
    if len(set(args.backbones)) != len(args.backbones):
        raise ValueError(f"--backbones names a backbone twice: {' '.join(args.backbones)}")


def limit_rows(dataset: Dataset, limit: int | None) -> Dataset:
    """`limit` rows, each split keeping its share (in table order); all of it when None or larger.

    Not simply the first rows: CelebA's table is in split order, so its first rows are all train and
    the classify step would have no val or test rows.
    """
    if limit is None or limit >= len(dataset):
        return dataset
    keep = np.sort(np.concatenate([rows[:k] for rows, k in _rows_per_split(dataset.split, limit)]))
    return replace(dataset, ids=dataset.ids[keep], paths=dataset.paths[keep],
                   gender=dataset.gender[keep], split=dataset.split[keep],
                   attributes={name: values[keep] for name, values in dataset.attributes.items()})


def _rows_per_split(split: np.ndarray, limit: int) -> list[tuple[np.ndarray, int]]:
    """(rows of each split, how many to keep): limit * share rounded, at least 1 when limit allows."""
    groups = [np.flatnonzero(split == code) for code in np.unique(split)]
    sizes = np.array([len(rows) for rows in groups])
    # Rounding the cumulative shares keeps every split within a row of its share and the total at limit.
    keep = np.diff(np.round(limit * np.cumsum(sizes) / sizes.sum()).astype(int), prepend=0)
    if limit >= len(groups):
        for empty in np.flatnonzero(keep == 0):  # a small split rounded to nothing: one row from the largest
            keep[np.argmax(keep)] -= 1
            keep[empty] = 1
    return list(zip(groups, keep))


def image_paths(dataset: Dataset) -> list[str]:
    """Absolute image paths (the table may hold them relative to the root)."""
    from pathlib import Path
    root = Path(dataset.root)
    return [str(root / path) for path in dataset.paths]


def extract(args: argparse.Namespace, ranks: distributed.Ranks) -> int:
    """Open (or create) the store, then embed every backbone's pending units."""
    from features.datasets import load_dataset

    _check_args(args)
    weights = parse_weights(args.weights, args.backbones)
    device = resolve_device(args.device, local_rank=ranks.local_rank if ranks.distributed else None)
    configure_threads(gpu=device.type == "cuda", workers=args.workers)  # workers + threads <= CPUs
    dataset = limit_rows(load_dataset(args.dataset, args.root, seed=args.seed), args.limit)
    paths = image_paths(dataset)
    with distributed.process_group(ranks, device):
        store = distributed.main_first(
            ranks, lambda: FeatureStore.open_or_create(args.store, dataset),
            lambda: FeatureStore.open(args.store, mode="r+"), expected=EXPECTED_ERRORS)
        if ranks.is_main:
            log.info("store %s: dataset %s, %d images", args.store, store.dataset_name, store.n_rows)
        for name in args.backbones:
            backbone = load_backbone(name, weights=weights.get(name), device=device,
                                     precision=args.precision)
            code = _extract_backbone(store, backbone, paths, args, ranks)
            if code != EXIT_OK:
                return code
    return EXIT_OK


def _extract_backbone(store: FeatureStore, backbone: Backbone, paths: list[str],
                      args: argparse.Namespace, ranks: distributed.Ranks) -> int:
    """One backbone: add it (rank 0), embed this rank's pending units, summarise (rank 0)."""
    writer = distributed.main_first(
        ranks, lambda: _add_backbone(store, backbone, args),
        lambda: store.backbone_writer(backbone.name), expected=EXPECTED_ERRORS)
    pending = writer.pending_units()
    units = [unit for unit in pending if ranks.owns(unit)]
    if ranks.is_main:
        log.info("%s: %d of %d units to embed (%d done before)", backbone.name, len(pending),
                 writer.n_units, writer.n_units - len(pending))
    try:
        stats = extract_units(writer, backbone, paths, units, batch_size=default_batch_size(args, backbone),
                              workers=args.workers, progress=ranks.is_main and not args.no_progress)
    except ExtractionInterrupted:
        info = store.backbone_info(backbone.name)
        log.warning("interrupted: %s has %d of %d units done (kept); rerun the same command to resume",
                    backbone.name, info["units_done"], info["n_units"])
        return EXIT_INTERRUPTED
    all_stats = distributed.gather(ranks, stats)
    distributed.barrier(ranks)
    if ranks.is_main:
        _summarise(store, backbone.name, all_stats)
    return EXIT_OK


def _add_backbone(store: FeatureStore, backbone: Backbone, args: argparse.Namespace):
    """Room for the backbone in the store, or its existing entry when resuming with the same setup."""
    metadata = {"precision": args.precision, **backbone.metadata}
    writer = store.add_backbone(backbone.name, dim=backbone.dim, dtype=args.dtype,
                                unit_rows=args.unit_rows, metadata=metadata)
    held = store.backbone_info(backbone.name)
    if held["metadata"].get("precision") != metadata["precision"]:
        raise StoreError(f"{args.store} holds {backbone.name!r} embedded at precision "
                         f"{held['metadata'].get('precision')}, not {metadata['precision']}; resume "
                         "with the same --precision or use another store")
    if held["unit_rows"] != args.unit_rows and writer.pending_units():
        log.info("%s: resuming with the store's --unit-rows %d (not %d)", backbone.name,
                 held["unit_rows"], args.unit_rows)
    return writer


def _summarise(store: FeatureStore, name: str, all_stats: list[RunStats]) -> None:
    total = all_stats[0]
    for stats in all_stats[1:]:
        total = total.add(stats)
    info = store.backbone_info(name)
    ranks = f"; units per rank: {', '.join(str(s.units) for s in all_stats)}" if len(all_stats) > 1 else ""
    log.info("%s; store: %d of %d units done%s", total.summary(name), info["units_done"], info["n_units"],
             ranks)
