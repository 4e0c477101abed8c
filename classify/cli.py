"""Command line: ``python -m classify {train,compare,predict,evaluate,audit-labels,report}``.

    python -m classify train --store S.zarr [--store T.zarr] [--eval-store U.zarr ...] [--backbones a b a+b]
                             [--heads logreg mlp] [--treatments none l2] [--calibrate auto|none|METHOD]
                             [--threshold 0.5|balanced|VALUE] [--balance-by ATTRIBUTE] --out DIR [--seed 0] [-v]
    python -m classify compare DIR
    python -m classify predict --head DIR/<run>.npz IMAGE_OR_FOLDER... [--out preds.csv] [--all-faces]
    python -m classify evaluate --head DIR/<run>.npz --store U.zarr [--all-rows] [--out result.json]
                                [--errors errors.csv]
    python -m classify audit-labels --store S.zarr [--backbones a b] [--out doubts.csv]
    python -m classify report --store S.zarr --results DIR --out report.html [--demo]

Several ``--store``: their train splits are pooled (`classify.protocol` step 7). ``--eval-store``: every
run is also evaluated on that store (step 8). ``--calibrate`` and
``--threshold``: the decision after the head (`classify.decision`), chosen on val, recorded with the head
and applied by predict and evaluate. ``train`` prints one line per run; ``-v`` adds the per-C
and per-epoch lines with the criterion each choice is made on.

Expected errors (bad store, unknown backbone or head, missing files, a modified head file) end with one
line on stderr and exit code 2.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

from classify import evaluate, label_audit, protocol
from classify.calibration import CalibrationError, parse_threshold
from classify.compare import CompareError, compare, fmt
from classify.decision import CALIBRATE_CHOICES
from classify.heads import get_head_class, head_names
from classify.predict import PredictError, format_predictions, predict_images, write_predictions
from classify.protocol import ProtocolError, RunConfig, parse_backbone_spec, read_eval_set, read_training, run
from classify.results import HeadFileError, jsonable, store_identity, write_run
from classify.treatment import TREATMENTS
from features.store import FeatureStore, StoreError

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """A command-line value that names nothing valid (unknown head, malformed backbone spec)."""


# Plain ValueError is not here: one from inside numpy or a head is a bug and keeps its traceback.
EXPECTED_ERRORS = (StoreError, HeadFileError, ProtocolError, CompareError, PredictError, UsageError, OSError,
                   CalibrationError, label_audit.LabelAuditError)


DEMO_HELP = "the store holds generated demo data: mark the results folder and everything compare writes"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m classify", description="Train gender heads on stored "
                                     "backbone features, compare them, and predict new images.")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fit heads on a feature store, one results file per run")
    train.add_argument("--store", required=True, action="append", dest="stores", metavar="STORE",
                       help="feature store (.zarr); repeat to pool the train splits of several stores")
    train.add_argument("--eval-store", action="append", default=[], dest="eval_stores", metavar="STORE",
                       help="also evaluate every run on this store's rows (cross-dataset); repeatable")
    train.add_argument("--treatments", nargs="+", choices=TREATMENTS, default=list(TREATMENTS),
                       help="feature treatments tried like a hyperparameter (default: all)")
    train.add_argument("--balance-by", metavar="ATTRIBUTE", help="weight the training rows so that this binary "
                       "attribute of the store (e.g. CelebA's Young) is independent of gender, so the head cannot "
                       "learn it as a cue for gender; rows without it get it predicted (see classify/balance.py)")
    train.add_argument("--backbones", nargs="+", metavar="SPEC",
                       help="backbones, or several joined by '+' (default: every complete backbone)")
    train.add_argument("--heads", nargs="+", default=None, help=f"heads (default: all of {', '.join(head_names())})")
    train.add_argument("--out", required=True, type=Path, help="results directory")
    train.add_argument("--calibrate", default="auto", choices=CALIBRATE_CHOICES,
                       help="post-hoc calibration of p(male), fitted on val: auto (default: the method with the "
                       "best cross-validated val log loss, 'none' included), none, or one method")
    train.add_argument("--threshold", default="0.5", help="decision threshold on the calibrated p(male): 0.5 "
                       "(default), balanced (chosen on val to equalise male and female recall), or a value in (0, 1)")
    train.add_argument("--min-group-n", type=int, default=30,
                       help="groups with fewer rows are reported as too small, left out of the summaries")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    train.add_argument("--demo", action="store_true", help=DEMO_HELP)
    comp = sub.add_parser("compare", help="merge a results directory into a leaderboard and plots")
    comp.add_argument("directory", type=Path)
    comp.add_argument("--demo", action="store_true", help=DEMO_HELP)
    pred = sub.add_parser("predict", help="gender of images with a saved head")
    pred.add_argument("--head", required=True, type=Path, help="a <run>.npz written by train")
    pred.add_argument("images", nargs="+", help="image files or folders")
    pred.add_argument("--out", type=Path, help="CSV file for the predictions")
    pred.add_argument("--device", default="auto", help="device for the backbone (auto, cpu, cuda)")
    pred.add_argument("--all-faces", action="store_true", help="one prediction per face found, with its "
                      "box (x, y, w, h in the image's pixels); default: the largest face of each image")
    ev = sub.add_parser("evaluate", help="a saved head on another store's features (no backbone runs)")
    ev.add_argument("--head", required=True, type=Path, help="a <run>.npz written by train")
    ev.add_argument("--store", required=True, help="feature store (.zarr) with the head's backbones")
    ev.add_argument("--out", type=Path, help="JSON file for the full metrics")
    ev.add_argument("--all-rows", action="store_true", help="report on every row of the store, all splits "
                    "(a dataset the head never saw; refused for a store it was trained on)")
    ev.add_argument("--errors", type=Path, help="CSV file for the wrong and the unusable rows, most confident "
                    "first, each with its label checks (identity, and a cross-validated head on the store's own "
                    "labels: `audit-labels`)")
    ev.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the CIs")
    ev.add_argument("--seed", type=int, default=0)
    audit = sub.add_parser("audit-labels", help="labels that most other images of the same identity, or a "
                           "cross-validated head on the store's own labels, contradict")
    audit.add_argument("--store", required=True, help="feature store (.zarr)")
    audit.add_argument("--backbones", nargs="+", default=(), help="also check every label against a head fitted "
                       "on the other folds of these backbones' features (concatenated)")
    audit.add_argument("--out", type=Path, help="CSV file for the doubted rows")
    audit.add_argument("--seed", type=int, default=0, help="seed of the cross-validation folds")
    rep = sub.add_parser("report", help="the HTML report of a results folder (and the Markdown one beside it)")
    rep.add_argument("--store", required=True, help="the feature store the runs were trained on")
    rep.add_argument("--results", required=True, type=Path, help="a `classify train` output folder")
    rep.add_argument("--out", required=True, type=Path, help="the HTML file to write (FILE.md is written beside)")
    rep.add_argument("--demo", action="store_true", help="mark the reports as made on generated demo data")
    return parser


def resolve_backbones(store: FeatureStore, specs: list[str] | None) -> list[tuple[str, ...]]:
    """Backbone tuples to run; each must be in the store and complete."""
    if not specs:
        complete = [name for name in store.backbones() if store.is_complete(name)]
        if not complete:
            held = ", ".join(store.backbones()) or "none"
            raise StoreError(f"{store.path} has no complete backbone to train on (it holds: {held})")
        return [(name,) for name in complete]
    try:
        resolved = [parse_backbone_spec(spec) for spec in dict.fromkeys(specs)]
    except ValueError as error:
        raise UsageError(str(error)) from None
    held = store.backbones()  # not the store's reserved entries (`_faces`: the detections, no embedding)
    for name in sorted({name for names in resolved for name in names}):
        if name not in held:
            raise StoreError(f"{store.path} has no backbone {name!r}; it holds: {', '.join(held) or 'none'}")
        if not store.is_complete(name):
            info = store.backbone_info(name)
            raise StoreError(f"backbone {name!r} in {store.path} is incomplete ({info['units_done']} of "
                             f"{info['n_units']} units): finish extraction first")
    return resolved


def cmd_train(args: argparse.Namespace) -> int:
    if args.bootstrap < 1:
        raise UsageError(f"--bootstrap must be a positive number of resamples, not {args.bootstrap}")
    parse_threshold(args.threshold)  # a bad value stops before any store is read
    if args.min_group_n < 1:
        raise UsageError(f"--min-group-n must be a positive number of rows, not {args.min_group_n}")
    stores = [FeatureStore.open(path) for path in dict.fromkeys(args.stores)]
    eval_stores = [FeatureStore.open(path) for path in dict.fromkeys(args.eval_stores)]
    heads = list(dict.fromkeys(args.heads or head_names()))
    for name in heads:
        try:
            get_head_class(name)
        except ValueError as error:
            raise UsageError(str(error)) from None
    training = [store_identity(store) for store in stores]
    # per eval store, the same for every backbone set: its label, identity and the photos training saw
    labels = eval_labels(eval_stores, tuple(s.dataset_name for s in stores))
    identities = [store_identity(store) for store in eval_stores]
    seen = [protocol.seen_ids(stores, store.dataset_name) for store in eval_stores]
    for backbones in resolve_backbones(stores[0], args.backbones):
        started = time.perf_counter()
        data = read_training(stores, backbones)
        reference = {name: protocol.compatibility(stores[0], name) for name in backbones}
        evals = [read_eval_set(store, backbones, reference, label=label, identity=identity, seen=ids)
                 for store, label, identity, ids in zip(eval_stores, labels, identities, seen)]
        read_s = round(time.perf_counter() - started, 3)
        log.debug("%s: read %s rows in %.1f s", "+".join(backbones),
                  {s: len(d.gender) for s, d in data.splits.items()}, read_s)
        for head_name in heads:
            config = RunConfig(stores=tuple(s.path for s in stores), backbones=backbones, head=head_name,
                               seed=args.seed, n_resamples=args.bootstrap, treatments=tuple(args.treatments),
                               eval_stores=tuple(s.path for s in eval_stores), calibrate=args.calibrate,
                               threshold=args.threshold, min_group_n=args.min_group_n, balance_by=args.balance_by)
            model, results = run(config, data, evals)
            results["timings"]["read_s"] = read_s
            write_run(args.out, config, model, results, store_info=store_identity(stores[0], backbones),
                      training_stores=training)
            log.info("%s", run_line(config, results))
    return cmd_compare(argparse.Namespace(directory=args.out, demo=args.demo))


def eval_labels(stores: list[FeatureStore], trained_on: tuple[str, ...] = ()) -> list[str]:
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
    line = (f"{config.backbone_spec} + {config.head}: treatment {results['treatment']['chosen']['name']}, "
            f"val accuracy {val['accuracy']:.4f} (the selection criterion), test accuracy {test['accuracy']:.4f} "
            f"(balanced {fmt(test['groups']['summary']['balanced_accuracy'])}, worst group "
            f"{fmt((test['groups']['summary']['worst_group'] or {}).get('accuracy'))}, ECE "
            f"{test['calibration']['after']['ece']:.4f}; {decision_text(results['decision'])})")
    for label, cross in results["cross_dataset"].items():
        report = cross["report"]
        line += f"; {label} {cross['rows']} accuracy {report['accuracy']:.4f}"
        if "adults" in report:
            line += f" (aged >= {report['adults']['min_age']}: {report['adults']['accuracy']:.4f})"
    return line


def decision_text(decision: dict) -> str:
    threshold = decision["threshold"]
    return f"calibrator {decision['calibrator']['method']}, threshold {threshold['value']:.4f} ({threshold['rule']})"


def cmd_compare(args: argparse.Namespace) -> int:
    markdown, paths = compare(args.directory, demo=args.demo)
    print(markdown, end="")
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    predictions = predict_images(args.head, args.images, device=args.device, all_faces=args.all_faces)
    print(format_predictions(predictions, faces=args.all_faces))
    if args.out:
        write_predictions(predictions, args.out)
        log.info("wrote %s", args.out)
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    if args.bootstrap < 1:
        raise UsageError(f"--bootstrap must be a positive number of resamples, not {args.bootstrap}")
    result = evaluate.evaluate_head(args.head, args.store, n_resamples=args.bootstrap, seed=args.seed,
                                    all_rows=args.all_rows, errors=args.errors is not None)
    print(evaluate.summary(result))
    if args.errors:
        from classify.errors import write_error_csv

        write_error_csv(result["errors"], result["rejected"], args.errors)
        log.info("wrote %s", args.errors)
    if args.out:
        args.out.write_text(json.dumps(jsonable(result), indent=1, allow_nan=False))
        log.info("wrote %s", args.out)
    return 0


def cmd_audit_labels(args: argparse.Namespace) -> int:
    store = FeatureStore.open(args.store)
    # "a b" and "a+b" alike: one concatenation, each backbone in the store and complete
    backbones = resolve_backbones(store, ["+".join(args.backbones)])[0] if args.backbones else ()
    doubts = label_audit.store_doubts(store, backbones, seed=args.seed)
    rows = label_audit.audit_store(store, doubts)
    print(label_audit.audit_text(store, rows, backbones), end="")
    if args.out:
        label_audit.write_audit(rows, args.out)
        log.info("wrote %s", args.out)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from classify.report import write_reports  # matplotlib and the error analysis: only when reporting

    paths = write_reports(args.store, args.results, args.out, demo=args.demo)
    log.info("wrote %s", ", ".join(str(p) for p in paths))
    return 0


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "predict": cmd_predict, "evaluate": cmd_evaluate,
            "audit-labels": cmd_audit_labels, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m classify``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    try:
        return COMMANDS[args.command](args)
    except EXPECTED_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
