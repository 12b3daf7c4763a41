"""Figures from run-folder data: a run's curves, runs and seeds together, size against accuracy.

Only pandas and matplotlib: the inputs are the `history.csv` frames of run
folders and the `export.size_table` frame, passed in by the caller.
"""

from __future__ import annotations

import math
import textwrap
import pathlib

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import MaxNLocator

# Sizes of ImageNet models from the SqueezeNet paper (Iandola et al. 2016, Table 2), for the
# size axis only: `{label: (bytes, kind)}`. "raw float32" is the parameters as stored
# uncompressed; "compressed" is the Deep Compression size (pruning, trained quantization,
# Huffman coding), to be read beside this project's gzip'ed sizes.
REFERENCE_SIZES = {
    "AlexNet": (240e6, "raw float32"),
    "SqueezeNet 1.0": (4.8e6, "raw float32"),
    "SqueezeNet + Deep Compression": (0.47e6, "compressed"),
}
# A reference size is drawn as a line when it lies within this factor of the plotted
# sizes (the axis is widened to it); further out it is a labelled marker at the axis edge.
REFERENCE_REACH = 3.0
MIN_ACCURACY_SPAN = 5.0  # points: the smallest y range, so that 0.7 points is no cliff


def _save(fig, path):
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def _with_details(title: str, *details, width: int = 80) -> str:
    """`title`, then the details on lines of at most `width` characters (never cut off)."""
    details = [d for d in details if d]
    if not details:
        return title
    return "\n".join([title, *textwrap.wrap(", ".join(details), width)])


def _run_details(protocol=None, seed=None) -> list[str]:
    return [f"protocol {protocol}" if protocol else "", "" if seed is None else f"seed {seed}"]


def _accuracy_limits(ax, values, report_top1=None, margin: float = 2.0) -> None:
    """y limits (%) around `values` and the report's number, with `margin` points each side."""
    values = [v for v in values if v is not None and math.isfinite(v)]
    if report_top1 is not None:
        values.append(report_top1)
    if values:
        ax.set_ylim(max(0.0, min(values) - margin), min(100.0, max(values) + margin))


def _seed_label(seeds) -> str:
    seeds = sorted(seeds)
    return f"seed {seeds[0]}" if len(seeds) == 1 else "seeds " + ", ".join(map(str, seeds))


def plot_history(history, title: str, path=None, report_top1: float | None = None,
                 protocol: str | None = None, seed: int | None = None,
                 evaluation: str = "test"):
    """Accuracy and loss per epoch, train and validation; saved to `path` if given.

    The accuracy panel's y range includes the report's top-1 (a dotted line)
    with a margin, so that the line never lies on the frame. `protocol` and
    `seed`, where given, are named under the title; `evaluation` names the
    validation split (`"test"`, or e.g. `"train hold-out, 100/class"`, beside
    which the report's line says that it is a test-split figure).
    """
    epochs = history["epoch"] + 1
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 4))
    train, val = 100 * history["accuracy"], 100 * history["val_accuracy"]
    validation = f"validation ({evaluation}{' split' if evaluation == 'test' else ''})"
    acc.plot(epochs, train, label="training")
    acc.plot(epochs, val, label=validation)
    if report_top1 is not None:
        # The report measured on the test split: say so beside a hold-out curve.
        where = "" if evaluation == "test" else " (test split)"
        acc.axhline(report_top1, color="grey", linestyle=":",
                    label=f"report{where}: {report_top1:.2f} %")
    _accuracy_limits(acc, [*train, *val], report_top1)
    acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    acc.legend()
    loss.plot(epochs, history["loss"], label="training")
    loss.plot(epochs, history["val_loss"], label=validation)
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    loss.legend()
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(_with_details(title, *_run_details(protocol, seed)))
    fig.tight_layout()
    return _save(fig, path)


