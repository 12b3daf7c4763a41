"""Training: one call runs an experiment into a self-describing run folder.

A run folder holds `config.json`, `history.csv` (one row per epoch, kept
across resumes), `metrics.json` (test top-1/top-5, parameters, timing,
hardware, data, versions) and `model.keras` (the final model, no optimizer
state). While a run is in progress, `backup/` lets `BackupAndRestore` resume
it after an interruption; `checkpoints/best.keras` keeps the epoch with the
best validation accuracy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import glob
import importlib
import json
import os
import pathlib
import platform
import shutil
import statistics
import time

import keras
import pandas as pd

from squeeze_keras import data as data_lib
from squeeze_keras import experiments

VERSION = "0.1.0"


@dataclasses.dataclass
class RunResult:
    """What `run_experiment` returns: the run folder, its history and metrics."""

    run_dir: pathlib.Path
    history: pd.DataFrame
    metrics: dict


# ---------------------------------------------------------------- devices


def accelerators() -> list[str]:
    """Names of the GPUs/TPUs the Keras backend sees (empty on a CPU-only machine)."""
    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        gpus = tf.config.list_physical_devices("GPU")
        names = [tf.config.experimental.get_device_details(g).get("device_name", "GPU")
                 for g in gpus]
        return names + [d.name for d in tf.config.list_logical_devices("TPU")]
    if backend == "jax":
        import jax

        return [d.device_kind for d in jax.devices() if d.platform != "cpu"]
    if backend == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    return []


def backend_version() -> dict:
    """The Keras backend and its version, for `metrics.json`."""
    backend = keras.backend.backend()
    module = importlib.import_module(backend) if backend in ("tensorflow", "jax", "torch") else None
    return {"backend": backend, backend: getattr(module, "__version__", "?")}


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def select_precision(policy: str = "auto") -> str:
    """The mixed-precision policy for this machine, unless `policy` names one.

    `auto`: `mixed_float16` on a GPU, `mixed_bfloat16` on a TPU or a CPU with native
    bf16 arithmetic (AVX-512 BF16 or AMX), else `float32` (on CPUs without
    it, bf16 is emulated and several times slower than float32).
    """
    known = ("auto", "float32", "mixed_float16", "mixed_bfloat16")
    if policy not in known:
        raise ValueError(f"`precision` must be one of {known}. Received: precision={policy!r}")
    if policy != "auto":
        return policy
    devices = accelerators()
    if any("TPU" in d for d in devices):
        return "mixed_bfloat16"
    if devices:
        return "mixed_float16"
    if _cpu_flags() & {"avx512_bf16", "amx_bf16"}:
        return "mixed_bfloat16"
    return "float32"


def hardware() -> str:
    """A one-line description of the accelerator or CPU that trains."""
    devices = accelerators()
    if devices:
        return f"{len(devices)}x {devices[0]}"
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{model}, {os.cpu_count()} cores (CPU)"


def distribution_strategy():
    """TPU strategy on a Colab TPU, `MirroredStrategy` on several GPUs, else the default.

    With N replicas, `run_experiment` feeds global batches of N x the
    protocol's batch size and scales the learning rate by N (the linear
    scaling rule), so each replica sees the protocol's batch size. Under the
    JAX and PyTorch backends there is no `tf.distribute`: returns `None` (one
    device).
    """
    if keras.backend.backend() != "tensorflow":
        return None
    import tensorflow as tf

    # Only look for a TPU where one can be (Colab TPU runtimes, TPU VMs): the
    # resolver would otherwise query cloud metadata servers.
    if os.environ.get("COLAB_TPU_ADDR") or os.environ.get("TPU_NAME") or glob.glob("/dev/accel*"):
        try:
            resolver = tf.distribute.cluster_resolver.TPUClusterResolver()
            tf.config.experimental_connect_to_cluster(resolver)
            tf.tpu.experimental.initialize_tpu_system(resolver)
            return tf.distribute.TPUStrategy(resolver)
        except (ValueError, tf.errors.NotFoundError, RuntimeError):
            pass
    if len(tf.config.list_logical_devices("GPU")) > 1:
        return tf.distribute.MirroredStrategy()
    return tf.distribute.get_strategy()


# ---------------------------------------------------------------- training


class EpochStats(keras.callbacks.Callback):
    """Adds `seconds` (wall time of the epoch) and `lr` to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start
            lr = self.model.optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))


