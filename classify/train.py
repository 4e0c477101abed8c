"""Train (``python -m classify train``): every (backbone set, head) run on the stores, its results file and
model, then the error lists of the recommended run and the leaderboard.

Each backbone set's rows (training and eval stores) are read once for all its heads. A run's older error
lists are removed before its head is replaced (they would describe the old head); the recommended run's
are computed here, where the scores are, and compare only reads them.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

from classify import errors, protocol
from classify.calibration import parse_threshold
from classify.compare import compare, recommend
from classify.decision import parse_calibrate
from classify.heads import get_head_class, head_names
from classify.metrics import fmt
from classify.protocol import RunConfig, read_eval_set, read_training, run
from classify.results import load_results, run_name, store_identity, write_run
from classify.treatment import TREATMENTS
from features.cli import UsageError
from features.store import FeatureStore, StoreError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainSettings:
    """What ``classify train`` was asked: stores, the runs to make, the protocol's options, the folder."""

    stores: tuple[str, ...]
    out: Path
    eval_stores: tuple[str, ...] = ()
    backbones: tuple[str, ...] | None = None  # specs ("a", "a+b"); None: every complete backbone
    heads: tuple[str, ...] | None = None  # None: every registered head
    treatments: tuple[str, ...] = TREATMENTS
    calibrate: str = "auto"
    threshold: str = "0.5"
    min_group_n: int = 30
    seed: int = 0
    n_resamples: int = 1000
    balance_by: str | None = None
    demo: bool = False

    def check(self) -> None:
        """UsageError (or CalibrationError) for a value that names nothing valid, before any store is read."""
        if self.n_resamples < 1:
            raise UsageError(f"--bootstrap must be a positive number of resamples, not {self.n_resamples}")
        if self.min_group_n < 1:
            raise UsageError(f"--min-group-n must be a positive number of rows, not {self.min_group_n}")
        parse_threshold(self.threshold)
        parse_calibrate(self.calibrate)
        for name in self.heads or ():
            try:
                get_head_class(name)
            except ValueError as error:
                raise UsageError(str(error)) from None


def train(settings: TrainSettings) -> tuple[str, list[Path]]:
    """Every run of ``settings``, its error lists and the leaderboard: (markdown, written paths)."""
    settings.check()
    stores = [FeatureStore.open(path) for path in dict.fromkeys(settings.stores)]
    eval_stores = [FeatureStore.open(path) for path in dict.fromkeys(settings.eval_stores)]
    heads = list(dict.fromkeys(settings.heads or head_names()))
    training = [store_identity(store) for store in stores]
    # per eval store, the same for every backbone set: its label, identity and the photos training saw
    labels = eval_labels(eval_stores, tuple(s.dataset_name for s in stores))
    identities = [store_identity(store) for store in eval_stores]
    seen = [protocol.seen_ids(stores, store.dataset_name) for store in eval_stores]
    shared = dict(stores=tuple(s.path for s in stores), eval_stores=tuple(s.path for s in eval_stores),
                  seed=settings.seed, n_resamples=settings.n_resamples, treatments=tuple(settings.treatments),
                  calibrate=settings.calibrate, threshold=settings.threshold, min_group_n=settings.min_group_n,
                  balance_by=settings.balance_by)  # every run's `RunConfig` but its backbones and head
    for backbones in resolve_backbones(stores[0], settings.backbones):
        started = time.perf_counter()
        data = read_training(stores, backbones)
        evals = [read_eval_set(store, backbones, data.reference, label=label, identity=identity, seen=ids)
                 for store, label, identity, ids in zip(eval_stores, labels, identities, seen)]
        read_s = round(time.perf_counter() - started, 3)
        log.debug("%s: read %s rows in %.1f s", "+".join(backbones),
                  {s: len(d.gender) for s, d in data.splits.items()}, read_s)
        for head_name in heads:
            config = RunConfig(backbones=backbones, head=head_name, **shared)
            model, results = run(config, data, evals)
            results["timings"]["read_s"] = read_s
            errors.forget(settings.out, run_name(config))
            write_run(settings.out, config, model, results, store_info=store_identity(stores[0], backbones),
                      training_stores=training)
            log.info("%s", run_line(config, results))
    return finish(settings.out, demo=settings.demo)


