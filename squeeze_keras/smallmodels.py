"""The small-models study of a run: export, prune, export again, and check the results against its bars.

The study asks whether SqueezeNet on CIFAR-10 reaches the sizes of the
SqueezeNet paper's Deep Compression row: a full-integer int8 model under
850 KB within 1 point of the float model, and a pruned int8 model that gzips
under 0.5 MB within 1.5 points. `compress_run` makes the tables
(`squeeze_keras.export`, `squeeze_keras.prune`), `size_table` gathers them
and `check_bars` measures them against `INT8_MAX_BYTES` and the rest.

Derived folders record the fingerprint of the model they were made from
(`source.json`); a step whose record no longer matches the current model is
stale: `compress_run` redoes it, `size_table` refuses to use it. They also
record the data they were measured on: `size_table` and `check_bars` refuse
to put results of different data side by side.
"""

from __future__ import annotations

import pathlib
import re
import shutil

import pandas as pd

from squeeze_keras import export, fileio, prune, runs

# The bars of the study (bytes; points of top-1 against the dense float model).
INT8_MAX_BYTES = 850_000
INT8_MAX_DROP = 1.0
PRUNED_MAX_GZIP_BYTES = 500_000
PRUNED_MAX_DROP = 1.5

COLUMNS = ["model", "sparsity", "form", "bytes", "gzip bytes", "top-1", "drop",
           "agreement with keras", "latency ms", "data"]


class StaleResultError(RuntimeError):
    """A derived folder was made from another model than the one its run holds now."""


class MixedDataError(ValueError):
    """Results measured on different data were to be compared in one table."""


def model_sha256(folder):
    """The fingerprint of the model of a run or pruned folder.

    The SHA-256 of `folder/model.keras`; where that file is absent (a pruned
    model is not committed), the `model_sha256` its `source.json` recorded
    when it was written (`None` for a record that could not know it).

    Raises:
        FileNotFoundError: neither the model nor a record of it exists.
    """
    folder = pathlib.Path(folder)
    if (folder / "model.keras").exists():
        return runs.model_fingerprint(folder / "model.keras")
    source = export.read_source(folder)
    if source is None or "model_sha256" not in source:
        raise FileNotFoundError(f"{folder} holds no model.keras and no record of one.")
    return source["model_sha256"]


def _made_from(derived, fingerprint) -> bool:
    source = export.read_source(derived)
    return source is not None and source.get("source_sha256") == fingerprint


def _pruned_folders(run_dir, limit=None) -> list[pathlib.Path]:
    suffix = "" if limit is None else f"_limit{limit}"
    pattern = re.compile(rf"pruned\d+{suffix}")
    return sorted(p for p in pathlib.Path(run_dir).glob("pruned*")
                  if p.is_dir() and pattern.fullmatch(p.name))


def _stale(what, folder, remedy):
    return StaleResultError(
        f"{folder} was made from another model than {what} now holds (its source.json "
        f"records another fingerprint, or none): {remedy}, or run "
        "`smallmodels.compress_run`, which redoes stale steps.")


