"""`python -m extract verify --store S [--repair]`: find every damaged unit of a feature store.

Prints one line per damaged unit of every backbone and of the face detection pass (`_faces`).
`--repair` marks them not done, so the same extract command re-embeds exactly them; damaged face units
also un-mark the units of every face backbone embedded from them. Exit codes: 0 no damage (or all of it
un-marked), 2 damage found and not repaired, or the store cannot be read at all."""
from __future__ import annotations

import argparse
import logging
from typing import Sequence

import numpy as np

from extract.config import parse
from features.store import FACES, FeatureStore, StoreError, writer_lock

log = logging.getLogger(__name__)

EXIT_OK, EXIT_DAMAGED = 0, 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m extract verify", description="Check every unit of every backbone of a store; "
        "--repair marks the damaged ones for re-embedding (rerun the extract command afterwards).")
    parser.add_argument("--store", required=True, help="feature store path or fsspec URL")
    parser.add_argument("--repair", action="store_true", help="mark damaged units not done")
    parser.add_argument("--wait-lock", action="store_true",
                        help="with --repair, wait for a process writing a backbone instead of stopping")
    return parser


def main(argv: Sequence[str]) -> int:
    """Parse, verify, maybe repair; StoreError propagates to the extract CLI (one line, exit 2)."""
    args = parse(build_parser(), argv)
    store = FeatureStore.open(args.store, mode="r+" if args.repair else "r")
    store.ids, store.gender, store.split, store.attributes  # noqa: B018 - a damaged table raises here
    damaged = {name: store.entry(name).damaged_units() for name in store.entries()}
    for name, units in damaged.items():
        log.info("%s: %d of %d units damaged", name, len(units), store.entry(name).n_units)
    dependent = units_from_faces(store, damaged)
    for name, units in [*damaged.items(), *dependent.items()]:
        for unit, problem in units.items():
            print(f"{name} unit {unit}: {problem}")
    total = sum(len(units) for units in damaged.values())
    if not total:
        log.info("%s: no damage found in %d backbones", args.store, len(damaged))
        return EXIT_OK
    if not args.repair:
        log.error("error: %s has %d damaged units; run `python -m extract verify --store %s --repair`, then "
                  "the same extract command to re-embed them", args.store, total, args.store)
        return EXIT_DAMAGED
    for name in sorted(damaged.keys() | dependent.keys()):  # un-marked under each backbone's writer lock
        units = {*damaged.get(name, {}), *dependent.get(name, {})}  # a face backbone may have both
        if units:
            with writer_lock(store.path, name, wait=args.wait_lock):
                store.entry(name).unmark(sorted(units))
    log.info("%d damaged units marked not done; rerun the same extract command to re-embed exactly them",
             total)
    if dependent:
        log.info("and %d units of %s, embedded from the damaged face rows, marked not done: rerun the "
                 "extract command with %s too, or they stay incomplete",
                 sum(map(len, dependent.values())), ", ".join(dependent), " ".join(dependent))
    return EXIT_OK


def units_from_faces(store: FeatureStore, damaged: dict[str, dict[int, str]]) -> dict[str, dict[int, str]]:
    """For damaged face units: each face backbone's units holding those rows -> why they must be embedded
    again (their chips were cut at the damaged detections). Left out: units found damaged themselves, and
    units not done (they will be embedded anyway)."""
    face_units = damaged.get(FACES, {})
    if not face_units:
        return {}
    face_rows = int(store.backbone_attrs(FACES)["unit_rows"])
    rows = np.concatenate([np.arange(unit * face_rows, min((unit + 1) * face_rows, store.n_rows))
                           for unit in face_units])
    why = f"embedded from damaged face rows ({FACES} units {', '.join(map(str, sorted(face_units)))}): " \
          "embed again"
    dependent = {}
    for name in store.backbones():
        if "face_detection" not in (store.backbone_attrs(name)["metadata"].get("preprocessing") or {}):
            continue  # not a face backbone: its chips are not cut from the detection pass's faces
        try:
            pending = set(store.backbone_writer(name).pending_units())
        except StoreError:  # its done markers do not decode: listed as damage already, un-mark all
            pending = set()
        units = set((rows // int(store.backbone_attrs(name)["unit_rows"])).tolist())
        units -= pending | set(damaged.get(name, {}))
        if units:
            dependent[name] = {unit: why for unit in sorted(units)}
    return dependent
