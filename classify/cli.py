"""Command line: ``python -m classify {train,compare,errors,predict,evaluate,audit-labels,report}``; each
command's flags: ``python -m classify COMMAND --help`` (`build_parser`), walked through in docs/stages.md.
The CLI only parses and prints; the work is library functions. Exit codes: `features.cli` (2 and one line
for `EXPECTED_ERRORS`: a bad store, unknown backbone or head, missing files, a modified or malformed head file).
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from classify import evaluate, label_audit
from classify.calibration import CalibrationError
from classify.compare import CompareError, compare, recommend
from classify.decision import CALIBRATE_CHOICES
from classify.errors import write_error_csv, write_errors_for
from classify.heads import head_names
from classify.images import PredictError
from classify.model import GenderModel
from classify.predict import format_predictions, write_predictions
from classify.protocol import ProtocolError
from classify.results import HeadFileError, load_results
from classify.train import TrainSettings, resolve_backbones, train
from classify.treatment import TREATMENTS
from features import atomic
from features.cli import UsageError, run_cli
from features.jsonfile import dumps
from features.store import FeatureStore, StoreError

log = logging.getLogger(__name__)

# Plain ValueError is not here: one from inside numpy or a head is a bug and keeps its traceback.
EXPECTED_ERRORS = (StoreError, HeadFileError, ProtocolError, CompareError, PredictError, OSError,
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
    comp = sub.add_parser("compare", help="merge a results directory into a leaderboard and plots (it reads "
                          "the error lists train wrote, never recomputes them)")
    comp.add_argument("directory", type=Path)
    comp.add_argument("--demo", action="store_true", help=DEMO_HELP)
    errs = sub.add_parser("errors", help="the recommended run's wrong and unusable test rows, with label "
                          "checks (errors.json/.csv; train does this before compare)")
    errs.add_argument("directory", type=Path)
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


def cmd_train(args: argparse.Namespace) -> None:
    markdown, paths = train(TrainSettings(
        stores=tuple(args.stores), out=args.out, eval_stores=tuple(args.eval_stores),
        backbones=None if args.backbones is None else tuple(args.backbones),
        heads=None if args.heads is None else tuple(args.heads), treatments=tuple(args.treatments),
        calibrate=args.calibrate, threshold=args.threshold, min_group_n=args.min_group_n, seed=args.seed,
        n_resamples=args.bootstrap, balance_by=args.balance_by, demo=args.demo))
    print(markdown, end="")
    log.info("wrote %s", ", ".join(str(p) for p in paths))


def cmd_compare(args: argparse.Namespace) -> None:
    markdown, paths = compare(args.directory, demo=args.demo)
    print(markdown, end="")
    log.info("wrote %s", ", ".join(str(p) for p in paths))


def cmd_errors(args: argparse.Namespace) -> None:
    runs = load_results(args.directory)
    if not runs:
        raise CompareError(f"no classify results files (*.json) in {args.directory}")
    paths, _ = write_errors_for(recommend(runs), args.directory)
    log.info("wrote %s", ", ".join(str(p) for p in paths) or "nothing")


def cmd_predict(args: argparse.Namespace) -> None:
    predictions = GenderModel.load(args.head).predict_images(args.images, all_faces=args.all_faces,
                                                             device=args.device)
    print(format_predictions(predictions, faces=args.all_faces))
    if args.out:
        write_predictions(predictions, args.out)
        log.info("wrote %s", args.out)


def cmd_evaluate(args: argparse.Namespace) -> None:
    if args.bootstrap < 1:
        raise UsageError(f"--bootstrap must be a positive number of resamples, not {args.bootstrap}")
    result = evaluate.evaluate_head(args.head, args.store, n_resamples=args.bootstrap, seed=args.seed,
                                    all_rows=args.all_rows, errors=args.errors is not None)
    print(evaluate.summary(result))
    if args.errors:
        write_error_csv(result["errors"], result["rejected"], args.errors)
        log.info("wrote %s", args.errors)
    if args.out:
        atomic.write_text(args.out, dumps(result))
        log.info("wrote %s", args.out)


def cmd_audit_labels(args: argparse.Namespace) -> None:
    store = FeatureStore.open(args.store)
    # "a b" and "a+b" alike: one concatenation, each backbone in the store and complete
    backbones = resolve_backbones(store, ["+".join(args.backbones)])[0] if args.backbones else ()
    doubts = label_audit.store_doubts(store, backbones, seed=args.seed)
    rows = label_audit.audit_store(store, doubts)
    print(label_audit.audit_text(store, rows, backbones), end="")
    if args.out:
        label_audit.write_audit(rows, args.out)
        log.info("wrote %s", args.out)


def cmd_report(args: argparse.Namespace) -> None:
    from classify.report import write_reports  # matplotlib and the thumbnails: only when reporting

    paths = write_reports(args.store, args.results, args.out, demo=args.demo)
    log.info("wrote %s", ", ".join(str(p) for p in paths))


COMMANDS = {"train": cmd_train, "compare": cmd_compare, "errors": cmd_errors, "predict": cmd_predict,
            "evaluate": cmd_evaluate, "audit-labels": cmd_audit_labels, "report": cmd_report}


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m classify``; returns the exit code."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s", datefmt="%H:%M:%S")
    return run_cli(lambda: COMMANDS[args.command](args) or 0, expected=EXPECTED_ERRORS)  # a command that returns: 0