def size_table(run_dir, limit=None) -> pd.DataFrame:
    """Every exported form of a run and of its pruned variants (`RUN/pruned*`), one row each.

    Reads the `litert.csv` tables that `export_run` wrote, after checking that
    each was made from the model its folder holds now. Adds `model` (`dense`
    or the pruned folder's name), `sparsity` and `drop` (points of top-1 lost
    against the dense Keras model).

    Args:
        run_dir: a run folder.
        limit: read the smoke tables of a `compress_run(limit=...)`
            (`litert_limit<N>`, `pruned<p>_limit<N>`) instead of the full ones.
            Defaults to `None`.

    Raises:
        FileNotFoundError: the run has not been exported yet.
        StaleResultError: a table or pruned folder was made from another model.
        MixedDataError: the tables were measured on different data, on other
            data than the run was trained on, or record none.
    """
    run_dir = pathlib.Path(run_dir)
    dense_dir = export.litert_dir(run_dir, limit)
    if not (dense_dir / export.TABLE_FILE).exists():
        raise FileNotFoundError(
            f"{run_dir} has no {dense_dir.name}/{export.TABLE_FILE}: export it first "
            f"(`python -m squeeze_keras export {run_dir}`).")
    dense_sha256 = model_sha256(run_dir)
    if not _made_from(dense_dir, dense_sha256):
        raise _stale(run_dir / "model.keras", dense_dir,
                     f"export it again (`python -m squeeze_keras export {run_dir}`)")
    frames = [pd.read_csv(dense_dir / export.TABLE_FILE).assign(model="dense", sparsity=0.0)]
    table_dirs = [dense_dir]
    for pruned in _pruned_folders(run_dir, limit):
        table_dir = export.litert_dir(pruned, limit)
        if not (table_dir / export.TABLE_FILE).exists():
            continue
        if not _made_from(pruned, dense_sha256):
            raise _stale(run_dir / "model.keras", pruned,
                         f"prune it again (`python -m squeeze_keras prune {run_dir}`)")
        if not _made_from(table_dir, model_sha256(pruned)):
            raise _stale(pruned, table_dir,
                         f"export it again (`python -m squeeze_keras export {pruned}`)")
        metrics = fileio.read_json(pruned / "metrics.json")
        frames.append(pd.read_csv(table_dir / export.TABLE_FILE).assign(
            model=pruned.name, sparsity=float(metrics["sparsity"])))
        table_dirs.append(table_dir)
    labels = _check_same_data(run_dir, table_dirs)
    frames = [frame.assign(data=label) for frame, label in zip(frames, labels)]
    table = pd.concat(frames, ignore_index=True)
    reference = float(table.loc[(table["model"] == "dense")
                                & (table["form"] == "keras (reference)"), "top-1"].iloc[0])
    table["drop"] = (reference - table["top-1"]).round(2)
    return table[COLUMNS]


def _check_same_data(run_dir, table_dirs) -> list[str]:
    """The data label of each table, after checking that all were measured on the run's data."""
    trained_on = runs.stored_data(run_dir)
    recorded = []
    for table_dir in table_dirs:
        data = export.recorded_data(table_dir)
        if data is None:
            raise MixedDataError(
                f"{table_dir} records no data it was measured on (its source.json has no "
                f"`data`): export it again (`python -m squeeze_keras export "
                f"{table_dir.parent} --data ...`).")
        recorded.append(data)
    if trained_on is not None:
        reference, against = trained_on, "the run was trained on"
    else:
        reference, against = recorded[0], f"{table_dirs[0]} was measured on"
    for table_dir, data in zip(table_dirs, recorded):
        if not runs.same_data(reference, data):
            raise MixedDataError(
                f"{table_dir} was measured on {runs.describe_data(data)}, but {against} "
                f"{runs.describe_data(reference)}: results of different data are not compared. "
                f"Export it again on the run's data (`python -m squeeze_keras export "
                f"{table_dir.parent} --data ...`).")
    return [runs.identity_label(data) for data in recorded]


