"""Magnitude pruning for Keras 3, the first stage of Deep Compression.

`tensorflow-model-optimization` 0.8.1 (the current release) is built on the
Keras 2 API: with TensorFlow 2.21 and Keras 3 alone it does not even import
("Keras cannot be imported"; it wants the `tf-keras` package), and its
wrappers take Keras 2 models, not this project's Keras 3 ones. So this is a
small replacement: during fine-tuning, after every training step, each
Fire-module kernel keeps only its largest-magnitude weights, with the pruned
fraction rising from 0 to the target along the cubic schedule of Zhu & Gupta
("To prune, or not to prune", 2017). Biases are not pruned.
"""

from __future__ import annotations

import json
import pathlib

import keras
import numpy as np


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


def pruned_dir(run_dir, sparsity: float) -> pathlib.Path:
    """Where `prune_run` writes by default: `RUN/pruned60` for 60 % sparsity."""
    return pathlib.Path(run_dir) / f"pruned{round(100 * sparsity)}"


def prune_run(run_dir, *, data="tfds", sparsity=0.6, epochs=6, out_dir=None, data_dir=None,
              limit=None, verbose=2):
    """Fine-tunes a run's model with magnitude pruning to `sparsity`; saves it beside the run.

    The schedule reaches the target after 2/3 of the fine-tuning steps; the
    rest recovers accuracy at full sparsity. The defaults come from the
    trained baseline: 60 % is what it takes for the full-integer model to gzip
    under 0.5 MB (int8 + gzip: 763 KB dense, 530 KB at 50 %, 457 KB at 60 %,
    377 KB at 70 % sparsity), and 6 epochs what it takes to keep its accuracy
    (top-1 54.59 % after 3 epochs, 58.09 % after 6, unpruned 57.94 %; one-shot
    pruning to 50 % without fine-tuning leaves 13.7 %). Writes
    `model.keras`, `config.json` and `metrics.json` into `out_dir` (default
    `pruned_dir(run_dir, sparsity)`) and returns the metrics.
    """
    from squeeze_keras import data as data_lib
    from squeeze_keras.train import compile_model, load_trained_model

    run_dir = pathlib.Path(run_dir)
    config, preprocessing, model = load_trained_model(run_dir, "pruning")
    splits = data_lib.load(config.dataset, data, preprocessing=preprocessing,
                           batch_size=config.protocol.batch_size, data_dir=data_dir, limit=limit)
    steps = -(-splits.train_size // config.protocol.batch_size)
    compile_model(model, config, steps, epochs, steps_per_execution=1)  # masks after every step
    model.fit(splits.train, epochs=epochs, shuffle=False, verbose=verbose,
              callbacks=[MagnitudePruning(sparsity, 0, int(2 / 3 * steps * epochs))])
    apply_magnitude_masks(model, sparsity)  # exactly the target at the end
    result = model.evaluate(splits.test, return_dict=True, verbose=0)
    out_dir = pathlib.Path(out_dir) if out_dir else pruned_dir(run_dir, sparsity)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = config.build_model()
    final.set_weights(model.get_weights())
    final.save(out_dir / "model.keras")
    (out_dir / "config.json").write_text((run_dir / "config.json").read_text())
    metrics = {"sparsity": round(sparsity_of(final), 4), "target_sparsity": sparsity,
               "fine_tune_epochs": epochs, "top1": round(100 * float(result["accuracy"]), 2),
               "unpruned_top1": json.loads((run_dir / "metrics.json").read_text())["top1"],
               "test_size": splits.test_size}
    (out_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
