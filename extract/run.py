"""Running `python -m extract` once its arguments are an `ExtractConfig`: open (or create) the store,
run the face detection pass when a face backbone needs it, then embed every backbone's pending units
(one process, or this rank's share under torchrun). Imports torch; `extract.cli` parses first."""
from __future__ import annotations

import contextlib
import functools
import json
import logging
from dataclasses import replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from extract import distributed
from extract.device_front import decodes_on_device
from extract.backbones import Backbone, BackboneSpec, load_backbone
from extract.config import CONFIG_KEY, CPU_BATCH, CUDA_BATCH, ExtractConfig
from extract.decode import header_size, read_image_file
from extract.detect import Alignment, FaceDetector, FaceLocator, detector_path, template_check
from extract.device import resolve_device
from extract.errors import expected_errors
from extract.face_row import FACE_DIM, SOURCE, SOURCE_DETECTED
from extract.images import configure_threads
from extract.pipeline import ExtractionInterrupted, RunStats, extract_units
from features.dataset import Dataset
from features.datasets import load_dataset
from features.cli import EXIT_INTERRUPTED, EXIT_OK
from features.provenance import sha256_file
from features.store import FACES, BackboneWriter, FeatureStore, Status, StoreError, writer_lock

log = logging.getLogger(__name__)
Faces = tuple[np.ndarray, np.ndarray]  # (face rows, status) of every row of the table


def extract(config: ExtractConfig, ranks: distributed.Ranks) -> int:
    """Open (or create) the store, then embed every backbone's pending units; the exit code."""
    device = resolve_device(config.device, local_rank=ranks.local_rank if ranks.distributed else None)
    full = load_dataset(config.dataset, config.root, seed=config.seed)
    dataset = limit_rows(full, config.limit)
    configure_threads(gpu=device.type == "cuda", workers=config.workers)  # workers + threads <= CPUs
    paths = [str(Path(dataset.root) / path) for path in dataset.paths]  # the table may hold them relative

    def load(name: str) -> Backbone:
        return load_backbone(name, weights=config.weights.get(name), device=device, precision=config.precision,
                             tta=config.tta)

    # --decode device must suit every backbone: each is loaded (once) and refused before the store is opened;
    # they are then held together until their turn (the sum of their weights, not the largest, in memory)
    loaded = {name: load(name) for name in config.backbones} if config.decode == "device" else {}
    for backbone in loaded.values():
        decodes_on_device(config.decode, backbone)
    with distributed.process_group(ranks, device):
        store = distributed.main_first(
            ranks, lambda: open_store(config.store, full, dataset),
            lambda: FeatureStore.open(config.store, mode="r+"), expected=expected_errors())
        if ranks.is_main:
            log.info("store %s: dataset %s, %d images", config.store, store.dataset_name, store.n_rows)
        faces = None  # the detection pass, run before the first face backbone
        for name in config.backbones:
            backbone = loaded.pop(name) if name in loaded else load(name)
            on_device = decodes_on_device(config.decode, backbone)
            if on_device and ranks.is_main:
                log.info("%s: JPEGs decoded and chips cut on %s (--decode %s)", name, backbone.device, config.decode)
            if backbone.uses_faces and faces is None:
                with backbone_lock(config, FACES, distributed=ranks.distributed):
                    faces = detect_faces(store, dataset, paths, config, ranks)
                if faces is None:
                    return EXIT_INTERRUPTED
            with backbone_lock(config, name, distributed=ranks.distributed):
                code = _extract_backbone(store, backbone, paths, config, ranks,
                                         faces=faces if backbone.uses_faces else None, decode_on_device=on_device)
            if code != EXIT_OK:
                return code
        return EXIT_OK


def face_pass(dataset: Dataset) -> Backbone:
    """The detection pass written like a backbone under the store's reserved FACES entry: one face row
    per image (`extract.faces`), shared by every face backbone of the run and of later runs."""
    alignment = Alignment.from_info(dataset.alignment)
    locator = FaceLocator(FaceDetector(), alignment)
    metadata = {"role": "faces", "weights": f"sha256:{sha256_file(detector_path())}",
                "weights_source": str(detector_path()), "preprocessing": locator.describe(),
                "columns": "box x, y, w, h; landmarks x0, y0 .. x4, y4 (right eye, left eye, nose, right "
                "and left mouth corner); score; source (1 detected, 2 dataset template); original pixels"}
    spec = BackboneSpec(FACES, FACE_DIM, (FACE_DIM,), factory=face_pass, engines=("opencv",))  # not registered
    return Backbone(spec=spec, input_shape=(FACE_DIM,), preprocessor=locator,
                    embed=lambda batch: batch.float(), device=torch.device("cpu"), uses_torch_device=False,
                    metadata=metadata, input_dtype="float32", runs_in_workers=True)


