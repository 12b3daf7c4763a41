"""Figures a reader can trust: the report's line in view, seeds as bands, honest size axes."""

import subprocess
import sys

import matplotlib.pyplot as plt
import pandas as pd
import pytest
from matplotlib.collections import PolyCollection

from squeeze_keras import plots


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def history(final, epochs=5):
    """A history whose test accuracy rises by a point an epoch to `final` (%)."""
    val = [(final - epochs + 1 + e) / 100 for e in range(epochs)]
    return pd.DataFrame({"epoch": range(epochs), "accuracy": [v + 0.05 for v in val],
                         "loss": 1.0, "val_accuracy": val, "val_loss": 1.1})


# The README's E4 size table (export.size_table columns).
SIZES = pd.DataFrame({
    "model": ["dense"] * 5 + ["pruned60"],
    "sparsity": [0.0] * 5 + [0.6],
    "form": ["keras (reference)", "float32", "float16", "dynamic_int8", "int8 (uint8 in/out)",
             "int8 (uint8 in/out)"],
    "bytes": [3_064_089, 2_931_996, 1_487_472, 794_568, 832_736, 832_736],
    "gzip bytes": [2_715_097, 2_706_315, 1_348_521, 689_480, 698_829, 446_964],
    "top-1": [80.19, 80.19, 80.18, 80.19, 80.11, 79.48],
    "drop": [None, 0.0, 0.01, 0.0, 0.08, 0.71],
    "agreement with keras": [None, 1.0, 1.0, 1.0, 0.99, 0.97],
    "latency ms": [None, 1.0, 1.0, 1.0, 1.0, 1.0],
})


def test_plot_history_keeps_the_report_line_inside_and_names_protocol_and_seed(tmp_path):
    fig = plots.plot_history(history(67.0), "e4", tmp_path / "e4.png", report_top1=72.05,
                             protocol="paper", seed=0)
    acc = fig.axes[0]
    low, high = acc.get_ylim()
    assert low + 1 <= 72.05 <= high - 1  # the line is not on the frame
    assert fig._suptitle.get_text() == "e4\nprotocol paper, seed 0"
    assert (tmp_path / "e4.png").stat().st_size > 0
    assert acc.get_legend_handles_labels()[1][-1] == "report: 72.05 %"
    holdout = plots.plot_history(history(36.0), "e5", report_top1=38.39,
                                 evaluation="train hold-out, 100/class")
    assert holdout.axes[0].get_legend_handles_labels()[1] == [
        "training", "validation (train hold-out, 100/class)", "report (test split): 38.39 %"]


def test_validation_curves_draw_the_seed_mean_and_a_min_max_band(tmp_path):
    runs = {"e2": {0: history(65.0), 1: history(66.0), 2: history(67.0)}, "e4": {0: history(67.0)}}
    fig = plots.plot_validation_curves(runs, "paper runs", tmp_path / "curves.png")
    ax = fig.axes[0]
    lines = {line.get_label(): line for line in ax.get_lines()}
    assert set(lines) == {"e2 (mean of 3 seeds)", "e4"}
    assert lines["e2 (mean of 3 seeds)"].get_ydata()[-1] == pytest.approx(66.0)
    bands = [c for c in ax.collections if isinstance(c, PolyCollection)]
    assert len(bands) == 1  # one seed: a line only
    band_y = bands[0].get_paths()[0].vertices[:, 1]
    assert band_y.min() == pytest.approx(61.0) and band_y.max() == pytest.approx(67.0)
    assert "e2 seeds 0, 1, 2; e4 seed 0" in ax.get_title()
    assert (tmp_path / "curves.png").stat().st_size > 0


def test_validation_curves_with_training_dash_it_in_the_runs_colour():
    runs = {"paper": history(67.0), "tuned2": {0: history(80.0)}}
    fig = plots.plot_validation_curves(runs, "E4 under each protocol", training=True)
    ax = fig.axes[0]
    lines = ax.get_lines()
    assert [line.get_label() for line in lines] == ["paper", "paper (training)", "tuned2",
                                                    "tuned2 (training)"]
    assert lines[1].get_linestyle() == "--" and lines[1].get_color() == lines[0].get_color()
    assert ax.get_title() == "E4 under each protocol\nseed 0 each"


def test_plot_seeds_shows_each_seed_their_mean_and_the_report(tmp_path):
    seeds = {0: history(67.0), 1: history(66.0), 2: history(68.0)}
    fig = plots.plot_seeds(seeds, "e4", tmp_path / "seeds.png", report_top1=72.05,
                           protocol="paper")
    ax = fig.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == [
        "seed 0", "seed 1", "seed 2", "mean of 3 seeds", "report: 72.05 %"]
    assert ax.get_ylim()[1] >= 72.05 + 1
    assert ax.get_title() == "e4\nprotocol paper, seeds 0, 1, 2"


def test_size_plot_keeps_far_references_off_the_axis_and_names_their_kind(tmp_path):
    fig = plots.plot_size_vs_accuracy(SIZES, "E4", tmp_path / "small.png")
    ax = fig.axes[0]
    low, high = ax.get_xlim()
    assert ax.get_xscale() == "log" and high < 10e6  # not stretched to AlexNet's 240 MB
    verticals = sorted(line.get_xdata()[0] for line in ax.lines
                       if line.get_linestyle() != "-" and len(set(line.get_xdata())) == 1
                       and len(line.get_xdata()) == 2)
    assert verticals == [0.47e6, 4.8e6]
    labels = [line.get_label() for line in ax.lines]
    assert "SqueezeNet 1.0, 4.8 MB raw float32 (ImageNet)" in labels
    assert "SqueezeNet + Deep Compression, 0.47 MB compressed (ImageNet)" in labels
    assert [t.get_text() for t in ax.texts if "AlexNet" in t.get_text()] == [
        "AlexNet, 240 MB raw float32 (ImageNet) ->"]
    y_low, y_high = ax.get_ylim()
    assert y_high - y_low >= plots.MIN_ACCURACY_SPAN  # 0.7 points is no cliff
    assert y_low < 79.48 and 80.19 < y_high
    assert (tmp_path / "small.png").stat().st_size > 0


def test_size_plot_without_finite_rows_draws_nothing(tmp_path):
    empty = SIZES.assign(**{"top-1": float("nan")})
    assert plots.plot_size_vs_accuracy(empty, "smoke", tmp_path / "small.png") is None
    assert plots.plot_size_vs_accuracy(SIZES.iloc[:0], "smoke") is None
    assert not (tmp_path / "small.png").exists()


def test_plots_need_neither_tensorflow_nor_export():
    code = ("import sys, squeeze_keras.plots; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'squeeze_keras.export') "
            "if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
