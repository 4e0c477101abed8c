"""Running `python -m extract` once its arguments are an `ExtractConfig`: open (or create) the store,
run the face detection pass when a face backbone needs it, then embed every backbone's pending units
(one process, or this rank's share under torchrun). Imports torch; `extract.cli` parses first."""
from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np
import torch

from extract import distributed
from extract.device_front import decodes_on_device
from extract.backbones import Backbone, BackboneSpec, load_backbone
from extract.config import ExtractConfig, batch_size
from extract.device import resolve_device
from extract.errors import expected_errors
from extract.images import configure_threads
from extract.pipeline import ExtractionInterrupted, RunStats, extract_units
from extract.storage import add_backbone, backbone_lock, limit_rows, open_store, record_template_check
from features.dataset import Dataset
from features.datasets import load_dataset
from features.cli import EXIT_INTERRUPTED, EXIT_OK
from features.provenance import sha256_file
from features.store import FACES, FeatureStore

log = logging.getLogger(__name__)
Faces = tuple[np.ndarray, np.ndarray]  # (face rows, status) of every row of the table


def extract(config: ExtractConfig, ranks: distributed.Ranks) -> int:
    """Open (or create) the store, then embed every backbone's pending units; the exit code."""
    device = resolve_device(config.device, local_rank=ranks.local_rank if ranks.distributed else None)
    full = load_dataset(config.dataset, config.root, seed=config.seed)
    dataset = limit_rows(full, config.limit)
    configure_threads(gpu=device.type == "cuda", workers=config.workers)  # workers + threads <= CPUs
    paths = [str(Path(dataset.root) / path) for path in dataset.paths]  # the table may hold them relative
    if config.decode == "device":  # must suit every backbone: refused before the store is opened, not later
        for name in config.backbones:
            decodes_on_device(config.decode, load_backbone(name, weights=config.weights.get(name), device=device,
                                                           precision=config.precision, tta=config.tta))
    with distributed.process_group(ranks, device):
        store = distributed.main_first(
            ranks, lambda: open_store(config.store, full, config.limit),
            lambda: FeatureStore.open(config.store, mode="r+"), expected=expected_errors())
        if ranks.is_main:
            log.info("store %s: dataset %s, %d images", config.store, store.dataset_name, store.n_rows)
        return _extract_backbones(store, dataset, paths, config, ranks, device)


def _extract_backbones(store: FeatureStore, dataset: Dataset, paths: list[str], config: ExtractConfig,
                       ranks: distributed.Ranks, device: torch.device) -> int:
    """Each backbone of the run in turn, after the detection pass the first face backbone needs."""
    faces = None
    for name in config.backbones:
        backbone = load_backbone(name, weights=config.weights.get(name), device=device,
                                 precision=config.precision, tta=config.tta)
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
    from extract.detect import Alignment, FaceDetector, FaceLocator, detector_path
    from extract.face_row import FACE_DIM

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
    # aligned datasets: fallbacks and detection-vs-template distances, logged and recorded (also after a
    # run killed between its last detection unit and the check)
    if ranks.is_main and not (done and "template_check" in store.backbone_info(FACES)["metadata"]):
        record_template_check(store, dataset.alignment, paths)
    return store.faces()


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
    try:
        stats = extract_units(writer, backbone, paths, units,
                              batch_size=batch_size(config.batch_size, backbone.device.type),
                              workers=config.workers, progress=ranks.is_main and config.progress, faces=faces,
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