def make_optimizer(protocol: experiments.Protocol, steps_per_epoch: int, epochs: int,
                   scale: float = 1.0):
    """The protocol's optimizer; `scale` multiplies the learning rate (replicas)."""
    lr = protocol.learning_rate * scale
    if protocol.schedule == "warmup_cosine":
        warmup = protocol.warmup_epochs * steps_per_epoch
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr * 0.1, decay_steps=max(epochs * steps_per_epoch - warmup, 1),
            warmup_target=lr, warmup_steps=warmup,
        )
    wd = protocol.weight_decay or None
    if protocol.optimizer == "sgd":
        return keras.optimizers.SGD(lr, momentum=protocol.momentum, nesterov=True, weight_decay=wd)
    if protocol.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=protocol.weight_decay)
    return keras.optimizers.Adam(lr, weight_decay=wd)


def _smoothed_sparse_crossentropy(smoothing: float, classes: int):
    # Keras' sparse loss has no label smoothing; one-hot the labels first.
    def loss(y_true, y_pred):
        y = keras.ops.one_hot(keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32"), classes)
        return keras.losses.categorical_crossentropy(y, y_pred, label_smoothing=smoothing)

    return loss


def default_steps_per_execution() -> int:
    """Training steps per compiled call: 1 on CPUs, 32 where a GPU or TPU is visible.

    A batch of 64 CIFAR images is a few milliseconds of GPU work, about what
    one trip from Python to the device costs, so on accelerators several steps
    run per call. On a CPU each step takes tens of milliseconds or more and
    `steps_per_execution` brings nothing (benchmarks/README.md).
    """
    return 32 if accelerators() else 1


def compile_model(model, config: experiments.ExperimentConfig, steps_per_epoch: int,
                  epochs: int, scale: float = 1.0, steps_per_execution: int | None = None):
    """Compiles with the protocol's optimizer and loss, and stable metric names.

    `steps_per_execution` defaults to `default_steps_per_execution()`. Callbacks
    that act per batch then run once per that many steps.
    """
    smoothing = config.protocol.label_smoothing
    if steps_per_execution is None:
        steps_per_execution = default_steps_per_execution()
    if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
        raise ValueError("`steps_per_execution` must be a positive integer. "
                         f"Received: steps_per_execution={steps_per_execution!r}")
    model.compile(
        steps_per_execution=steps_per_execution,
        optimizer=make_optimizer(config.protocol, steps_per_epoch, epochs, scale),
        loss=(_smoothed_sparse_crossentropy(smoothing, config.classes) if smoothing
              else keras.losses.SparseCategoricalCrossentropy()),
        metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
        ],
    )
    return model


def run_name(config: experiments.ExperimentConfig, seed: int = 0) -> str:
    """`<experiment>`, plus `_<protocol>` unless `paper`, plus `_seed<k>` unless seed 0."""
    protocol = "" if config.protocol.name == "paper" else f"_{config.protocol.name}"
    return f"{config.name}{protocol}{f'_seed{seed}' if seed else ''}"


def run_dir_for(config: experiments.ExperimentConfig, out_dir, seed: int = 0) -> pathlib.Path:
    """`out_dir/<run_name>`: e.g. `e4`, `e4_tuned`, `e4_seed1`."""
    return pathlib.Path(out_dir) / run_name(config, seed)


def _config_dict(config, epochs, seed, source, limit):
    return {"experiment": dataclasses.asdict(config), "epochs": epochs, "seed": seed,
            "source": source, "limit": limit}