def detect_faces(store: FeatureStore, dataset: Dataset, paths: list[str], config: ExtractConfig,
                 ranks: distributed.Ranks) -> Faces | None:
    """Run (or resume) the detection pass; (face rows, status) of every row, None if interrupted."""
    # completeness first: store.faces() reads every chunk, and one that `verify --repair` un-marked may
    # not decode until it is detected again below
    done = FACES in store.entries() and store.is_complete(FACES)
    if not done:
        if _extract_backbone(store, face_pass(dataset), paths, config, ranks) != EXIT_OK:
            return None
        distributed.barrier(ranks)
    faces = store.faces()
    # aligned datasets: fallbacks and detection-vs-template distances, logged and recorded (also after a
    # run killed between its last detection unit and the check)
    if ranks.is_main and not (done and "template_check" in store.backbone_info(FACES)["metadata"]):
        record_template_check(store, faces, dataset.alignment, paths)
    return faces


def _extract_backbone(store: FeatureStore, backbone: Backbone, paths: list[str], config: ExtractConfig,
                      ranks: distributed.Ranks, *, faces: Faces | None = None,
                      decode_on_device: bool = False) -> int:
    """One backbone: add it (rank 0), embed this rank's pending units, summarise (rank 0)."""
    writer = distributed.main_first(
        ranks, lambda: add_backbone(store, backbone.name, dim=backbone.dim, metadata=backbone.metadata,
                                    config=config),
        lambda: store.backbone_writer(backbone.name), expected=expected_errors())
    pending = writer.pending_units()
    units = [unit for unit in pending if ranks.owns(unit)]
    if ranks.is_main:
        log.info("%s: %d of %d units to embed (%d done before)", backbone.name, len(pending),
                 writer.n_units, writer.n_units - len(pending))
    batch_size = config.batch_size or (CUDA_BATCH if backbone.device.type == "cuda" else CPU_BATCH)
    try:
        stats = extract_units(writer, backbone, paths, units, batch_size=batch_size, workers=config.workers,
                              progress=ranks.is_main and config.progress, faces=faces,
                              decode_on_device=decode_on_device)
    except ExtractionInterrupted:
        info = store.backbone_info(backbone.name)
        log.warning("interrupted: %s has %d of %d units done (kept); rerun the same command to resume",
                    backbone.name, info["units_done"], info["n_units"])
        return EXIT_INTERRUPTED
    all_stats = distributed.gather(ranks, stats)
    distributed.barrier(ranks)
    if ranks.is_main:
        info, total = store.backbone_info(backbone.name), functools.reduce(RunStats.add, all_stats)
        per_rank = f"; units per rank: {', '.join(str(s.units) for s in all_stats)}" if len(all_stats) > 1 else ""
        log.info("%s; store: %d of %d units done%s", total.summary(backbone.name), info["units_done"],
                 info["n_units"], per_rank)
    return EXIT_OK


# -- the store side ---------------------------------------------------------------------------------
def limit_rows(dataset: Dataset, limit: int | None) -> Dataset:
    """--limit: `limit` rows, each split keeping its share (in table order); all of it when None or larger.
    Not simply the first rows: CelebA's table is in split order, so those would all be train rows."""
    if limit is None or limit >= len(dataset):
        return dataset
    groups = [np.flatnonzero(dataset.split == code) for code in np.unique(dataset.split)]
    sizes = np.array([len(rows) for rows in groups])
    # Rounding the cumulative shares keeps every split within a row of its share and the total at limit.
    counts = np.diff(np.round(limit * np.cumsum(sizes) / sizes.sum()).astype(int), prepend=0)
    if limit >= len(groups):
        for empty in np.flatnonzero(counts == 0):  # a small split rounded to nothing: one row from the largest
            counts[np.argmax(counts)] -= 1
            counts[empty] = 1
    keep = np.sort(np.concatenate([rows[:k] for rows, k in zip(groups, counts)]))
    return replace(dataset, ids=dataset.ids[keep], paths=dataset.paths[keep],
                   gender=dataset.gender[keep], split=dataset.split[keep],
                   attributes={name: values[keep] for name, values in dataset.attributes.items()})


def open_store(path: str, full: Dataset, wanted: Dataset) -> FeatureStore:
    """The store for `wanted`, `full` under --limit; a store of the same dataset under another --limit is
    refused with a line that says so (a store holds one table, and its rows are indexed by it)."""
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
    held, pending = store.backbone_info(name), bool(writer.pending_units())
    _check_resumable(config.store, name, held["metadata"], metadata, pending=pending)
    if config.unit_rows not in (None, held["unit_rows"]) and pending:
        log.info("%s: resuming with the store's --unit-rows %d (not %d)", name, held["unit_rows"],
                 config.unit_rows)
    return writer


def _check_resumable(where: str, name: str, held: dict, asked: dict, *, pending: bool) -> None:
    """A StoreError when the entry held was made in a way that this run's rows would not match; also when
    no unit is pending (a finished entry made otherwise is not what this run asked for either)."""
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


def record_template_check(store, faces: Faces, alignment: dict | None, paths: Sequence[str]) -> None:
    """On an aligned dataset, after its detection pass (``faces``): log `template_check` over an evenly spaced
    sample of detected rows and record it in the faces entry's metadata (``template_check``)."""
    known = Alignment.from_info(alignment)
    if known.kind == "wild":
        return
    rows, status = faces
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
