"""The reports of a trained results folder: ``python -m classify report --store S --results DIR --out R.html``.

The self-contained HTML report (`classify.html_report`) at ``--out`` and the Markdown one beside it (``.md``),
from a feature store and a `classify train` results folder (version 3; sections: docs/stages.md). Nothing is
refitted; the error galleries are train's errors.json, computed here only where it is missing or of another
head. Imports neither torch nor extract.
"""
from __future__ import annotations

import logging
import os
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from classify.compare import DEMO_MARKER, DEMO_TITLE, Choice, choose, leaderboard
from classify.errors import error_analysis, read_error_file
from classify.html_report import write_html
from classify.images import status_text
from classify.label_audit import count_doubted, doubt_note
from classify.metrics import fmt
from classify.results import HeadFileError, RunResult, Scores, library_versions, load_results
from features import atomic
from features.dataset import SPLITS
from features.store import FeatureStore, Status, StoreError

log = logging.getLogger(__name__)

PLOTS = (("Accuracy on all test images with 95% bootstrap intervals, in val-ranking order", "accuracy.png"),
         ("ROC curves (test)", "roc.png"),
         ("Confusion matrices (test)", "confusion_matrices.png"))
# The leaderboard's first screen: these columns (and each eval store's accuracy); the rest behind a toggle.
COMPACT = ("rank", "backbones", "head", "val_accuracy", "accuracy", "accuracy_ci95", "worst_group_accuracy",
           "choice")


def write_reports(store_path, results_dir, out, *, demo: bool = False) -> list[Path]:
    """The HTML report at ``out`` and the Markdown one beside it; returns both paths."""
    out, results_dir = Path(out), Path(results_dir)
    store = FeatureStore.open(store_path)
    runs = load_results(results_dir)
    if not runs:
        raise FileNotFoundError(f"no results files (version 3) in {results_dir}")
    demo = demo or (results_dir / DEMO_MARKER).exists()
    choice = choose(runs)
    errors = errors_of(choice.chosen, results_dir)
    counts = {backbone: np.bincount(store.status(backbone), minlength=len(Status)) for backbone in store.backbones()}
    html = write_html(out, **html_sections(store, results_dir, choice, counts, errors, demo=demo))
    markdown = out.with_suffix(".md")
    atomic.write_text(markdown, "\n".join(markdown_lines(store, results_dir, choice.chosen, counts,
                                                         markdown.resolve().parent, demo=demo)))
    return [html, markdown]


def errors_of(run: RunResult, results_dir: Path) -> dict | None:
    """train's errors.json when it lists this run's current head, else computed now; None when it cannot be."""
    try:
        return read_error_file(results_dir, run) or error_analysis(run, results_dir)
    except (StoreError, HeadFileError, FileNotFoundError) as error:
        log.warning("no error gallery: %s", error)
        return None


# -- HTML ------------------------------------------------------------------------------------------------
def html_sections(store: FeatureStore, results_dir: Path, choice: Choice, counts: dict[str, np.ndarray],
                  errors: dict | None, *, demo: bool) -> dict:
    """The keyword sections of `classify.html_report.render`; ``counts``: the store's rows per status per backbone."""
    best = choice.chosen
    dataset = f"{store.dataset_name} (DEMO DATA)" if demo else store.dataset_name
    sets, split = scored_sets(best), store.split
    decision = {"calibrator": {"method": best.calibrator,  # fitted_on: prose, shown as it is
                               "fitted_on": best.record["decision"]["calibrator"].get("fitted_on", {})},
                "threshold": {"rule": best.threshold_rule, "value": best.threshold}}
    return {
        "title": f"facegender report: {dataset}",
        "warnings": ([f"{DEMO_TITLE}: generated cartoon faces with random labels, not a face dataset."]
                     if demo else []) + choice.warnings,
        "summary": summary(choice, errors, demo=demo),
        "dataset": {"name": dataset, "root": store.dataset_info["root"], "store": store.path, "n_rows": store.n_rows,
                    "male": int(store.gender.sum()),
                    "splits": {s: int((split == i).sum()) for i, s in enumerate(SPLITS)}},
        "extraction": [{"backbone": backbone, "dim": store.backbone_info(backbone)["dim"],  # rows per status
                        **{status_text(code): int(n[code]) for code in Status if code != Status.PENDING}}
                       for backbone, n in counts.items()],
        "leaderboard": leaderboard(choice),
        "compact_columns": [*COMPACT[:-1], *(f"{label}_accuracy" for label in choice.best_out), COMPACT[-1]],
        "chosen": "\n".join(filter(None, [choice.text.strip(), errors and doubt_note(errors)])),
        "plots": {title: results_dir / file for title, file in PLOTS if (results_dir / file).exists()},
        "groups": {label: scores.record["groups"] for label, scores in sets},
        "calibration": {label: {**scores.record["calibration"], **decision, "recalls": scores.record.get("recalls")}
                        for label, scores in sets},
        "galleries": None if errors is None else [{**part, "title": title} for _, title, part in error_sets(errors)]}