def finish(directory: Path, *, demo: bool = False) -> tuple[str, list[Path]]:
    """The recommended run's error lists, then the leaderboard of ``directory``."""
    runs = load_results(directory)
    written = errors.write_errors_for(recommend(runs), directory)[0] if runs else []
    markdown, paths = compare(directory, demo=demo)
    return markdown, paths + written


def resolve_backbones(store: FeatureStore, specs) -> list[tuple[str, ...]]:
    """Backbone tuples to run; each must be in the store and complete."""
    if not specs:
        complete = [name for name in store.backbones() if store.is_complete(name)]
        if not complete:
            held = ", ".join(store.backbones()) or "none"
            raise StoreError(f"{store.path} has no complete backbone to train on (it holds: {held})")
        return [(name,) for name in complete]
    resolved = [tuple(spec.split("+")) for spec in dict.fromkeys(specs)]
    for names in resolved:
        if not all(names) or len(set(names)) != len(names):
            raise UsageError(f"bad backbone spec {'+'.join(names)!r}: expected names joined by '+', each once")
    held = store.backbones()  # not the store's reserved entries (`_faces`: the detections, no embedding)
    for name in sorted({name for names in resolved for name in names}):
        if name not in held:
            raise StoreError(f"{store.path} has no backbone {name!r}; it holds: {', '.join(held) or 'none'}")
        if not store.is_complete(name):
            info = store.backbone_info(name)
            raise StoreError(f"backbone {name!r} in {store.path} is incomplete ({info['units_done']} of "
                             f"{info['n_units']} units): finish extraction first")
    return resolved


def eval_labels(stores: list[FeatureStore], trained_on: tuple[str, ...]) -> list[str]:
    """A label per eval store: its dataset name, with the store's file name added when another eval
    store or a training store has the same dataset name (CelebA's in-the-wild photos beside CelebA)."""
    names = [store.dataset_name for store in stores]
    labels = [name if names.count(name) == 1 and name not in trained_on else f"{name}:{Path(store.path).stem}"
              for name, store in zip(names, stores)]
    # two stores of one dataset with one file name (x/ev.zarr, y/ev.zarr): numbered, never merged
    return [label if labels[:i].count(label) == 0 else f"{label}#{labels[:i].count(label) + 1}"
            for i, label in enumerate(labels)]


def run_line(config: RunConfig, results: dict) -> str:
    """One line per run: the choice made, on what, and the numbers reported."""
    val, test = results["metrics"]["val"], results["metrics"]["test"]
    threshold = results["decision"]["threshold"]
    line = (f"{config.backbone_spec} + {config.head}: treatment {results['treatment']['chosen']['name']}, "
            f"val accuracy {val['accuracy']:.4f} (the selection criterion), test accuracy {test['accuracy']:.4f} "
            f"(balanced {fmt(test['groups']['summary']['balanced_accuracy'])}, worst group "
            f"{fmt((test['groups']['summary']['worst_group'] or {}).get('accuracy'))}, ECE "
            f"{test['calibration']['after']['ece']:.4f}; calibrator {results['decision']['calibrator']['method']}, "
            f"threshold {threshold['value']:.4f} ({threshold['rule']}))")
    for label, cross in results["cross_dataset"].items():
        report = cross["report"]
        line += f"; {label} {cross['rows']} accuracy {report['accuracy']:.4f}"
        if "adults" in report:
            line += f" (aged >= {report['adults']['min_age']}: {report['adults']['accuracy']:.4f})"
    return line