def _as_seeds(value) -> dict:
    """`{seed: history}` from one history (seed unknown: key None), a dict or a list."""
    if isinstance(value, pd.DataFrame):
        return {None: value}
    if isinstance(value, dict):
        return dict(value)
    return dict(enumerate(value))


def _over_seeds(histories: dict, column: str) -> pd.DataFrame:
    """Per epoch (1-based index): mean, min and max of `column` (%) over the histories."""
    frame = pd.concat([h.set_index("epoch")[column] for h in histories.values()], axis=1) * 100
    out = pd.DataFrame({"mean": frame.mean(axis=1), "min": frame.min(axis=1),
                        "max": frame.max(axis=1)})
    out.index = out.index + 1
    return out


def plot_validation_curves(runs: dict, title: str, path=None, training: bool = False,
                           protocol: str | None = None):
    """Validation accuracy of several runs in one figure, each the mean over its seeds.

    Args:
        runs: `{label: history}` (one run each), or `{label: {seed: history}}`
            (`results.seed_histories`): the seed mean is drawn as a line and
            the min-max over seeds as a band; a single seed is just the line.
        training: draw each run's training accuracy (seed mean) too, dashed,
            in its colour.
        protocol: named under the title with the seeds, where given.
    """
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    seeds_of = {}
    for label, value in runs.items():
        histories = _as_seeds(value)
        seeds_of[label] = [s for s in histories if s is not None]
        val = _over_seeds(histories, "val_accuracy")
        name = label if len(histories) == 1 else f"{label} (mean of {len(histories)} seeds)"
        (line,) = ax.plot(val.index, val["mean"], marker=".", label=name)
        if len(histories) > 1:
            ax.fill_between(val.index, val["min"], val["max"], color=line.get_color(),
                            alpha=0.2, linewidth=0)
        if training:
            train = _over_seeds(histories, "accuracy")
            ax.plot(train.index, train["mean"], linestyle="--", color=line.get_color(),
                    label=f"{label} (training)")
    known = {label: seeds for label, seeds in seeds_of.items() if seeds}
    seed_note = ""
    if known:
        sets = {tuple(sorted(s)) for s in known.values()}
        seed_note = (_seed_label(next(iter(sets))) + " each" if len(sets) == 1 else
                     "; ".join(f"{label} {_seed_label(s)}" for label, s in known.items()))
        if any(len(s) > 1 for s in known.values()):
            seed_note += " (line: mean, band: min-max)"
    ylabel = "top-1 (%): validation, training dashed" if training else "validation top-1 (%)"
    ax.set(xlabel="epoch", ylabel=ylabel,
           title=_with_details(title, f"protocol {protocol}" if protocol else "", seed_note))
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_seeds(seed_histories, title: str, path=None, report_top1: float | None = None,
               protocol: str | None = None):
    """Validation accuracy of one experiment's seeds: each seed, their mean and min-max band.

    Args:
        seed_histories: `{seed: history}` (e.g. `{s: r.history for s, r in
            results.seed_runs(...).items()}`) or a list of histories.
        report_top1: the report's number, a dotted line inside the y range.
        protocol: named under the title with the seeds, where given.
    """
    histories = _as_seeds(seed_histories)
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for seed, history in histories.items():
        ax.plot(history["epoch"] + 1, 100 * history["val_accuracy"], linewidth=0.8, alpha=0.7,
                label=f"seed {seed}")
    val = _over_seeds(histories, "val_accuracy")
    if len(histories) > 1:
        ax.fill_between(val.index, val["min"], val["max"], color="black", alpha=0.1, linewidth=0)
        ax.plot(val.index, val["mean"], color="black", linewidth=2,
                label=f"mean of {len(histories)} seeds")
    if report_top1 is not None:
        ax.axhline(report_top1, color="grey", linestyle=":", label=f"report: {report_top1:.2f} %")
    _accuracy_limits(ax, [*val["min"], *val["max"]], report_top1)
    ax.set(xlabel="epoch", ylabel="validation top-1 (%)",
           title=_with_details(title, f"protocol {protocol}" if protocol else "",
                               _seed_label(histories)))
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend(fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def _size_range(sizes, references) -> tuple[float, float]:
    """The log size axis: the data padded by x1.5, widened to references within reach."""
    lo, hi = min(sizes) / 1.5, max(sizes) * 1.5
    for size, _ in references.values():
        if min(sizes) / REFERENCE_REACH <= size <= max(sizes) * REFERENCE_REACH:
            lo, hi = min(lo, size / 1.3), max(hi, size * 1.3)
    return lo, hi


def plot_size_vs_accuracy(table, title: str, path=None, references=None):
    """Top-1 against size (log scale) for every form in an `export.size_table`.

    Each form is a filled marker at its gzip'ed size and an open one at its
    size as stored, joined by a thin line. `references` (`{label: (bytes,
    kind)}`, default `REFERENCE_SIZES`: ImageNet models, for scale only) are
    vertical lines where they lie within `REFERENCE_REACH` of the measured
    sizes; further out (AlexNet's 240 MB) they are labelled markers at the
    axis edge, so the axis does not stretch to them. The y range spans at
    least `MIN_ACCURACY_SPAN` points.

    Returns:
        The figure, or None (nothing drawn or saved) when no row has a
        finite size and top-1, e.g. a smoke run without an export.
    """
    references = REFERENCE_SIZES if references is None else references
    values = table[["gzip bytes", "bytes", "top-1"]].apply(pd.to_numeric, errors="coerce")
    usable = (np.isfinite(values.astype(float)).all(axis=1)
              & (values[["gzip bytes", "bytes"]] > 0).all(axis=1))
    rows = table[usable]
    if rows.empty:
        return None
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for model, group in rows.groupby("model", sort=False):
        (points,) = ax.plot(group["gzip bytes"], group["top-1"], marker="o", linestyle="",
                            label=f"{model}: gzip (filled), as stored (open)")
        ax.plot(group["bytes"], group["top-1"], marker="o", linestyle="", fillstyle="none",
                color=points.get_color())
        labelled = 0
        for _, row in group.iterrows():
            ax.plot([row["gzip bytes"], row["bytes"]], [row["top-1"]] * 2, linewidth=0.6,
                    color=points.get_color(), alpha=0.5)
            if row["form"] == "keras (reference)":  # the .keras file: where float32 sits too
                continue
            # Above and below in turn: neighbouring int8 forms sit at nearly the same point.
            ax.annotate(row["form"], (row["gzip bytes"], row["top-1"]), textcoords="offset points",
                        xytext=(4, 4 if labelled % 2 == 0 else -11), fontsize=7)
            labelled += 1
    lo, hi = _size_range([*rows["gzip bytes"], *rows["bytes"]], references)
    styles = iter([":", "--", "-."])
    edge = 0
    for label, (size, kind) in sorted(references.items(), key=lambda item: item[1][0]):
        text = f"{label}, {size / 1e6:g} MB {kind} (ImageNet)"
        if lo <= size <= hi:
            ax.axvline(size, color="grey", linestyle=next(styles, ":"), label=text)
            continue
        right = size > hi
        ax.text(0.99 if right else 0.01, 0.97 - 0.07 * edge,
                f"{text} ->" if right else f"<- {text}",
                transform=ax.transAxes, ha="right" if right else "left", va="top",
                fontsize=7, color="grey")
        edge += 1
    ax.set_xscale("log")
    ax.set_xlim(lo, hi)
    top1 = rows["top-1"].astype(float)
    middle = (top1.min() + top1.max()) / 2
    half = max(top1.max() - top1.min(), MIN_ACCURACY_SPAN) / 2
    ax.set_ylim(middle - half - 0.5, middle + half + 0.5)
    ax.set(xlabel="size in bytes (log scale)", ylabel="top-1 (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)