def summary(choice: Choice, errors: dict | None, *, demo: bool) -> dict:
    """The first screen: the recommendation, where it was scored, the best out of domain, label checks."""
    best = choice.chosen
    scored = [{"where": f"{best.store.dataset} test (in domain)", **_headline(best.test)}]
    for label, cross in best.cross.items():
        scored.append({"where": f"{label}, {cross.rows} rows (cross-dataset)", **_headline(cross.report)})
        adults = cross.report.record.get("adults")
        if isinstance(adults, dict):
            scored.append({"where": f"{label}, aged >= {adults.get('min_age')}", **_adult_headline(adults)})
    out_of_domain = [f"{label}: {other.title} ({fmt(other.cross[label].report.accuracy)})"
                     for label, other in choice.best_out.items()]
    label_checks = ["no error list: the label checks could not be read"] if errors is None else [
        f"{where}: {count_doubted(part['errors'])[0]} of {len(part['errors'])} errors have a label in doubt"
        for where, _, part in error_sets(errors)]
    return {"recommended": best.title, "reason": choice.reason,
            "scored": scored, "best_out_of_domain": out_of_domain, "label_checks": label_checks,
            "verdict": verdict(choice, demo=demo)}


def _headline(scores: Scores) -> dict:
    return {"accuracy": scores.accuracy, "ci": (scores.accuracy_ci95.low, scores.accuracy_ci95.high),
            "male_recall": scores.recall, "female_recall": scores.female_recall, "n": scores.n}


def _adult_headline(adults: dict) -> dict:
    """The faces aged >= min_age of an eval store (a sub-record the typed `Scores` does not carry)."""
    number = {key: value if isinstance(value := adults.get(key), (int, float)) else None
              for key in ("accuracy", "recall", "female_recall", "n")}
    return {"accuracy": number["accuracy"], "male_recall": number["recall"], "female_recall": number["female_recall"],
            "n": number["n"], "ci": adults["ci95"].get("accuracy") if isinstance(adults.get("ci95"), dict) else None}


def error_sets(errors: dict) -> list[tuple[str, str, dict]]:
    """(name in the label checks, gallery title, error list) of the test rows, then of each eval store's."""
    return [(errors["split"], f"{errors['split']} (in domain)", errors)] + [
        (f"{label} ({part['rows']} rows)", f"{label}, {part['rows']} rows (cross-dataset)", part)
        for label, part in errors["cross_dataset"].items()]


def verdict(choice: Choice, *, demo: bool) -> str:
    """One line: what the recommended run scores, and whether it transfers."""
    best = choice.chosen
    line = f"{best.title} scores {best.test.accuracy:.1%} on {best.store.dataset} test"
    if demo:
        return f"Demo data: nothing to conclude ({line}, on random labels)."
    for label, other in choice.best_out.items():
        if label in best.cross:
            line += (f"; {best.cross[label].report.accuracy:.1%} on {label}"
                     + (f" (best there: {other.title}, {other.cross[label].report.accuracy:.1%})" if other is not best
                        else " (also the best there)"))
    return line + ("." if not choice.warnings else ": the in-domain choice does not transfer best (warning above).")


def scored_sets(run: RunResult) -> list[tuple[str, Scores]]:
    """(label, scored rows) of the run: in-domain test and val, then each eval store's report and val."""
    sets = [(f"{run.store.dataset} test", run.test), (f"{run.store.dataset} val (choices made here)", run.val)]
    for label, cross in run.cross.items():
        sets.append((f"{label} {cross.rows} (cross-dataset)", cross.report))
        if cross.val is not None:
            sets.append((f"{label} val (cross-dataset, choosing)", cross.val))
    return sets


