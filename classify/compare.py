"""Merge the results files of a directory into a leaderboard (markdown, CSV) and plots (PNG).

One row per (backbone(s), head) run, ranked by VAL accuracy (ties: val ROC-AUC, then name); test is
reported, never used to pick. Runs evaluated on other stores (``train --eval-store``) get ``<dataset>_``
columns (`CROSS_COLUMNS`; ``accuracy_all`` counts invalid rows as errors). ``worst_group``: the group of at
least min_group_n rows with the lowest accuracy (`classify.groups`); ``ece``: after the calibrator (15
equal-width bins of p(male)); ``decision``: the calibrator and threshold chosen on val. The recommendation
and its tie-breaks: docs/protocol.md. The error lists (`classify.errors`) are only read, for the label note.
"""
from __future__ import annotations

import csv
import logging
from dataclasses import dataclass
from pathlib import Path

from classify.errors import read_error_file
from classify.html_report import pyplot
from classify.label_audit import doubt_note
from classify.metrics import fmt
from classify.results import CrossResult, RunResult, Scores, load_results
from features import atomic
from features.tables import csv_cell, markdown_cell

log = logging.getLogger(__name__)

CROSS_COLUMNS = ("accuracy", "accuracy_all", "accuracy_ci95", "male_recall", "female_recall", "balanced_accuracy",
                 "worst_group_accuracy", "ece", "n")

# in a results folder of a run on generated demo data (`train --demo`): everything written from it says so
DEMO_MARKER = "DEMO_DATA.txt"
DEMO_TITLE = "DEMO DATA: THESE NUMBERS MEAN NOTHING"
DEMO_NOTE = (f"> **{DEMO_TITLE}.** Generated cartoon faces with random labels, not a face dataset; set "
             "`CELEBA_ROOT` to a CelebA folder for real results.\n\n")

HEAD_ORDER = ("logreg", "mlp")  # simplest first: the tie-break's second key


class CompareError(ValueError):
    """Nothing to compare."""


def rank_key(run: RunResult) -> tuple:
    """Sort key: best val accuracy first, then val ROC-AUC, then run name (test is never looked at)."""
    return -run.val.accuracy, -(run.val.roc_auc or 0.0), run.run


def cross_val_accuracy(run: RunResult) -> float | None:
    """Mean val accuracy over the run's eval stores that have a val split (None if none has)."""
    values = [c.val.accuracy for c in run.cross.values() if c.val is not None]
    return sum(values) / len(values) if values else None


def near_ties(runs: list[RunResult]) -> list[RunResult]:
    """Runs whose val accuracy reaches the lower end of the val-best run's bootstrap interval."""
    low = min(runs, key=rank_key).val.accuracy_ci95.low
    return [run for run in runs if run.val.accuracy >= low]


def simplicity(run: RunResult) -> tuple[int, int]:
    """Fewer backbones first, then the simpler head (logreg before mlp): the tie-break among equals."""
    return len(run.backbones), HEAD_ORDER.index(run.head) if run.head in HEAD_ORDER else len(HEAD_ORDER)


def recommend(runs: list[RunResult]) -> RunResult:
    """The recommended run (docs/protocol.md): among the near-ties, the best cross-dataset val accuracy
    (a run without one counts as 0), then `simplicity`, then `rank_key`."""
    return min(near_ties(runs),
               key=lambda run: (-(cross_val_accuracy(run) or 0.0), *simplicity(run)) + rank_key(run))


@dataclass(frozen=True)
class Choice:
    """What ``runs`` recommend, computed once: ``chosen`` (`recommend`), the run best out of domain per eval
    dataset label (first-seen order), ``warnings`` where it beats ``chosen`` beyond both 95% intervals, the
    ``reason`` for ``chosen``, and ``text``: what was chosen and why, the best out of domain, the warnings."""

    runs: list[RunResult]
    chosen: RunResult
    best_out: dict[str, RunResult]
    warnings: list[str]
    reason: str
    text: str