def _same_run(stored: dict, wanted: dict) -> bool:
    # Fields added to the config after a run was made do not invalidate it.
    shared = stored["experiment"].keys() & wanted["experiment"].keys()
    return all(stored["experiment"][k] == wanted["experiment"][k] for k in shared) and all(
        stored.get(k) == wanted[k] for k in wanted if k != "experiment")


def load_run(run_dir) -> RunResult:
    """Reads a finished run folder (history and metrics)."""
    run_dir = pathlib.Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no metrics.json).")
    history = pd.read_csv(run_dir / "history.csv")
    return RunResult(run_dir, history, json.loads(metrics_file.read_text()))


def load_trained_model(run_dir, purpose: str = "this"):
    """A run's config (as registered), its preprocessing and its model, rebuilt in float32.

    Rebuilding (instead of using the loaded file as is) gives a float32 model
    even when the run trained under a mixed-precision policy on a GPU.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "model.keras").exists():
        raise FileNotFoundError(
            f"{run_dir} holds no model.keras: {purpose} needs a finished run "
            "(`python -m squeeze_keras train ...`).")
    stored = json.loads((run_dir / "config.json").read_text())["experiment"]
    config = experiments.get(stored["name"])
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy("float32")
    try:
        model = config.build_model()
    finally:
        keras.mixed_precision.set_global_policy(previous)
    model.set_weights(keras.models.load_model(run_dir / "model.keras").get_weights())
    return config, stored["preprocessing"], model


def _source_label(data) -> str:
    if isinstance(data, data_lib.Splits):
        return data.source
    data = os.fspath(data)
    return data if data in ("tfds", "synthetic") else f"folder:{pathlib.Path(data).name}"


def run_experiment(name_or_config, *, epochs=None, data="tfds", out_dir="results", seed=0,
                   protocol=None, limit=None, precision="auto", data_dir=None,
                   overwrite=False, verbose=1, callbacks=(), strategy=None) -> RunResult:
    """Trains and evaluates one experiment into `out_dir/<run_name>` (e.g. `e4`, `e4_seed1`).

    Compiles the experiment's model with its protocol, fits with callbacks
    (CSV history, best checkpoint, `BackupAndRestore`, `TerminateOnNaN`),
    evaluates on the test split and writes the run folder. Calling it again
    resumes an interrupted run, and returns a finished one as it is (same
    config, epochs, seed and data) instead of training again.

    Args:
        name_or_config: a registered experiment name or an `ExperimentConfig`.
        epochs: epochs to train. Defaults to the config's (20).
        data: `"tfds"`, `"synthetic"`, an image-folder path, or `Splits`.
            Defaults to `"tfds"`.
        out_dir: folder of run folders. Defaults to `"results"`.
        seed: seed of weights, shuffling and augmentation. Defaults to `0`.
        protocol: `"paper"`, `"tuned"` or a `Protocol`. Defaults to the config's.
        limit: keep only this many examples per split (smoke runs). Defaults to `None`.
        precision: `"auto"` or a Keras dtype policy name. Defaults to `"auto"`.
        data_dir: tfds data folder. Defaults to tfds' own.
        overwrite: retrain even if a finished run exists. Defaults to `False`.
        verbose: Keras `fit` verbosity (1 = a progress bar per epoch).
        callbacks: extra Keras callbacks.
        strategy: a `tf.distribute.Strategy`. Defaults to `distribution_strategy()`.

    Returns:
        A `RunResult` (run folder, history DataFrame, metrics dict).
    """
    config = experiments.get(name_or_config)
    if protocol is not None:
        config = config.with_protocol(protocol)
    epochs = config.epochs if epochs is None else epochs
    if not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer. Received: epochs={epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    run_dir = run_dir_for(config, out_dir, seed)
    wanted = _config_dict(config, epochs, seed, _source_label(data), limit)
    if (run_dir / "metrics.json").exists() and not overwrite:
        stored = json.loads((run_dir / "config.json").read_text())
        if _same_run(stored, json.loads(json.dumps(wanted))):
            return load_run(run_dir)
        raise FileExistsError(
            f"{run_dir} already holds a finished run with another config; pass "
            "overwrite=True (CLI: --overwrite) or choose another out_dir."
        )
    run_dir.mkdir(parents=True, exist_ok=True)
    if overwrite:  # start afresh: no resume from an older run's backup either
        for name in ("metrics.json", "history.csv", "model.keras"):
            (run_dir / name).unlink(missing_ok=True)
        shutil.rmtree(run_dir / "backup", ignore_errors=True)
    (run_dir / "config.json").write_text(json.dumps(wanted, indent=2) + "\n")

    strategy = strategy or distribution_strategy()
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    batch_size = config.protocol.batch_size * replicas
    if isinstance(data, data_lib.Splits):
        splits = data
    else:
        splits = data_lib.load(
            config.dataset, data, preprocessing=config.preprocessing, batch_size=batch_size,
            seed=seed, limit=limit, data_dir=data_dir,
        )
    if splits.classes != config.classes:
        raise ValueError(
            f"Experiment {config.name!r} expects {config.classes} classes but the data has "
            f"{splits.classes} ({splits.dataset})."
        )

    policy = select_precision(precision)
    previous_policy = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(seed)
        steps = -(-splits.train_size // batch_size)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = config.build_model()
            compile_model(model, config, steps, epochs, scale=replicas)
        (run_dir / "checkpoints").mkdir(exist_ok=True)
        history_file = run_dir / "history.csv"
        fit_callbacks = [
            EpochStats(),
            keras.callbacks.BackupAndRestore(str(run_dir / "backup")),
            keras.callbacks.TerminateOnNaN(),
            keras.callbacks.ModelCheckpoint(
                str(run_dir / "checkpoints" / "best.keras"), monitor="val_accuracy",
                save_best_only=True),
            keras.callbacks.CSVLogger(str(history_file), append=True),
            *callbacks,
        ]
        # The pipeline shuffles itself (seeded); Keras must not try to.
        model.fit(splits.train, validation_data=splits.test, epochs=epochs, shuffle=False,
                  callbacks=fit_callbacks, verbose=verbose)
        history = pd.read_csv(history_file)
        # A resume can repeat an epoch that was logged but not backed up: keep the last.
        history = history.drop_duplicates("epoch", keep="last").sort_values("epoch")
        history.to_csv(history_file, index=False)
        if len(history) < epochs or history[["loss"]].isna().any().any():
            raise RuntimeError(
                f"Training stopped after {len(history)} of {epochs} epochs "
                f"(non-finite loss?). See {history_file}."
            )
        results = model.evaluate(splits.test, return_dict=True, verbose=0)
        # Keras 3 always saves a compiled model's optimizer: save an uncompiled copy.
        final = config.build_model()
        final.set_weights(model.get_weights())
        final.save(run_dir / "model.keras")
    finally:
        keras.mixed_precision.set_global_policy(previous_policy)

    metrics = {
        "experiment": config.name,
        "description": config.description,
        "protocol": config.protocol.name,
        "dataset": config.dataset,
        "data_source": _source_label(data),
        "train_size": splits.train_size,
        "test_size": splits.test_size,
        "epochs": int(len(history)),
        "top1": round(100 * float(results["accuracy"]), 2),
        "top5": round(100 * float(results["top5"]), 2),
        "test_loss": round(float(results["loss"]), 4),
        "best_val_top1": round(100 * float(history["val_accuracy"].max()), 2),
        "params": int(model.count_params()),
        "report_top1": config.report_top1,
        "report_params": config.report_params,
        "seconds_per_epoch": round(statistics.median(history["seconds"]), 1),
        "train_seconds": round(float(history["seconds"].sum()), 1),
        "batch_size": batch_size,
        "replicas": replicas,
        "precision": policy,
        "hardware": hardware(),
        "seed": seed,
        "limit": limit,
        "versions": {
            "squeeze_keras": VERSION, **backend_version(),
            "keras": keras.__version__, "python": platform.python_version(),
        },
        "finished": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    }
    (run_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return RunResult(run_dir, history, metrics)