# -- Markdown --------------------------------------------------------------------------------------------
DEMO_WARNING = (f"> **{DEMO_TITLE}.** No CelebA was found, so the job ran on generated cartoon faces with random "
                "labels. Set `CELEBA_ROOT` to a CelebA folder for real results.\n")


def markdown_lines(store: FeatureStore, results: Path, best: RunResult, counts: dict[str, np.ndarray],
                   report_dir: Path, *, demo: bool) -> list[str]:
    stamp = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    split, gender = store.split, store.gender
    split_counts = ", ".join(f"{name} {int((split == code).sum()):,}" for code, name in enumerate(SPLITS))
    lines = ["# Gender recognition with frozen backbones: report", "", f"Written {stamp}.", "",
             *([DEMO_WARNING] if demo else []), "## Dataset", "",
             f"`{store.dataset_name}` at `{store.dataset_info['root']}`: {store.n_rows:,} images ({split_counts}); "
             f"{int(gender.sum()):,} male ({gender.mean():.1%}). Store: `{store.path}`.", "",
             "## Extraction", "", "| backbone | dim | weights | valid | unreadable | no face | complete |",
             "|---|---|---|---|---|---|---|"]
    for name, n in counts.items():
        info = store.backbone_info(name)
        weights = info["metadata"]["weights"]
        lines.append(f"| {name} | {info['dim']} | {weights[:19]}{'...' if len(weights) > 19 else ''} | "
                     f"{n[Status.OK]:,} | {n[Status.UNREADABLE]:,} | {n[Status.NO_FACE]:,} | "
                     f"{info['units_done']}/{info['n_units']} units |")
    versions = ", ".join(f"{name} {version}" for name, version in sorted(library_versions().items()))
    return lines + ["", *md_results(results, best, report_dir), "## Environment", "",
                    f"{versions}; {os.cpu_count()} CPUs. Per-run configs, seeds and timings are in the results JSON "
                    "files beside the leaderboard.", ""]


def md_cross_dataset(run: RunResult) -> list[str]:
    """The recommended run's numbers on each eval store (trained on one dataset, applied to another)."""
    lines = []
    for label, cross in run.cross.items():
        report, ci = cross.report, cross.report.accuracy_ci95
        invalid = sum((report.record.get("invalid") or {}).values())
        line = (f"- **{run.store.dataset} -> {label}** ({cross.rows} rows of `{cross.path}`): accuracy "
                f"{fmt(report.accuracy)} (95% CI {fmt(ci.low)}-{fmt(ci.high)}) on {report.n:,} faces, "
                f"{fmt(cross.accuracy_all)} counting {invalid} invalid rows as errors; "
                f"male recall {fmt(report.recall)}, female recall {fmt(report.female_recall)}")
        adults = report.record.get("adults")
        if isinstance(adults, dict):
            line += (f"; aged >= {adults.get('min_age')}: {fmt(adults.get('accuracy'))} on {adults.get('n', 0):,} "
                     f"faces (male recall {fmt(adults.get('recall'))}, female {fmt(adults.get('female_recall'))})")
        lines.append(line + ".")
    return ["### Cross-dataset (the recommended head on other datasets)", "", *lines, ""] if lines else []


def md_results(results: Path, best: RunResult, report_dir: Path) -> list[str]:
    test, ci = best.test, best.test.accuracy_ci95
    lines = ["## Leaderboard (ranked on val, where every choice is made; test reported)", "",
             "Recommended (val, near-ties broken as the leaderboard says): "
             f"**{best.title}** (val accuracy {fmt(best.val.accuracy)}): test accuracy "
             f"**{fmt(test.accuracy)}** (95% bootstrap CI {fmt(ci.low)}-{fmt(ci.high)}), F1 (male) {fmt(test.f1)}, "
             f"ROC-AUC {fmt(test.roc_auc)}, on {test.n:,} test images. Rows invalid for a backbone (no face "
             "found) are excluded from its runs and counted in `invalid_test`; `accuracy_all_test` counts them as "
             "errors, to compare runs on the same test images.", "",
             (results / "leaderboard.md").read_text(), "", *md_cross_dataset(best)]
    for title, name in PLOTS:
        if (results / name).exists():
            lines += [f"### {title}", "", f"![{title}]({os.path.relpath(results / name, report_dir)})", ""]
    return lines

