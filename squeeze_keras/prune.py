"""Magnitude pruning for Keras 3, the first stage of Deep Compression.

`tensorflow-model-optimization` 0.8.1 (the current release) is built on the
Keras 2 API: with TensorFlow 2.21 and Keras 3 alone it does not even import
("Keras cannot be imported"; it wants the `tf-keras` package), and its
wrappers take Keras 2 models, not this project's Keras 3 ones. So this is a
small replacement: during fine-tuning, after every training step, each
Fire-module kernel keeps only its largest-magnitude weights, with the pruned
fraction rising from 0 to the target along the cubic schedule of Zhu & Gupta
("To prune, or not to prune", 2017). Biases are not pruned.

A pruned folder (`RUN/pruned60`) belongs to the model it was pruned from:
its `source.json` records the SHA-256 of the run's `model.keras`
(`source_sha256`) and of the pruned `model.keras` it holds (`model_sha256`,
which stays checkable where that file, not committed, is absent) and the
data it was fine-tuned and measured on (`data`, `data_identity`). Pruning
into a folder again removes its exports, which belonged to the old model.
Everything that can fail before the fine-tuning (the run's files, the data,
whether the output folder can be written) is checked first, and the results
are written to a staging folder and moved in only once all of them exist.
"""

from __future__ import annotations

import numbers
import os
import pathlib
import shutil

import keras
import numpy as np

from squeeze_keras import data as data_lib
from squeeze_keras import export, fileio, runs
from squeeze_keras.train import EpochRandomness, compile_model

SOURCE_FILE = export.SOURCE_FILE


def sparsity_at(step: int, target: float, begin: int, end: int) -> float:
    """Target fraction of zeros at `step`: 0 before `begin`, `target` from `end` on."""
    if step < begin:
        return 0.0
    progress = min(1.0, (step - begin) / max(end - begin, 1))
    return target * (1 - (1 - progress) ** 3)


def prunable_kernels(model):
    """Kernels of the Fire modules: conv1 and conv10 (about 1 % of the weights) stay dense,
    as the first and last layers are the most sensitive to pruning."""
    return [layer.kernel for layer in model.layers
            if isinstance(layer, keras.layers.Conv2D) and layer.name not in ("conv1", "conv10")]


def apply_magnitude_masks(model, sparsity: float):
    """Zeroes the smallest `sparsity` fraction of every prunable kernel, per layer."""
    for kernel in prunable_kernels(model):
        w = keras.ops.convert_to_numpy(kernel)
        k = int(round(sparsity * w.size))
        if k == 0:
            continue
        threshold = np.partition(np.abs(w).ravel(), k - 1)[k - 1]
        kernel.assign(np.where(np.abs(w) > threshold, w, 0).astype(w.dtype))


def sparsity_of(model) -> float:
    """Fraction of zeros over the prunable kernels."""
    kernels = [keras.ops.convert_to_numpy(k) for k in prunable_kernels(model)]
    return float(sum((k == 0).sum() for k in kernels) / sum(k.size for k in kernels))


class MagnitudePruning(keras.callbacks.Callback):
    """Keeps the prunable kernels at the scheduled sparsity after every training step."""

    def __init__(self, target: float, begin_step: int, end_step: int):
        super().__init__()
        if not 0 < target < 1:
            raise ValueError(f"`target` must be in (0, 1). Received: target={target!r}")
        self.target, self.begin, self.end = target, begin_step, end_step
        self.step = 0

    def on_train_batch_end(self, batch, logs=None):
        self.step += 1
        apply_magnitude_masks(self.model, sparsity_at(self.step, self.target, self.begin, self.end))


def _check_sparsity(sparsity):
    if (isinstance(sparsity, bool) or not isinstance(sparsity, numbers.Real)
            or not 0 < sparsity < 1):
        raise ValueError("`sparsity` must be a fraction in (0, 1), e.g. 0.6 for 60 %. "
                         f"Received: sparsity={sparsity!r}")


def pruned_dir(run_dir, sparsity: float, limit=None) -> pathlib.Path:
    """Where `prune_run` writes by default: `RUN/pruned60` for 60 % sparsity.

    With a `limit` (smoke runs), `RUN/pruned60_limit<N>`, so that a smoke
    model never replaces the full one.
    """
    _check_sparsity(sparsity)
    suffix = "" if limit is None else f"_limit{limit}"
    return pathlib.Path(run_dir) / f"pruned{round(100 * sparsity)}{suffix}"