def check_bars(table: pd.DataFrame) -> pd.DataFrame:
    """The study's bars against a `size_table`: one row per check, with `met` True/False.

    Dense full-integer int8: under `INT8_MAX_BYTES` and within `INT8_MAX_DROP`
    points of the float model. Each pruned variant's int8 model: gzip'ed
    under `PRUNED_MAX_GZIP_BYTES` (the paper's 0.47 MB) and within
    `PRUNED_MAX_DROP` points of the dense float model.

    Raises:
        MixedDataError: the table's `data` column names more than one data source.
    """
    if "data" in table.columns and table["data"].nunique(dropna=False) > 1:
        raise MixedDataError(
            "The table mixes results measured on different data "
            f"({', '.join(map(str, table['data'].unique()))}): its drops would compare "
            "accuracies of different test sets. Measure every model on the same data.")
    rows = []

    def add(what, measured, limit, met):
        rows.append({"check": what, "measured": measured, "limit": limit, "met": bool(met)})

    int8 = table[table["form"] == "int8"].set_index("model")
    if "dense" in int8.index:
        dense = int8.loc["dense"]
        add("dense int8: bytes", int(dense["bytes"]), INT8_MAX_BYTES,
            dense["bytes"] < INT8_MAX_BYTES)
        add("dense int8: top-1 drop (points)", float(dense["drop"]), INT8_MAX_DROP,
            dense["drop"] <= INT8_MAX_DROP)
    for model, row in int8.drop(index="dense", errors="ignore").iterrows():
        add(f"{model} int8: gzip bytes", int(row["gzip bytes"]), PRUNED_MAX_GZIP_BYTES,
            row["gzip bytes"] < PRUNED_MAX_GZIP_BYTES)
        add(f"{model} int8: top-1 drop (points)", float(row["drop"]), PRUNED_MAX_DROP,
            row["drop"] <= PRUNED_MAX_DROP)
    return pd.DataFrame(rows, columns=["check", "measured", "limit", "met"])


def _remove(folder):
    if folder.is_dir():
        shutil.rmtree(folder)


def compress_run(run_dir, *, data="tfds", sparsity=0.6, prune_epochs=6, data_dir=None,
                 limit=None, representative=256, latency_runs=100, verbose=2) -> pd.DataFrame:
    """The whole small-models study of one run: export, prune, export the pruned model.

    A step whose output exists and was made from the current model is
    reused; one made from another model (its recorded fingerprint differs)
    is removed and redone, with everything derived from it.

    Args:
        run_dir: a finished run folder.
        data: the data source (as `run_experiment`). Defaults to `"tfds"`.
        sparsity: fraction of zeros of the pruned model, in (0, 1). Defaults to `0.6`.
        prune_epochs: fine-tuning epochs of the pruning. Defaults to `6`.
        data_dir: tfds data folder. Defaults to tfds' own.
        limit: smoke runs: a seeded random subset of this many examples per
            split for the fine-tuning and the evaluation, written to their own
            folders (`litert_limit<N>`, `pruned<p>_limit<N>`). Defaults to `None`.
        representative: train images that calibrate int8. Defaults to `256`.
        latency_runs: timed batch-1 inferences per form. Defaults to `100`.
        verbose: Keras `fit` verbosity of the fine-tuning. Defaults to `2`.

    Returns:
        `size_table(run_dir, limit)`.
    """
    run_dir = pathlib.Path(run_dir)
    pruned = prune.pruned_dir(run_dir, sparsity, limit)  # checks `sparsity` first
    export.check_data(run_dir, data, data_dir, pruned, what="the small-models study")
    options = dict(data=data, data_dir=data_dir, eval_limit=limit,
                   representative=representative, latency_runs=latency_runs)
    dense_sha256 = model_sha256(run_dir)
    dense_dir = export.litert_dir(run_dir, limit)
    if not ((dense_dir / export.TABLE_FILE).exists() and _made_from(dense_dir, dense_sha256)):
        _remove(dense_dir)
        export.export_run(run_dir, out_dir=dense_dir, **options)
    if not ((pruned / "metrics.json").exists() and _made_from(pruned, dense_sha256)):
        _remove(pruned)
        prune.prune_run(run_dir, data=data, sparsity=sparsity, epochs=prune_epochs,
                        out_dir=pruned, data_dir=data_dir, limit=limit, verbose=verbose)
    pruned_table = export.litert_dir(pruned, limit)
    if not ((pruned_table / export.TABLE_FILE).exists()
            and _made_from(pruned_table, model_sha256(pruned))):
        _remove(pruned_table)
        export.export_run(pruned, out_dir=pruned_table, **options)
    return size_table(run_dir, limit)
