"""The appendix plots: training/validation curves of a run, and all runs together."""

from __future__ import annotations

import pathlib

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator


def _save(fig, path):
    if path is not None:
        path = pathlib.Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=120)
    return fig


def plot_history(history, title: str, path=None, report_top1: float | None = None):
    """Accuracy and loss per epoch, train and validation; saved to `path` if given."""
    epochs = history["epoch"] + 1
    fig, (acc, loss) = plt.subplots(1, 2, figsize=(10, 3.8))
    acc.plot(epochs, 100 * history["accuracy"], label="training")
    acc.plot(epochs, 100 * history["val_accuracy"], label="validation (test split)")
    if report_top1 is not None:
        acc.axhline(report_top1, color="grey", linestyle=":", label=f"report: {report_top1:.2f} %")
    acc.set(xlabel="epoch", ylabel="top-1 accuracy (%)", title="accuracy")
    acc.legend()
    loss.plot(epochs, history["loss"], label="training")
    loss.plot(epochs, history["val_loss"], label="validation (test split)")
    loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    loss.legend()
    for ax in (acc, loss):
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_validation_curves(runs: dict, title: str, path=None, training: bool = False):
    """Validation accuracy of several runs (`{label: history}`) in one figure.

    With `training=True` each run's training accuracy is drawn too, dashed, in its colour.
    """
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for label, history in runs.items():
        epochs = history["epoch"] + 1
        (line,) = ax.plot(epochs, 100 * history["val_accuracy"], marker=".", label=label)
        if training:
            ax.plot(epochs, 100 * history["accuracy"], linestyle="--", color=line.get_color(),
                    label=f"{label} (training)")
    ylabel = "top-1 (%): validation, training dashed" if training else "validation top-1 (%)"
    ax.set(xlabel="epoch", ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.legend()
    fig.tight_layout()
    return _save(fig, path)


def plot_size_vs_accuracy(table, title: str, path=None, references=None):
    """Top-1 against gzip'ed size (log scale) for every form in an `export.size_table`.

    `references` (`{label: bytes}`, default `export.REFERENCE_SIZES`) are drawn as
    vertical lines: sizes of ImageNet models, for scale only (their accuracy is
    on another task).
    """
    from squeeze_keras.export import REFERENCE_SIZES

    references = REFERENCE_SIZES if references is None else references
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for model, rows in table.groupby("model", sort=False):
        ax.plot(rows["gzip bytes"], rows["top-1"], marker="o", linestyle="", label=model)
        for _, row in rows.iterrows():
            if row["form"] == "keras (reference)":  # the .keras file: where float32 sits too
                continue
            ax.annotate(row["form"], (row["gzip bytes"], row["top-1"]),
                        textcoords="offset points", xytext=(4, 4), fontsize=7)
    styles = iter([":", "--", "-."])
    for label, size in references.items():
        ax.axvline(size, color="grey", linestyle=next(styles, ":"), label=f"{label} (ImageNet)")
    ax.set_xscale("log")
    ax.set(xlabel="size after gzip (bytes, log scale)", ylabel="top-1 (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return _save(fig, path)
