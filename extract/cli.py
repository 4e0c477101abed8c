"""`python -m extract`: embed a dataset with one or more backbones into a feature store (`EXAMPLES`);
subcommands `list` (registered backbones), `verify` (damaged units) and `upgrade` (an older store).

The arguments are parsed and checked (this module, `extract.config`) before torch is imported, then
`extract.run` runs them. Exit codes are `features.cli.run_cli`'s.
"""
from __future__ import annotations

import argparse
import errno
import importlib
import logging
import sys
from typing import TYPE_CHECKING, Callable, Sequence

from extract import catalog
from extract.config import CPU_BATCH, CUDA_BATCH, DECODES, DTYPES, ExtractConfig, ParseExit, parse
from extract.errors import expected_errors
from features.cli import EXIT_BAD_INPUT, EXIT_BUG, EXIT_OK, UsageError, run_cli

if TYPE_CHECKING:  # torch and zarr take seconds to import: parsing and checking the arguments come first
    from extract import distributed

log = logging.getLogger(__name__)

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
    parser.add_argument("--precision", default=catalog.PRECISIONS[0], choices=catalog.PRECISIONS)
    parser.add_argument("--dtype", default=DTYPES[0], choices=DTYPES, help="embedding dtype in the store")
    parser.add_argument("--unit-rows", type=int, default=None,
                        help="rows per store unit (the unit of resume and of work per rank; default: the "
                        "store's default size; a resumed backbone keeps the size it was created with)")
    parser.add_argument("--limit", type=int, default=None, metavar="N",
                        help="only N images: the first of each split, in proportion to its size and at "
                        "least one per split (a quick try; the store holds that smaller table: resume it with the same "
                        "--limit, give another --limit a new --store)")
    parser.add_argument("--seed", type=int, default=0, help="seed of generated splits")
    parser.add_argument("--tta", default=catalog.TTAS[0], choices=catalog.TTAS,
                        help="test-time augmentation: flip averages the embeddings of each face and its "
                        "mirror image (recorded in the store)")
    parser.add_argument("--decode", default=DECODES[0], choices=DECODES,
                        help="where a face backbone decodes JPEGs and cuts its chips: cpu (reader workers), "
                        "device (batched on the model's device: nvJPEG on CUDA), auto (device on CUDA for "
                        "backbones whose whole chip is cut there, else cpu); rows agree within the decoders' "
                        "tolerance, so a store resumes with either")
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
    return run_cli(lambda: _dispatch(argv),
                   interrupted_note="finished units are kept; rerun the same command to resume")


def _dispatch(argv: list[str]) -> int:
    """The subcommand named first (`SUBCOMMANDS`), else an extraction run; its bad-input errors raised as
    `UsageError` for `run_cli`: which those are is known only once they are raised (the store's errors
    exist once zarr, seconds to import, has been)."""
    command = SUBCOMMANDS.get(argv[0]) if argv else None
    try:
        if command is not None:
            return command(argv[1:])
        return _run(ExtractConfig.from_args(parse(build_parser(), argv)))
    except ParseExit as stop:
        return stop.code
    except Exception as error:
        # a store write that cannot land: bad environment, not a bug
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            raise UsageError(f"no space left on the device holding {error.filename or 'the store'} "
                             f"({error.strerror or error}): free some space, then rerun the same command to "
                             "resume (finished units are kept)") from error
        if isinstance(error, expected_errors()) and not isinstance(error, UsageError):
            raise UsageError(str(error)) from error
        raise


def _run(config: ExtractConfig) -> int:
    """Import the torch side, then extract (one process, or this rank's share under torchrun)."""
    from extract import distributed, run
    from extract.images import quiet_opencv

    ranks = distributed.ranks_from_env()
    _configure_logging(ranks)
    quiet_opencv()
    try:
        return run.extract(config, ranks)
    except distributed.SetupFailed as failure:
        if failure.expected:
            return EXIT_BAD_INPUT  # rank 0 reported the error
        log.error("error: %s", failure)
        return EXIT_BUG


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


def list_main(argv: list[str]) -> int:
    """``python -m extract list [--plugin M]``: name, dim, input shape and offline availability of every
    registered backbone."""
    parse(_list_parser(), argv)
    rows = [("name", "dim", "input", "weights offline", "default weights")]
    for info in catalog.describe_backbones():
        available = {True: "yes", False: "no (pass --weights)", None: "unknown"}[info["available_offline"]]
        shape = "x".join(map(str, info["input_shape"])) if info["input_shape"] else "?"
        rows.append((info["name"], str(info["dim"] or "?"), shape, available, info["default_weights"] or "?"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    return EXIT_OK


# -- subcommands: each a main(argv) -> int; verify and upgrade are imported when run -----------------------
SUBCOMMANDS: dict[str, Callable[[list[str]], int]] = {
    "list": list_main,
    "verify": lambda argv: importlib.import_module("extract.verify").main(argv),
    "upgrade": lambda argv: importlib.import_module("extract.upgrade").main(argv),
}
