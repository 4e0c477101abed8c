"""`python -m extract`: embed a dataset with one or more backbones into a feature store.

    python -m extract --dataset celeba --root data/celeba --backbones sface resnet50 --store out.zarr
    python -m extract list                      # registered backbones, dims, offline weights
    python -m extract verify --store out.zarr [--repair]  # damaged units; --repair un-marks them
    torchrun --nproc-per-node 4 -m extract ...  # same result, units dealt round-robin to the ranks

Rerunning the same command resumes: units already marked done in the store are skipped. Exit codes:
0 done, 1 unexpected error, 2 bad input (one line on stderr says what), 130 interrupted (finished units
are kept).
"""
from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import logging
import sys
from dataclasses import replace
from typing import Sequence

from typing import TYPE_CHECKING

import numpy as np

from extract import catalog
from features.dataset import Dataset

if TYPE_CHECKING:  # torch and zarr take seconds to import: parsing and checking the arguments come first
    from extract import distributed
    from extract.backbones import Backbone
    from extract.pipeline import RunStats
    from features.store import FeatureStore

log = logging.getLogger(__name__)

# Error types that mean bad input (one line, exit 2), by module: looked up when an error is caught, in
# the modules imported by then (an error type whose module was never imported cannot have been raised).
_EXPECTED = {"features.dataset": ("DatasetError",), "features.store": ("StoreError",),
             "extract.backbones._registry": ("WeightsUnavailable",), "builtins": ("ValueError",
                                                                                  "FileNotFoundError")}