def choose(runs: list[RunResult]) -> Choice:
    """The `Choice` among ``runs`` (at least one)."""
    chosen, tied = recommend(runs), near_ties(runs)
    best_out = {label: max((run for run in runs if label in run.cross),
                           key=lambda run: run.cross[label].report.accuracy)
                for label in dict.fromkeys(label for run in runs for label in run.cross)}
    warnings = []
    for label, best in best_out.items():
        mine, theirs = chosen.cross.get(label), best.cross[label].report
        if best is not chosen and mine is not None and theirs.accuracy_ci95.low > mine.report.accuracy_ci95.high:
            warnings.append(f"WARNING: on {label} the recommended {chosen.title} scores "
                            f"{fmt(mine.report.accuracy)}, and {best.title} scores "
                            f"{fmt(theirs.accuracy)}, beyond both 95% intervals: the in-domain choice does not "
                            f"transfer best to {label}.")
    cross = cross_val_accuracy(chosen)
    rule = "fewest backbones, then the simpler head" if cross is None else f"cross-dataset val accuracy ({fmt(cross)})"
    why = ("best val accuracy" if len(tied) == 1
           else f"{len(tied)} runs within the best val accuracy's 95% interval; tie broken by {rule}")
    reason = f"val accuracy {fmt(chosen.val.accuracy)}; {why}"
    lines = [f"Recommended: {chosen.title} ({reason})."]
    lines += [f"Best out of domain on {label}: {best.title} ({fmt(best.cross[label].report.accuracy)})."
              for label, best in best_out.items()]
    return Choice(runs, chosen, best_out, warnings, reason, "\n".join(lines + warnings) + "\n")


def leaderboard(choice: Choice) -> list[dict]:
    """One row per run (`_row`'s columns, "choice", the cross-dataset columns), ranked by `rank_key`."""
    rows = []
    for rank, run in enumerate(sorted(choice.runs, key=rank_key), start=1):
        row = _row(rank, run)
        row["choice"] = ", ".join((["recommended"] if run is choice.chosen else [])
                                  + [f"best on {label}" for label, best in choice.best_out.items() if best is run])
        for label in choice.best_out:
            row.update(_cross_cells(label, run.cross.get(label)))
        rows.append(row)
    return rows


def _cross_cells(label: str, cross: CrossResult | None) -> dict:
    if cross is None:
        return {f"{label}_{column}": "" for column in CROSS_COLUMNS}
    report, ci = cross.report, cross.report.accuracy_ci95
    cells = {"accuracy": fmt(report.accuracy), "accuracy_all": fmt(cross.accuracy_all),
             "accuracy_ci95": f"{fmt(ci.low)}-{fmt(ci.high)}", "male_recall": fmt(report.recall),
             "female_recall": fmt(report.female_recall), **fairness_cells(report), "n": report.n}
    return {f"{label}_{column}": cells[column] for column in CROSS_COLUMNS}


def fairness_cells(scores: Scores) -> dict:
    """Balanced accuracy, worst group (accuracy and name) and ECE after calibration of scored rows."""
    worst = scores.worst_group
    return {"balanced_accuracy": fmt(scores.balanced_accuracy),
            "worst_group_accuracy": fmt(None if worst is None else worst.accuracy),
            "worst_group": "" if worst is None else f"{worst.family}={worst.group} (n={worst.n})",
            "ece": fmt(scores.ece)}


