"""`python -m extract upgrade --store S`: bring a feature store written by an older version to the
current schema in place, keeping every embedding computed (`features.store.upgrade` documents the steps:
safe to kill at any instant, a rerun finishes). Exit codes as `features.cli`'s: 2 not an upgradable store.
"""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

from extract.config import parse
from features.cli import EXIT_OK, run_cli
from features.store import StoreError, upgrade

log = logging.getLogger(__name__)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m extract upgrade", description="Rewrite an older feature store in place to the "
        "current schema, keeping its embeddings (safe to interrupt: rerun to finish).")
    parser.add_argument("--store", required=True, help="feature store path or fsspec URL")
    return parser


def main(argv: Sequence[str]) -> int:
    """Parse, upgrade, say what was done; returns the exit code."""
    args = parse(build_parser(), argv)
    return run_cli(lambda: _upgrade(args.store), expected=(StoreError,),
                   interrupted_note="the store is either as it was or upgraded; rerun to finish")


def _upgrade(store: str) -> int:
    log.info("%s", upgrade(store))
    return EXIT_OK