CPU_BATCH, CUDA_BATCH = 8, 256  # measured: efficientnet_lite0 on 2 CPU cores runs ~2x faster at 8 than 32
EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130
EXAMPLES = """examples:
  python -m extract list
  python -m extract --dataset celeba --root data/celeba --backbones sface dlib_resnet \\
      --store runs/celeba/features.zarr
  python -m extract --dataset folder --root my_faces --backbones efficientnet_lite0 \\
      --store runs/mine/features.zarr --limit 300            # a quick try on 300 images
  python -m extract --dataset utkface --root data/utkface --backbones resnet50 \\
      --weights resnet50=resnet50.pth --store runs/utk/features.zarr --device cuda --precision bf16
  torchrun --nproc-per-node 4 -m extract ...                   # the same, split over 4 processes
"""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m extract", description="Embed face images into a feature store "
        "(rerun the same command to resume). `python -m extract list` shows the backbones.",
        epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    # No argparse choices: a --plugin may register more kinds (features.datasets.register), and
    # load_dataset names the valid ones when the kind is unknown.
    parser.add_argument("--dataset", required=True, metavar="KIND",
                        help="dataset kind: celeba, utkface, folder, or one a --plugin registers")
    parser.add_argument("--root", required=True, help="dataset folder")
    parser.add_argument("--backbones", required=True, nargs="+", metavar="NAME",
                        help="backbones to run, one after the other, each into its own array of the store: "
                        f"{', '.join(sorted(catalog.BUILTIN))}, or one a --plugin registers")
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
                        "least one per split (a quick try; the store holds that smaller table: resume it with the same "
                        "--limit, give another --limit a new --store)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated splits")
    parser.add_argument("--tta", default="none", choices=("none", "flip"),
                        help="test-time augmentation: flip averages the embeddings of each face and its "
                        "mirror image (recorded in the store)")
    parser.add_argument("--wait-lock", action="store_true", help="when another process is writing a "
                        "backbone into this store, wait for it (default: stop with a message)")
    _add_common(parser)
    return parser


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                        help="import MODULE first (it may register extra backbones); repeatable")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (a line with rows done, rate and time left is still "
                        "logged every 10 s, as it is whenever stderr is not a terminal)")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the exit code. Parses and checks the arguments before importing torch."""
    argv = sys.argv[1:] if argv is None else list(argv)
    _configure_logging()
    try:
        if argv[:1] == ["list"]:
            return list_backbones(_parse(_list_parser(), argv[1:]))
        if argv[:1] == ["verify"]:
            from extract import verify  # zarr only, no torch
            return verify.main(argv[1:])
        args = _parse(build_parser(), argv)
        _check_args(args)
        return _run(args)
    except _ParseExit as stop:
        return stop.code
    except KeyboardInterrupt:
        log.warning("interrupted; finished units are kept; rerun the same command to resume")
        return EXIT_INTERRUPTED
    except expected_errors() as error:
        log.error("error: %s", error)
        return EXIT_BAD_INPUT


def expected_errors() -> tuple[type[Exception], ...]:
    """The error types that mean bad input, among the modules imported so far (see `_EXPECTED`)."""
    return tuple(getattr(sys.modules[module], name) for module, names in _EXPECTED.items()
                 if module in sys.modules for name in names)


def _run(args: argparse.Namespace) -> int:
    """Import the torch side, then extract (one process, or this rank's share under torchrun)."""
    from extract import distributed
    from extract.images import quiet_opencv

    ranks = distributed.ranks_from_env()
    _configure_logging(ranks)
    quiet_opencv()
    try:
        return extract(args, ranks)
    except distributed.SetupFailed as failure:
        if failure.expected:
            return EXIT_BAD_INPUT  # rank 0 reported the error
        log.error("error: %s", failure)
        return EXIT_FAILED


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


def _configure_logging(ranks: distributed.Ranks | None = None) -> None:
    """One stderr handler on the root logger (replaced on each call, so tests may call main again)."""
    root = logging.getLogger()
    for handler in [h for h in root.handlers if getattr(h, "extract_cli", False)]:
        root.removeHandler(handler)
    handler = logging.StreamHandler(sys.stderr)
    handler.extract_cli = True
    prefix = f"[rank {ranks.rank}] " if ranks is not None and ranks.distributed else ""
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
    for info in catalog.describe_backbones():
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
    known = catalog.backbone_names()
    unknown = [name for name in args.backbones if name not in known]
    if unknown:
        raise ValueError(f"unknown backbone(s) {', '.join(map(repr, unknown))}; valid names: "
                         f"{', '.join(known)}")
    parse_weights(args.weights, args.backbones)
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


def open_store(path: str, full: Dataset, limit: int | None) -> FeatureStore:
    """The store for `full` limited to `limit` rows; a store of the same dataset under another
    --limit is refused with a line that says so (a store holds one table, and its rows are indexed
    by it)."""
    from features.store import FeatureStore, StoreError

    wanted = limit_rows(full, limit)
    try:
        return FeatureStore.open_or_create(path, wanted)
    except StoreError:
        held = _rows_held(path, full)
        if held is None or held == len(wanted):
            raise
        raise StoreError(f"{path} holds this dataset {_limited(held, len(full))}, but this run asks for it "
                         f"{_limited(len(wanted), len(full))}: rerun with "
                         f"{'--limit ' + str(held) if held < len(full) else 'no --limit'} to resume that "
                         "store, or give this run a new --store path") from None


def _rows_held(path: str, full: Dataset) -> int | None:
    """How many rows of `full` the store at `path` holds, when it holds `full` under some --limit."""
    from features.store import FeatureStore, StoreError

    try:
        store = FeatureStore.open(path)
    except StoreError:
        return None
    return store.n_rows if store.fingerprint == limit_rows(full, store.n_rows).fingerprint() else None


def _limited(rows: int, total: int) -> str:
    return f"limited to {rows} of its {total} images (--limit {rows})" if rows < total else \
        f"whole ({total} images, no --limit)"


def extract(args: argparse.Namespace, ranks: distributed.Ranks) -> int:
    """Open (or create) the store, then embed every backbone's pending units."""
    from extract import distributed
    from extract.backbones import load_backbone
    from extract.images import configure_threads
    from extract.pipeline import resolve_device
    from features.datasets import load_dataset
    from features.store import FACES, FeatureStore

    weights = parse_weights(args.weights, args.backbones)
    device = resolve_device(args.device, local_rank=ranks.local_rank if ranks.distributed else None)
    full = load_dataset(args.dataset, args.root, seed=args.seed)
    dataset = limit_rows(full, args.limit)
    configure_threads(gpu=device.type == "cuda", workers=args.workers)  # workers + threads <= CPUs
    paths = image_paths(dataset)
    with distributed.process_group(ranks, device):
        store = distributed.main_first(
            ranks, lambda: open_store(args.store, full, args.limit),
            lambda: FeatureStore.open(args.store, mode="r+"), expected=expected_errors())
        if ranks.is_main:
            log.info("store %s: dataset %s, %d images", args.store, store.dataset_name, store.n_rows)
        faces = None
        for name in args.backbones:
            backbone = load_backbone(name, weights=weights.get(name), device=device,
                                     precision=args.precision, tta=args.tta)
            if backbone.uses_faces and faces is None:
                with _writer_lock(args, ranks, FACES):
                    faces = detect_faces(store, dataset, paths, args, ranks)
                if faces is None:
                    return EXIT_INTERRUPTED
            with _writer_lock(args, ranks, name):
                code = _extract_backbone(store, backbone, paths, args, ranks,
                                         faces=faces if backbone.uses_faces else None)
            if code != EXIT_OK:
                return code
    return EXIT_OK


def face_pass(dataset: Dataset) -> Backbone:
    """The detection pass written like a backbone under the store's reserved FACES entry: one face row
    per image (`extract.faces`), shared by every face backbone of the run and of later runs."""
    import torch

    from extract.backbones import Backbone
    from extract.backbones._weights import sha256_file
    from extract.faces import FACE_DIM, Alignment, FaceDetector, FaceLocator, detector_path
    from features.store import FACES

    alignment = Alignment.from_info(dataset.alignment)
    locator = FaceLocator(FaceDetector(detector_path()), alignment)
    metadata = {"role": "faces", "weights": f"sha256:{sha256_file(detector_path())}",
                "weights_source": str(detector_path()), "preprocessing": locator.describe(),
                "columns": "box x, y, w, h; landmarks x0, y0 .. x4, y4 (right eye, left eye, nose, right "
                "and left mouth corner); score; source (1 detected, 2 dataset template); original pixels"}
    return Backbone(name=FACES, dim=FACE_DIM, input_shape=(FACE_DIM,), preprocessor=locator,
                    embed=lambda batch: batch.float(), device=torch.device("cpu"), uses_torch_device=False,
                    metadata=metadata, input_dtype="float32")


def _writer_lock(args: argparse.Namespace, ranks: distributed.Ranks, name: str):
    """One writer per backbone (and per detection pass); torchrun ranks write disjoint units, no lock."""
    from features.store import writer_lock

    return contextlib.nullcontext() if ranks.distributed else writer_lock(args.store, name, wait=args.wait_lock)


def detect_faces(store: FeatureStore, dataset: Dataset, paths: list[str], args: argparse.Namespace,
                 ranks: distributed.Ranks) -> tuple[np.ndarray, np.ndarray] | None:
    """Run (or resume) the detection pass; (face rows, status) of every row, None if interrupted."""
    from extract import distributed
    from extract.pipeline import record_template_check
    from features.store import FACES

    if store.faces() is not None and store.is_complete(FACES):
        return store.faces()
    code = _extract_backbone(store, face_pass(dataset), paths, args, ranks)
    if code != EXIT_OK:
        return None
    distributed.barrier(ranks)
    if ranks.is_main:  # aligned datasets: fallbacks and detection-vs-template distances, logged and recorded
        record_template_check(store, dataset.alignment, paths)
    return store.faces()


def _extract_backbone(store: FeatureStore, backbone: Backbone, paths: list[str],
                      args: argparse.Namespace, ranks: distributed.Ranks, *,
                      faces: tuple[np.ndarray, np.ndarray] | None = None) -> int:
    """One backbone: add it (rank 0), embed this rank's pending units, summarise (rank 0)."""
    from extract import distributed
    from extract.pipeline import ExtractionInterrupted, extract_units

    writer = distributed.main_first(
        ranks, lambda: _add_backbone(store, backbone, args),
        lambda: store.backbone_writer(backbone.name), expected=expected_errors())
    pending = writer.pending_units()
    units = [unit for unit in pending if ranks.owns(unit)]
    if ranks.is_main:
        log.info("%s: %d of %d units to embed (%d done before)", backbone.name, len(pending),
                 writer.n_units, writer.n_units - len(pending))
    try:
        stats = extract_units(writer, backbone, paths, units, batch_size=default_batch_size(args, backbone),
                              workers=args.workers, progress=ranks.is_main and not args.no_progress,
                              faces=faces)
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
    from features.store import FACES, StoreError

    metadata = {"precision": args.precision, **backbone.metadata}
    dtype = "float32" if backbone.name == FACES else args.dtype  # face rows are pixel coordinates
    writer = store.add_backbone(backbone.name, dim=backbone.dim, dtype=dtype,
                                unit_rows=args.unit_rows, metadata=metadata)
    held = store.backbone_info(backbone.name)
    for key, option in (("preprocessing", "the face front end or preprocessing"), ("tta", "--tta")):
        if held["metadata"].get(key) != json.loads(json.dumps(metadata.get(key))) and writer.pending_units():
            raise StoreError(f"{args.store} holds {backbone.name!r} made with another {option} "
                             f"({key} differs from this version's); use a new store to re-extract it")
    if held["metadata"].get("precision") != metadata["precision"] and backbone.name != FACES:
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