def _row(rank: int, run: RunResult) -> dict:
    test = run.test
    selected = {key: "x".join(map(str, value)) if isinstance(value, list) else value
                for key, value in run.selection.items() if key not in ("grid", "path")}
    return {"rank": rank, "backbones": "+".join(run.backbones), "head": run.head,
            "dataset": "+".join(ref.dataset for ref in run.training_stores), "val_accuracy": fmt(run.val.accuracy),
            "accuracy": fmt(test.accuracy), "accuracy_all_test": fmt(accuracy_all_test(run)),
            "accuracy_ci95": f"{fmt(test.accuracy_ci95.low)}-{fmt(test.accuracy_ci95.high)}", **fairness_cells(test),
            "f1": fmt(test.f1), "f1_ci95": f"{fmt(test.f1_ci95.low)}-{fmt(test.f1_ci95.high)}",
            "roc_auc": fmt(test.roc_auc), "macro_f1": fmt(test.macro_f1), "n_test": test.n,
            "invalid_test": run.invalid_test, "treatment": treatment_cell(run),
            "decision": f"{run.calibrator}, threshold {run.threshold:.4f}"
                        + (f" ({run.threshold_rule})" if run.threshold_rule != "default" else ""),
            "selected": " ".join(f"{k}={v}" for k, v in selected.items()), "fit_s": run.fit_s}


def treatment_cell(run: RunResult) -> str:
    """The chosen feature treatment, and the attribute the training rows were balanced against."""
    return run.treatment if run.balanced_by is None else f"{run.treatment}, balanced by {run.balanced_by}"


def usable_share(run: RunResult) -> float:
    """The share of the test images the run could use (the others: no face found, unreadable)."""
    return run.test.n / (run.test.n + run.invalid_test)


def accuracy_all_test(run: RunResult) -> float:
    """Test accuracy counting the test images the run could not use as errors."""
    return run.test.accuracy * usable_share(run)


def to_markdown(rows: list[dict]) -> str:
    """A Markdown table; cells escaped (a ``|`` or ``<`` in a name cannot break the table or open a tag)."""
    columns = list(rows[0])
    lines = ["| " + " | ".join(map(markdown_cell, columns)) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(markdown_cell(row[c]) for c in columns) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def write_csv(rows: list[dict], path: Path) -> None:
    """The rows as CSV, atomically; formula-like text cells quoted."""
    with atomic.atomic_open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[csv_cell(c) for c in rows[0]])
        writer.writeheader()
        writer.writerows({csv_cell(key): csv_cell(value) for key, value in row.items()} for row in rows)


def compare(directory: Path, *, demo: bool = False) -> tuple[str, list[Path]]:
    """Write leaderboard.md/.csv and the plots into ``directory``; returns (markdown, written paths).
    ``demo``: mark the folder (`DEMO_MARKER`); every file written from a marked folder carries the mark."""
    directory = Path(directory)
    if not directory.is_dir():
        raise CompareError(f"results directory {directory} does not exist")
    if demo:
        atomic.write_text(directory / DEMO_MARKER, DEMO_NOTE)
    demo = (directory / DEMO_MARKER).exists()
    runs = load_results(directory)
    if not runs:
        raise CompareError(f"no classify results files (*.json) in {directory}")
    fingerprints = {run.store.fingerprint for run in runs}
    if len(fingerprints) > 1:
        log.warning("%s mixes results from %d different datasets/splits: compare rows within a dataset",
                    directory, len(fingerprints))
    choice = choose(runs)
    rows = leaderboard(choice)
    if demo:
        rows = [{**row, "dataset": f"{row['dataset']} (DEMO DATA)"} for row in rows]
    analysis = read_error_file(directory, choice.chosen)  # computed by train, never here
    note = doubt_note(analysis) if analysis else ""
    markdown = ((DEMO_NOTE if demo else "") + to_markdown(rows) + "\n" + choice.text
                + (f"\n{note}\n" if note else ""))
    paths = [directory / "leaderboard.md", directory / "leaderboard.csv"]
    atomic.write_text(paths[0], markdown)
    write_csv(rows, paths[1])
    plt, ranked = pyplot(), sorted(runs, key=rank_key)
    for name, draw in (("roc.png", _plot_roc), ("confusion_matrices.png", _plot_confusions),
                       ("accuracy.png", _plot_accuracy)):
        fig = draw(plt, ranked, demo=demo)
        with atomic.atomic_open(directory / name, "wb") as handle:
            fig.savefig(handle, format="png", dpi=110, bbox_inches="tight")
        plt.close(fig)
        paths.append(directory / name)
    return markdown, paths


