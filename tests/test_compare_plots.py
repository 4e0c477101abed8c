"""compare's plots and demo marks: readable confusion-matrix counts, the accuracy plot's order and
form, and a demo run's mark on every file compare writes."""
from __future__ import annotations

import csv

import matplotlib
import pytest

from classify import cli
from classify.compare import DEMO_MARKER, _plot_accuracy, _plot_confusions, _plot_roc, choose, leaderboard
from classify.results import load_results
from classify.results import RunResult
from tests.fixtures import result_record, scores_record
from tests.test_classify_cli import make_store

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (after choosing the backend)


def contrast(rgba, text: str) -> float:
    """WCAG contrast ratio of black or white text on a colour."""
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4
    luminance = 0.2126 * linear(rgba[0]) + 0.7152 * linear(rgba[1]) + 0.0722 * linear(rgba[2])
    lighter, darker = (1.0, luminance) if text == "white" else (luminance, 0.0)
    return (lighter + 0.05) / (darker + 0.05)


def fake_run(name: str, cm, *, val: float, invalid: int = 0) -> RunResult:
    n = sum(map(sum, cm))
    accuracy = (cm[0][0] + cm[1][1]) / n
    test = scores_record(accuracy, n=n, cm=cm, ci=(accuracy - 0.03, accuracy + 0.02), roc_auc=0.5)
    return RunResult.from_json(result_record(name, val=scores_record(val, roc_auc=0.5), test=test,
                                             invalid=invalid), name)


RUNS = [fake_run("balanced", [[300, 200], [210, 290]], val=0.61),
        fake_run("skewed", [[500, 4], [4, 152]], val=0.99, invalid=7),
        fake_run("even", [[150, 150], [150, 150]], val=0.50, invalid=20)]


def test_every_count_is_drawn_in_the_better_contrast_for_its_cell_colour():
    fig = _plot_confusions(plt, RUNS)
    for ax, run in zip(fig.axes, RUNS):
        image = ax.images[0]
        for text in ax.texts:
            cell = image.cmap(image.norm(int(text.get_text())))
            chosen = text.get_color()
            other = "black" if chosen == "white" else "white"
            assert contrast(cell, chosen) >= max(contrast(cell, other), 4.5), (run.run, text.get_text())
    plt.close(fig)


def test_accuracy_plot_is_dots_and_intervals_in_val_order_on_all_test_images():
    ordered = sorted(RUNS, key=lambda run: -run.val.accuracy)
    fig = _plot_accuracy(plt, ordered)
    ax = fig.axes[0]
    labels = [label.get_text() for label in ax.get_yticklabels()]
    ticks = list(ax.get_yticks())
    top_down = [label for _, label in sorted(zip(ticks, labels), reverse=True)]
    assert top_down == ["1. skewed (val 0.9900)", "2. balanced (val 0.6100)", "3. even (val 0.5000)"]
    assert not ax.patches  # no bars
    assert "val ranking order" in ax.get_title() and "ties: val ROC-AUC, then name" in ax.get_title()
    # the filled dot of "skewed" is its accuracy counting its 7 unusable test images as errors
    skewed = ordered[0].test
    dots = [line for line in ax.lines if line.get_marker() == "o" and line.get_markerfacecolor() != "none"]
    assert max(dot.get_xdata()[0] for dot in dots) == pytest.approx(skewed.accuracy * 660 / 667)
    low, high = ax.get_xlim()  # nothing cut off
    assert low < min(line.get_xdata().min() for line in ax.lines)
    assert high > max(line.get_xdata().max() for line in ax.lines)
    plt.close(fig)


def test_a_demo_run_marks_every_file_compare_writes(tmp_path):
    store = make_store(tmp_path / "s.zarr", n=200)
    out = tmp_path / "runs"
    assert cli.main(["train", "--store", store.path, "--backbones", "bb_a", "--heads", "logreg",
                     "--bootstrap", "20", "--out", str(out), "--demo"]) == 0
    for again in ([], ["--demo"]):  # a later compare, flag or not, keeps the marks: the folder holds them
        assert cli.main(["compare", str(out), *again]) == 0
        assert (out / DEMO_MARKER).exists()
        assert (out / "leaderboard.md").read_text().startswith("> **DEMO DATA: THESE NUMBERS MEAN NOTHING.**")
        with open(out / "leaderboard.csv") as handle:
            assert [row["dataset"] for row in csv.DictReader(handle)] == ["synthetic (DEMO DATA)"]
    runs = load_results(out)
    assert [row["dataset"] for row in leaderboard(choose(runs))] == ["synthetic"]  # the results files stay as they are
    for draw in (_plot_roc, _plot_accuracy, _plot_confusions):
        fig = draw(plt, runs, demo=True)
        titles = [ax.get_title() for ax in fig.axes] + [fig._suptitle.get_text() if fig._suptitle else ""]
        assert any("DEMO DATA: THESE NUMBERS MEAN NOTHING" in title for title in titles), draw.__name__
        plt.close(fig)