def prune_run(run_dir, *, data="tfds", sparsity=0.6, epochs=6, out_dir=None, data_dir=None,
              limit=None, verbose=2) -> dict:
    """Fine-tunes a run's model with magnitude pruning to `sparsity`; saves it beside the run.

    The schedule reaches the target after 2/3 of the fine-tuning steps; the
    rest recovers accuracy at full sparsity (pruning in one shot, without
    fine-tuning, loses most of it). Fine-tuning runs in float32, whatever
    policy the run trained under. Writes `model.keras`, `config.json` (the
    run's), `metrics.json` and `source.json` into `out_dir`, each atomically,
    after removing the folder's exports (`litert*/`) made from an older model.

    Args:
        run_dir: a finished run folder.
        data: the training data source (as `run_experiment`). Defaults to `"tfds"`.
        sparsity: fraction of zeros of the Fire modules' kernels, in (0, 1).
            Defaults to `0.6`.
        epochs: fine-tuning epochs. Defaults to `6`.
        out_dir: where to write. Defaults to `pruned_dir(run_dir, sparsity, limit)`.
        data_dir: tfds data folder. Defaults to tfds' own.
        limit: a seeded random subset of this many examples per split (smoke
            runs), or `None` for all. Defaults to `None`.
        verbose: Keras `fit` verbosity. Defaults to `2`.

    Returns:
        The metrics written to `metrics.json` (sparsity reached, top-1 on the
        test split, the unpruned model's top-1, ...).

    Raises:
        ValueError: `data` is not what the run was trained on and `out_dir`
            is inside the run folder (`export.check_data`), or a file of the
            run cannot be read (named).
        PermissionError: the output folder cannot be written (before any
            fine-tuning).
    """
    _check_sparsity(sparsity)
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Integral) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer. Received: epochs={epochs!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, numbers.Integral)
                              or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None. Received: limit={limit!r}")
    run_dir = pathlib.Path(run_dir)
    out_dir = pruned_dir(run_dir, sparsity, limit) if out_dir is None else pathlib.Path(out_dir)
    identity = export.check_data(run_dir, data, data_dir, out_dir, what="pruning")
    with runs.dtype_policy("float32"):
        config, model = runs.load_trained_model(run_dir)
    source_sha256 = runs.model_fingerprint(run_dir / "model.keras")
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(
            f"{run_dir} holds no metrics.json: run the `train` command that made it again, "
            "which rebuilds it without retraining.")
    unpruned = fileio.read_json(metrics_file)
    if not isinstance(unpruned, dict) or "top1" not in unpruned:
        raise fileio.UnreadableFileError(f"{metrics_file} holds no top1: it was not written "
                                         "by `train`.")
    stored_config = (run_dir / "config.json").read_text()
    staging = _staging_folder(out_dir)  # fails here, before the fine-tuning, if read-only
    try:
        metrics = _prune(model, config, data=data, data_dir=data_dir, limit=limit,
                         sparsity=sparsity, epochs=epochs, verbose=verbose, identity=identity)
        metrics["unpruned_top1"] = unpruned["top1"]
        runs.save_model(model, config, staging / "model.keras")
        fileio.write_text(staging / "config.json", stored_config)
        fileio.write_json(staging / "metrics.json", metrics)
        fileio.write_json(staging / SOURCE_FILE, {
            "source": "../model.keras", "source_sha256": source_sha256,
            "model_sha256": runs.model_fingerprint(staging / "model.keras"),
            "data": runs.data_label(data), "data_identity": identity,
        })
        # What described the folder's previous model goes before the new model moves in.
        for name in (SOURCE_FILE, "metrics.json"):
            (out_dir / name).unlink(missing_ok=True)
        export.remove_exports(out_dir)
        for name in ("model.keras", "config.json", "metrics.json", SOURCE_FILE):
            os.replace(staging / name, out_dir / name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        if out_dir.is_dir() and not any(out_dir.iterdir()):
            out_dir.rmdir()  # made for this call, and nothing came of it
    return metrics


def _staging_folder(out_dir: pathlib.Path) -> pathlib.Path:
    """An empty folder beside `out_dir` for its new files; raises PermissionError now if
    `out_dir` cannot be written."""
    created = not out_dir.exists()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".partial-{os.getpid()}"
    try:
        if not os.access(out_dir, os.W_OK | os.X_OK):
            raise PermissionError(13, "Permission denied", str(out_dir / "model.keras"))
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
    except BaseException:
        if created:
            shutil.rmtree(out_dir, ignore_errors=True)
        raise
    return staging


def _prune(model, config, *, data, data_dir, limit, sparsity, epochs, verbose,
           identity=None) -> dict:
    """Fine-tunes `model` with magnitude pruning in place; its metrics.

    A hold-out run (`identity` from `export.check_data`) is fine-tuned on its
    own training images and measured on its held-out ones.
    """
    with runs.dtype_policy("float32"):
        splits = data_lib.load(config.dataset, data, preprocessing=config.preprocessing,
                               batch_size=config.protocol.batch_size, data_dir=data_dir,
                               limit=limit, **export.holdout_arguments(identity))
        export.check_split(splits, identity)
        steps = -(-splits.train_size // config.protocol.batch_size)
        compile_model(model, config, steps, epochs, steps_per_execution=1)  # masks every step
        # Batches are (images, labels, weights): padding rows weigh 0 in the loss.
        model.fit(splits.train, epochs=epochs, shuffle=False, verbose=verbose,
                  callbacks=[EpochRandomness(splits.train),
                             MagnitudePruning(sparsity, 0, int(2 / 3 * steps * epochs))])
        apply_magnitude_masks(model, sparsity)  # exactly the target at the end
        # Top-1 of every test image, from the raw arrays: no padding rows to weigh out.
        scores = model.predict(data_lib.normalize(splits.x_test, config.preprocessing),
                               batch_size=config.protocol.batch_size, verbose=0)
        top1 = float((scores.argmax(1) == splits.y_test).mean())
    return {"sparsity": round(sparsity_of(model), 4), "target_sparsity": sparsity,
            "fine_tune_epochs": epochs, "top1": round(100 * top1, 2), "unpruned_top1": None,
            "test_size": splits.test_size}