def _plot_roc(plt, runs, *, demo: bool = False):
    fig, ax = plt.subplots(figsize=(6, 6))
    for run in runs:
        ax.plot(run.test.roc_fpr, run.test.roc_tpr, label=f"{run.run} (AUC {fmt(run.test.roc_auc)})")
    ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
    ax.set(xlabel="false positive rate (female called male)", ylabel="true positive rate (male)",
           title=(DEMO_TITLE + "\n" if demo else "") + "ROC on test, male = positive", xlim=(0, 1),
           ylim=(0, 1.01))
    ax.legend(fontsize=7, loc="lower right")
    return fig


def _plot_confusions(plt, runs, *, demo: bool = False):
    cols = min(4, len(runs))
    nrows = -(-len(runs) // cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(3.2 * cols, 3.0 * nrows), squeeze=False)
    for ax in axes.flat[len(runs):]:
        ax.axis("off")
    for ax, run in zip(axes.flat, runs):
        cm = run.test.confusion_matrix
        image = ax.imshow(cm, cmap="Blues", vmin=0)  # from 0: a colour says how many, not how few
        for i, j in ((0, 0), (0, 1), (1, 0), (1, 1)):
            ax.text(j, i, str(cm[i][j]), ha="center", va="center", fontsize=9,
                    color=text_colour(image.cmap(image.norm(cm[i][j]))))
        ax.set(xticks=[0, 1], yticks=[0, 1], xticklabels=["female", "male"], yticklabels=["female", "male"],
               xlabel="predicted", ylabel="true")
        ax.set_title(run.run, fontsize=8)
    if demo:
        fig.suptitle(DEMO_TITLE, color="tab:red", fontsize=9)
    fig.tight_layout()
    return fig


def text_colour(rgba) -> str:
    """Black on a light cell, white on a dark one, by the cell colour's relative luminance (WCAG)."""
    red, green, blue = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in rgba[:3])
    luminance = 0.2126 * red + 0.7152 * green + 0.0722 * blue
    # the contrast ratios against black, (L + 0.05) / 0.05, and white, 1.05 / (L + 0.05), cross at 0.179
    return "black" if luminance > 0.179 else "white"


def _plot_accuracy(plt, runs, *, demo: bool = False):
    """Dots and 95% intervals, one line per run, best on top; no bars, so the axis need not start at 0."""
    fig, ax = plt.subplots(figsize=(7, 1.2 + 0.45 * len(runs)))
    y = list(range(len(runs)))[::-1]  # rank 1 on top
    for row, run in zip(y, runs):
        test, share = run.test, usable_share(run)
        low, high = (bound * share for bound in (test.accuracy_ci95.low, test.accuracy_ci95.high))
        ax.plot([low, high], [row, row], color="tab:blue", linewidth=2, solid_capstyle="butt")
        ax.plot(test.accuracy * share, row, "o", color="tab:blue", markersize=7)
        if share < 1:
            ax.plot(test.accuracy, row, "o", markerfacecolor="none", color="grey", markersize=6)
    ax.set_yticks(y, [f"{rank}. {run.run} (val {fmt(run.val.accuracy)})"
                      for rank, run in enumerate(runs, start=1)], fontsize=8)
    ax.set_ylim(-0.7, len(runs) - 0.3)
    ax.grid(axis="x", color="0.9")
    ax.set_xlabel("test accuracy on all test images (images a backbone could not use count as errors);\n"
                  "line: 95% bootstrap interval; hollow grey dot: accuracy on the images the run could use",
                  fontsize=8)
    ax.set_title((DEMO_TITLE + "\n" if demo else "")
                 + "Runs in val ranking order, best first (ties: val ROC-AUC, then name); test reported",
                 fontsize=9, color="tab:red" if demo else "black")
    return fig
