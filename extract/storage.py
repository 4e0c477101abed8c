"""The store side of a run: the dataset under --limit (`limit_rows`), open (or create) its store, add a
backbone's entry, or take the existing one when it was made the same way (resume); after the detection pass of an
aligned dataset, record how its detections agree with the known template."""
from __future__ import annotations

import contextlib
import json
import logging
from dataclasses import replace
from typing import Sequence

import numpy as np

from extract.config import CONFIG_KEY, ExtractConfig
from features.dataset import Dataset
from extract.face_row import SOURCE, SOURCE_DETECTED
from features.store import FACES, BackboneWriter, FeatureStore, Status, StoreError, writer_lock

log = logging.getLogger(__name__)


def limit_rows(dataset: Dataset, limit: int | None) -> Dataset:
    """--limit: `limit` rows, each split keeping its share (in table order); all of it when None or larger.
    Not simply the first rows: CelebA's table is in split order, so those would all be train rows."""
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


def open_store(path: str, full: Dataset, limit: int | None) -> FeatureStore:
    """The store for `full` limited to `limit` rows; a store of the same dataset under another
    --limit is refused with a line that says so (a store holds one table, and its rows are indexed
    by it)."""
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
    try:
        store = FeatureStore.open(path)
    except StoreError:
        return None
    return store.n_rows if store.fingerprint == limit_rows(full, store.n_rows).fingerprint() else None


def _limited(rows: int, total: int) -> str:
    return f"limited to {rows} of its {total} images (--limit {rows})" if rows < total else \
        f"whole ({total} images, no --limit)"


def add_backbone(store: FeatureStore, name: str, *, dim: int, metadata: dict,
                 config: ExtractConfig) -> BackboneWriter:
    """Room for backbone `name` in the store, or its existing entry when resuming with the same setup;
    the run's config is saved with it (not compared: other workers or batch sizes may resume)."""
    metadata = {"precision": config.precision, **metadata, CONFIG_KEY: config.record()}
    dtype = "float32" if name == FACES else config.dtype  # face rows are pixel coordinates
    unit_rows = {} if config.unit_rows is None else {"unit_rows": config.unit_rows}
    writer = store.add_backbone(name, dim=dim, dtype=dtype, metadata=metadata, **unit_rows)
    held = store.backbone_info(name)
    _check_resumable(config.store, name, held["metadata"], metadata, pending=bool(writer.pending_units()))
    if config.unit_rows not in (None, held["unit_rows"]) and writer.pending_units():
        log.info("%s: resuming with the store's --unit-rows %d (not %d)", name, held["unit_rows"],
                 config.unit_rows)
    return writer


def _check_resumable(where: str, name: str, held: dict, asked: dict, *, pending: bool) -> None:
    """A StoreError when the entry held was made in a way that this run's rows would not match. Checked
    whether or not units are pending: a finished entry made otherwise is not what this run asked for
    (``pending`` only decides whether the message speaks of resuming)."""
    action = "resume" if pending else "reuse"
    if held.get("tta", "none") != asked.get("tta", "none") and name != FACES:
        raise StoreError(f"{where} holds {name!r} made with --tta {held.get('tta', 'none')}, not "
                         f"{asked.get('tta', 'none')}; use another --store for these embeddings, or "
                         f"--tta {held.get('tta', 'none')} (the store's) to {action} it")
    if held.get("preprocessing") != json.loads(json.dumps(asked.get("preprocessing"))):
        raise StoreError(f"{where} holds {name!r} made with another face front end or preprocessing (it "
                         "differs from this version's); use another --store to extract it again")
    if held.get("precision") != asked["precision"] and name != FACES:
        raise StoreError(f"{where} holds {name!r} embedded at precision {held.get('precision')}, not "
                         f"{asked['precision']}; use another --store for these embeddings, or "
                         f"--precision {held.get('precision')} (the store's) to {action} it")


def backbone_lock(config: ExtractConfig, name: str, *, distributed: bool):
    """One writer per backbone (and per detection pass); torchrun ranks write disjoint units, no lock."""
    return contextlib.nullcontext() if distributed else writer_lock(config.store, name, wait=config.wait_lock)


# -- the aligned-dataset check ----------------------------------------------------------------------
TEMPLATE_CHECK_SAMPLE = 2000  # detected rows whose image size is read (header only) to measure distances


def record_template_check(store, alignment: dict | None, paths: Sequence[str]) -> dict | None:
    """On an aligned dataset, after its detection pass: log and record in the faces entry's metadata
    (``template_check``) how many rows fell back to the known template, and how far detected landmarks
    lie from it (median and 95th percentile over an evenly spaced sample of detected rows). None, and
    nothing recorded, for a wild dataset."""
    from extract.decode import header_size, read_image_file  # cv2: only on an aligned dataset
    from extract.detect import Alignment, template_check

    known = Alignment.from_info(alignment)
    if known.kind == "wild":
        return None
    rows, status = store.faces()
    detected = np.flatnonzero((status == Status.OK) & (rows[:, SOURCE] == SOURCE_DETECTED))
    spaced = np.linspace(0, len(detected) - 1, min(TEMPLATE_CHECK_SAMPLE, len(detected))).astype(int)
    chosen = detected[np.unique(spaced)]
    sizes = {int(r): header_size(read_image_file(paths[r]))[1:] for r in chosen}  # (width, height), not decoded
    summary = template_check(rows, status, known, sizes)
    store.update_metadata(FACES, {"template_check": summary})
    px = summary["landmark_distance_px"]
    log.info("%s: aligned dataset (%s): %d of %d valid rows fell back to the template; detected landmarks "
             "lie %s px from it (median; 95th percentile %s px; %d rows checked)", FACES, known.kind,
             summary["template_fallback_rows"], summary["valid_rows"], px["median"], px["p95"],
             summary["checked_sample"])
    return summary
