"""Training: one call trains an experiment into a run folder, or resumes or returns it.

`run_experiment` checks the arguments and the run folder (`squeeze_keras.runs`)
before it loads any data, trains with Keras `fit` and its callbacks
(`history.csv`, best checkpoint, the resume state, `TerminateOnNaN`),
evaluates on the test split and writes the run folder's files, each
atomically; the resume state is removed only after them. An old run that
`overwrite` replaces is set aside only once the new run's data and config
have passed their checks, and removed once the new run has finished an epoch.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import math
import platform
import statistics
import time

import keras
import numpy as np
import pandas as pd

from squeeze_keras import __version__, augment, classes, devices, experiments, fileio, runs
from squeeze_keras import data as data_lib

# Per-example losses are averaged over the real examples of a batch: the last
# batch of an epoch is padded to full size with examples of weight 0
# (`squeeze_keras.data`), which must not dilute its loss or its gradient. (The
# epoch's reported `loss` still counts that batch as a full one; accuracy and
# top-5 are exact.)
LOSS_REDUCTION = "mean_with_sample_weight"


class DiscardReplaced(keras.callbacks.Callback):
    """Removes the overwritten run (`runs.set_aside`) once the new one has finished an epoch."""

    def __init__(self, run_dir):
        super().__init__()
        self.run_dir = run_dir

    def on_epoch_end(self, epoch, logs=None):
        if math.isfinite((logs or {}).get("loss", 0.0)):  # a NaN epoch is no start
            runs.discard_replaced(self.run_dir)


class EpochStats(keras.callbacks.Callback):
    """Adds `seconds` (wall time of the epoch) and `lr` to the epoch logs."""

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None:
            logs["seconds"] = time.perf_counter() - self._start
            lr = self.model.optimizer.learning_rate
            logs["lr"] = float(keras.ops.convert_to_numpy(lr))


class EpochRandomness(keras.callbacks.Callback):
    """Keys each epoch's random draws to the epoch's number, so a resumed run repeats none.

    Before every epoch it sets the training pipeline to that epoch
    (`data.set_epoch`: order, crops and flips) and restarts the counter of
    every seed generator of the model (dropout; on-device augmentation) at
    `epoch * STRIDE`, keeping each generator's own seed. `BackupAndRestore`
    saves neither (a rebuilt pipeline starts at epoch 0, a rebuilt model's
    seed generators at their first draw), so without this a run resumed at
    epoch 11 would see epoch 1's order, crops and dropout masks again.
    """

    STRIDE = 2 ** 20  # draws a generator may make in one epoch (steps, not images)

    def __init__(self, pipeline):
        super().__init__()
        self.pipeline = pipeline

    def on_epoch_begin(self, epoch, logs=None):
        data_lib.set_epoch(self.pipeline, epoch)
        for state in self.model.variables:
            if state.name == "seed_generator_state":
                seed = keras.ops.convert_to_numpy(state.value)[0]
                state.assign(np.array([seed, epoch * self.STRIDE]).astype(state.dtype))


@keras.saving.register_keras_serializable(package="squeeze_keras")
class WarmupLinearDecay(keras.optimizers.schedules.LearningRateSchedule):
    """A one-cycle triangle: linear from `peak / 10` to `peak` over `warmup_steps`, then
    linear to 0 at `total_steps` (and 0 after)."""

    def __init__(self, peak, warmup_steps, total_steps):
        self.peak, self.warmup_steps, self.total_steps = peak, warmup_steps, total_steps

    def __call__(self, step):
        step = keras.ops.cast(step, "float32")
        warmup = float(max(self.warmup_steps, 1))
        rising = self.peak * (0.1 + 0.9 * keras.ops.minimum(step / warmup, 1.0))
        left = (self.total_steps - step) / float(max(self.total_steps - self.warmup_steps, 1))
        falling = self.peak * keras.ops.clip(left, 0.0, 1.0)
        return keras.ops.where(step < self.warmup_steps, rising, falling)

    def get_config(self):
        return {"peak": self.peak, "warmup_steps": self.warmup_steps,
                "total_steps": self.total_steps}


def make_optimizer(protocol: experiments.Protocol, steps_per_epoch: int, epochs: int,
                   scale: float = 1.0):
    """The protocol's optimizer and schedule; `scale` multiplies the learning rate (replicas).

    Weight decay is decoupled (Keras's `weight_decay`: each step takes
    `learning_rate * weight_decay` of every weight) for every optimizer, SGD included.
    """
    lr = protocol.learning_rate * scale
    warmup = protocol.warmup_epochs * steps_per_epoch
    if protocol.schedule == "warmup_cosine":
        lr = keras.optimizers.schedules.CosineDecay(
            initial_learning_rate=lr * 0.1, decay_steps=max(epochs * steps_per_epoch - warmup, 1),
            warmup_target=lr, warmup_steps=warmup,
        )
    elif protocol.schedule == "warmup_linear":
        lr = WarmupLinearDecay(lr, warmup, epochs * steps_per_epoch)
    if protocol.optimizer == "sgd_nesterov":
        return keras.optimizers.SGD(lr, momentum=0.9, nesterov=True,
                                    weight_decay=protocol.weight_decay or None)
    if protocol.optimizer == "adamw":
        return keras.optimizers.AdamW(lr, weight_decay=protocol.weight_decay)
    return keras.optimizers.Adam(lr, weight_decay=protocol.weight_decay or None)


class SmoothedSparseCrossentropy(keras.losses.Loss):
    """Cross-entropy of integer labels with label smoothing (Keras's sparse loss has none)."""

    def __init__(self, classes: int, smoothing: float, **kwargs):
        super().__init__(**kwargs)
        self.classes, self.smoothing = classes, smoothing

    def call(self, y_true, y_pred):
        labels = keras.ops.cast(keras.ops.reshape(y_true, [-1]), "int32")
        return keras.losses.categorical_crossentropy(
            keras.ops.one_hot(labels, self.classes), y_pred, label_smoothing=self.smoothing)


def make_loss(config: experiments.ExperimentConfig):
    """Sparse cross-entropy, with the protocol's label smoothing if it has one."""
    smoothing = config.protocol.label_smoothing
    if not smoothing:
        return keras.losses.SparseCategoricalCrossentropy(reduction=LOSS_REDUCTION)
    return SmoothedSparseCrossentropy(config.classes, smoothing, reduction=LOSS_REDUCTION,
                                      name="smoothed_crossentropy")


def top_k_hits(y_true, y_pred, k: int = 5):
    """1.0 for each row whose true class is in the top `k` with every tie counted against it.

    The true class `t` is a hit when fewer than `k` other classes score at
    least as high as it (`s[j] >= s[t]`, j != t): it must be in the top `k`
    even when each class tied with it is ranked above it. A NaN score counts
    against it as well. Keras's `SparseTopKCategoricalAccuracy` counts a tie
    as a hit instead (fewer than `k` classes strictly above), so a model whose
    scores for several classes are equal (a dead class channel) gets top-5
    hits it never ranked.

    Args:
        y_true: integer labels, shape `(n,)` or `(n, 1)`.
        y_pred: scores (probabilities or logits), shape `(n, classes)`.
        k: how many places count. Defaults to `5`.

    Returns:
        A float32 tensor `(n,)` of 1.0 (hit) and 0.0 (miss).
    """
    ops = keras.ops
    labels = ops.cast(ops.reshape(y_true, [-1]), "int32")
    scores = ops.cast(y_pred, "float32")
    true_score = ops.take_along_axis(scores, labels[:, None], axis=-1)
    at_least = ops.logical_not(ops.less(scores, true_score))  # >=, and True where NaN
    others = ops.logical_not(ops.cast(ops.one_hot(labels, ops.shape(scores)[-1]), "bool"))
    rivals = ops.sum(ops.cast(ops.logical_and(at_least, others), "int32"), axis=-1)
    return ops.cast(ops.less(rivals, k), "float32")


@keras.saving.register_keras_serializable(package="squeeze_keras")
class TopKNoTies(keras.metrics.MeanMetricWrapper):
    """Sparse top-`k` accuracy with ties counted as misses (`top_k_hits`)."""

    def __init__(self, k: int = 5, name: str = "top5", dtype=None):
        super().__init__(top_k_hits, name=name, dtype=dtype, k=k)
        self.k = k

    def get_config(self):
        return {"k": self.k, "name": self.name, "dtype": self.dtype}


def compile_model(model, config: experiments.ExperimentConfig, steps_per_epoch: int,
                  epochs: int, scale: float = 1.0, steps_per_execution: int | None = None):
    """Compiles with the protocol's optimizer and loss, and stable metric names.

    `steps_per_execution` defaults to `devices.default_steps_per_execution()`.
    Callbacks that act per batch then run once per that many steps.
    """
    if steps_per_execution is None:
        steps_per_execution = devices.default_steps_per_execution()
    if not isinstance(steps_per_execution, int) or steps_per_execution < 1:
        raise ValueError("`steps_per_execution` must be a positive integer. "
                         f"Received: steps_per_execution={steps_per_execution!r}")
    model.compile(
        steps_per_execution=steps_per_execution,
        optimizer=make_optimizer(config.protocol, steps_per_epoch, epochs, scale),
        loss=make_loss(config),
        # Weighted, so that the zero-weight padding of a last batch never counts.
        weighted_metrics=[
            keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
            TopKNoTies(k=5, name="top5"),  # a class tied with the true one counts against it
        ],
    )
    return model


class TrainingStoppedError(RuntimeError):
    """Training ended before its last epoch: a non-finite loss, or a callback stopped it."""


def fit(model, splits: data_lib.Splits, run_dir, epochs: int, callbacks=(),
        verbose=1) -> pd.DataFrame:
    """Fits with the run folder's callbacks; returns the history, one row per epoch.

    Resumes from the folder's resume state (`runs.ResumeState`) and leaves it
    in place: `run_experiment` removes it once the run's files are written.

    Raises:
        TrainingStoppedError: training stopped early; the resume state keeps
            the epochs before.
    """
    resume = runs.ResumeState(run_dir)
    (run_dir / "checkpoints").mkdir(exist_ok=True)
    fit_callbacks = [
        EpochStats(),
        # The history row before the resume state: a kill between the two then trains that
        # epoch again on resuming (its row replaced) rather than leaving it out of history.csv.
        runs.HistoryLog(run_dir),
        resume,
        EpochRandomness(splits.train),
        keras.callbacks.TerminateOnNaN(),
        keras.callbacks.ModelCheckpoint(
            str(run_dir / "checkpoints" / "best.keras"), monitor="val_accuracy",
            save_best_only=True),
        *callbacks,
    ]
    if verbose:
        _say_where_training_resumes(run_dir, epochs)
    # The pipeline shuffles itself (seeded); Keras must not try to.
    model.fit(splits.train, validation_data=splits.test, epochs=epochs, shuffle=False,
              callbacks=fit_callbacks, verbose=verbose)
    history = runs.history_frame(run_dir)
    if resume.epochs_done < epochs:
        raise TrainingStoppedError(_stopped(run_dir, history, resume.epochs_done, epochs))
    return history


def _stopped(run_dir, history, done: int, epochs: int) -> str:
    """Why training stopped after `done` of `epochs` epochs, what is kept, and the ways out."""
    losses = history.loc[history["epoch"] == done, "loss"]
    if len(losses) and not math.isfinite(losses.iloc[-1]):
        why = f"the loss of epoch {done + 1} was {losses.iloc[-1]}"
    else:
        why = "a callback stopped it"
    kept = {0: "no epoch had finished", 1: f"epoch 1 is kept in {run_dir / runs.BACKUP}"}.get(
        done, f"epochs 1-{done} are kept in {run_dir / runs.BACKUP}")
    return (f"Training of {run_dir} stopped after {done} of {epochs} epochs: {why} (see "
            f"{run_dir / 'history.csv'}); {kept}. The same command resumes at epoch {done + 1} "
            "(a run that diverged there will likely diverge again); or train another seed "
            "(CLI: --seed) or protocol (CLI: --protocol), or pass overwrite=True (CLI: "
            "--overwrite) to train it afresh.")


def _say_where_training_resumes(run_dir, epochs: int) -> None:
    """One line before a resumed `fit`: its log starts at the first epoch not backed up."""
    state, problem = runs.find_resume_state(run_dir)
    done = state.epochs if state is not None else 0
    if 0 < done < epochs:
        rows = runs.history_rows(run_dir)[0]
        lost = sum(epoch not in rows for epoch in range(done))
        logged = (f"history.csv lacks {lost} of them (damaged: metrics.json will list them as "
                  "history_missing)" if lost else "history.csv holds them")
        fell_back = problem is not None and state.metadata.name != runs.LATEST[1]
        damaged = f" ({problem}: resuming from the state before it)" if fell_back else ""
        print(f"Resuming {run_dir.name} at epoch {done + 1}/{epochs}{damaged}: epochs 1-{done} "
              f"were trained in an earlier sitting, and {logged}.")


def run_metrics(config, splits, model, history, evaluation, *, seed, limit, policy,
                batch_size, replicas, data_source, sittings=None, epochs=None) -> dict:
    """The `metrics.json` of a finished run.

    `sittings` (`runs.record_sitting`'s list): with more than one, `sittings`
    gives each one's epochs, machine and median seconds per epoch, and
    `hardware` names every machine with its epochs, not only the last.
    `epochs` (defaults to the history's rows): where `history.csv` lost rows
    (damaged), their epochs are listed as `history_missing`, and the times and
    best validation top-1 are those of the rows left (`None` if none is).
    """
    epochs = len(history) if epochs is None else epochs
    times = history["seconds"] if "seconds" in history else [math.nan] * len(history)
    by_epoch = dict(zip(history["epoch"], times))
    seconds = [by_epoch.get(epoch) for epoch in range(epochs)]
    timed = [s for s in seconds if s is not None and math.isfinite(s)]
    best = history["val_accuracy"].max() if "val_accuracy" in history else math.nan
    sittings = runs.sittings_summary(sittings or [], seconds)
    machines = {s["hardware"] for s in sittings}
    hardware = devices.hardware()
    if len(machines) > 1:
        hardware = "; ".join(f"{s['hardware']} (epochs {s['epochs']})" for s in sittings)
    metrics = {
        "experiment": config.name,
        "description": config.description,
        "protocol": config.protocol.name,
        "dataset": config.dataset,
        "data_source": data_source,
        "train_size": splits.train_size,
        "test_size": splits.test_size,
        "epochs": int(epochs),
        "top1": round(100 * float(evaluation["accuracy"]), 2),
        "top5": round(100 * float(evaluation["top5"]), 2),
        "test_loss": round(float(evaluation["loss"]), 4),
        "best_val_top1": round(100 * float(best), 2) if math.isfinite(best) else None,
        "params": int(model.count_params()),
        "report_top1": config.report_top1,
        "report_params": config.report_params,
        "seconds_per_epoch": round(statistics.median(timed), 1) if timed else None,
        "train_seconds": round(float(sum(timed)), 1) if timed else None,
        "batch_size": batch_size,
        "replicas": replicas,
        "precision": policy,
        "hardware": hardware,
        "seed": seed,
        "limit": limit,
        "versions": {
            "squeeze_keras": __version__, **devices.backend_version(),
            "keras": keras.__version__, "python": platform.python_version(),
        },
        "finished": _now(),
    }
    if len(sittings) > 1:
        metrics["sittings"] = sittings
    missing = [epoch + 1 for epoch in range(epochs) if epoch not in by_epoch]
    if missing:
        metrics["history_missing"] = missing
    return metrics


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def topk_accuracy(probabilities, labels, k: int = 1) -> float:
    """Percentage of rows whose label is among the `k` highest scores, rounded to 0.01.

    Top-1 is the arg-max's (a tie goes to the lowest class index), as Keras's
    accuracy metric counts it; for `k` > 1 a tie counts against the true class
    (`top_k_hits`).
    """
    probabilities, labels = np.asarray(probabilities), np.asarray(labels).reshape(-1)
    if k == 1:
        hits = np.argmax(probabilities, axis=-1) == labels
    else:
        hits = keras.ops.convert_to_numpy(top_k_hits(labels, probabilities, k))
    return round(100 * float(np.mean(hits)), 2)


def flip_tta_probabilities(predict, images):
    """Test-time flip: the mean of `predict` of `images` and of their mirror images."""
    images = np.asarray(images)
    return (np.asarray(predict(images)) + np.asarray(predict(images[:, :, ::-1]))) / 2


def evaluation_extras(model, config, splits, batch_size: int) -> dict:
    """What `metrics.json` says beyond top-1/top-5 of the evaluation split.

    `evaluation` (the split evaluated: `"test"` or `"train hold-out, N/class"`),
    and with a hold-out its `holdout` identity and, where the source has a
    test split, `official_test` (top-1/top-5 on it); for CIFAR-100,
    `coarse_top1`: the 20-superclass accuracy of the fine predictions; and
    `top1_flip_tta`: top-1 of the evaluation split with test-time flip (the
    mean of the probabilities of each image and its mirror image).
    """
    extras = {"evaluation": splits.evaluation}
    if splits.holdout is not None:
        extras["holdout"] = splits.holdout
    predict = functools.partial(model.predict, batch_size=batch_size, verbose=0)
    if splits.x_test is not None:
        extras["top1_flip_tta"] = topk_accuracy(
            flip_tta_probabilities(predict, data_lib.normalize(splits.x_test, config.preprocessing)),
            splits.y_test, 1)
    if splits.x_official_test is not None:
        probs = predict(data_lib.normalize(splits.x_official_test, config.preprocessing))
        extras["official_test"] = {
            "top1": topk_accuracy(probs, splits.y_official_test, 1),
            "top5": topk_accuracy(probs, splits.y_official_test, 5),
            "images": int(len(splits.y_official_test))}
    if config.dataset == "cifar100" and splits.x_test is not None:
        probs = predict(data_lib.normalize(splits.x_test, config.preprocessing))
        coarse = classes.coarse_labels
        extras["coarse_top1"] = round(100 * float(np.mean(
            coarse(np.argmax(probs, axis=-1)) == coarse(splits.y_test))), 2)
    return extras


def _check_arguments(epochs, seed, limit):
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1:
        raise ValueError(f"`epochs` must be a positive integer. Received: epochs={epochs!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"`seed` must be a non-negative integer. Received: seed={seed!r}")
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None. Received: limit={limit!r}")


def run_experiment(name_or_config, *, epochs=None, data="tfds", out_dir="runs", seed=0,
                   protocol=None, limit=None, precision="auto", data_dir=None,
                   overwrite=False, verbose=1, callbacks=(), strategy=None, holdout=None,
                   holdout_seed=0) -> runs.RunResult:
    """Trains and evaluates one experiment into `out_dir/<run_name>` (e.g. `e4`, `e4_seed1`).

    Calling it again with the same arguments resumes an interrupted run and
    returns a finished one as it is (a finished run whose `metrics.json` is
    missing or unreadable gets it rebuilt from `history.csv` and
    `model.keras`, never retrained); a folder holding a run with any other
    config (architecture, protocol, epochs, seed, data, limit, precision) is
    refused before anything is loaded or trained, unless `overwrite`.

    Args:
        name_or_config: a registered experiment name or an `ExperimentConfig`.
        epochs: epochs to train. Defaults to the config's (20).
        data: `"tfds"`, `"synthetic"`, an image-folder path, or `Splits`.
            Defaults to `"tfds"`.
        out_dir: folder of run folders. Defaults to `"runs"` (the committed
            record of the study lives in `results/`).
        seed: seed of weights, shuffling and augmentation. Defaults to `0`.
        protocol: a protocol name (`"paper"`, `"tuned"`, ...) or a `Protocol`.
            Defaults to the config's.
        limit: a seeded random subset of this many examples per split (smoke
            runs). Defaults to `None` (all).
        precision: `"auto"` or a Keras dtype policy name. Defaults to `"auto"`.
        data_dir: tfds data folder. Defaults to tfds' own.
        overwrite: replace the folder's run by a new one. The old run is set
            aside once the data are loaded and checked, and removed once the
            new run has finished an epoch (put back if it fails before).
            Defaults to `False`.
        verbose: Keras `fit` verbosity (1 = a progress bar per epoch).
        callbacks: extra Keras callbacks.
        strategy: a `tf.distribute.Strategy`. Defaults to `devices.distribution_strategy()`.
        holdout: evaluate on a stratified hold-out of the training images
            (images per class, or a fraction of each class) instead of the test
            split; the run folder is then `<run>_holdout<N>`, and a source's
            own test split, if it has one, is evaluated once at the end.
            Defaults to `None`.
        holdout_seed: seed of the hold-out choice (not of the run). Defaults to `0`.

    Returns:
        A `RunResult` (run folder, history DataFrame, metrics dict, and
        `status`: "trained", "resumed", "finished" or "rebuilt").
    """
    config = experiments.get(name_or_config)
    if protocol is not None:
        config = config.with_protocol(protocol)
    epochs = config.epochs if epochs is None else epochs
    _check_arguments(epochs, seed, limit)
    holdout = data_lib.check_holdout(holdout)
    policy = devices.select_precision(precision)
    spec = runs.run_spec(config, epochs=epochs, seed=seed, data=data, limit=limit,
                         precision=policy, data_dir=data_dir, holdout=holdout,
                         holdout_seed=holdout_seed)
    run_dir = runs.run_dir_for(config, out_dir, seed, holdout)
    if not overwrite and (run_dir / "config.json").exists():
        if runs.decide(run_dir, spec) == "reuse":  # read-only: no lock needed
            return runs.load_run(run_dir)
    with runs.locked(run_dir):
        decision = runs.decide(run_dir, spec, overwrite)
        if decision == "reuse":
            return runs.load_run(run_dir)
        if decision == "rebuild":
            return _rebuild_metrics(config, spec, run_dir, data=data, data_dir=data_dir,
                                    policy=policy, holdout=holdout, holdout_seed=holdout_seed)
        try:
            result = _train(config, spec, run_dir, fresh=decision == "new", data=data,
                            data_dir=data_dir, policy=policy, verbose=verbose,
                            callbacks=callbacks, strategy=strategy, holdout=holdout,
                            holdout_seed=holdout_seed)
            result.status = "resumed" if decision == "resume" else "trained"
            return result
        except BaseException:
            # A new run stopped before it finished an epoch: the run it replaced comes back.
            runs.restore_replaced(run_dir)
            runs.remove_if_untrained(run_dir)  # a failed start leaves no half-made folder
            raise


def _splits(config, data, *, batch_size, seed, limit, data_dir, holdout, holdout_seed):
    """The run's `Splits`: given ones as they are, else loaded from the source."""
    if isinstance(data, data_lib.Splits):
        return data
    return data_lib.load(config.dataset, data, preprocessing=config.preprocessing,
                         batch_size=batch_size, seed=seed, limit=limit, data_dir=data_dir,
                         holdout=holdout, holdout_seed=holdout_seed)


def _train(config, spec, run_dir, *, fresh, data, data_dir, policy, verbose, callbacks,
           strategy, holdout=None, holdout_seed=0):
    epochs, seed, limit = spec["epochs"], spec["seed"], spec["limit"]
    devices.enable_compilation_cache()
    strategy = strategy or devices.distribution_strategy()
    replicas = strategy.num_replicas_in_sync if strategy is not None else 1
    batch_size = config.protocol.batch_size * replicas
    # Under JAX, crops, flips and normalisation run on the device inside the compiled step
    # (`augment.CifarAugment`) and the host only batches uint8 images; given `Splits` keep
    # their own pipelines.
    on_device = keras.backend.backend() == "jax" and not isinstance(data, data_lib.Splits)
    splits = _splits(config, data, batch_size=batch_size, seed=seed, limit=limit,
                     data_dir=data_dir, holdout=holdout, holdout_seed=holdout_seed)
    if on_device:
        splits = augment.uint8_splits(splits, batch_size, seed)
    if splits.classes != config.classes:
        raise ValueError(f"Experiment {config.name!r} expects {config.classes} classes but the "
                         f"data has {splits.classes} ({splits.dataset}).")
    # Every check has passed: from here on the folder belongs to this run. What it held
    # before (a run to overwrite) waits in `.replaced/` until the new run finishes an epoch.
    if fresh:
        runs.set_aside(run_dir)
    fileio.write_json(run_dir / "config.json", spec)
    sittings = runs.record_sitting(run_dir, runs.resumable_epochs(run_dir) + 1,
                                   devices.hardware(), _now())
    with runs.dtype_policy(policy):
        keras.utils.set_random_seed(seed)
        steps = -(-splits.train_size // batch_size)
        with strategy.scope() if strategy is not None else contextlib.nullcontext():
            model = config.build_model()
            # The wrapper's weights are `model`'s, so training it trains `model`.
            trained = (augment.training_model(model, config.preprocessing, seed=seed)
                       if on_device else model)
            compile_model(trained, config, steps, epochs, scale=replicas)
        history = fit(trained, splits, run_dir, epochs, [*callbacks, DiscardReplaced(run_dir)],
                      verbose)
        evaluation = trained.evaluate(splits.test, return_dict=True, verbose=0)
        extra = evaluation_extras(model, config, splits, batch_size)
    runs.save_model(model, config, run_dir / "model.keras")
    metrics = run_metrics(config, splits, model, history, evaluation, seed=seed, limit=limit,
                          policy=policy, batch_size=batch_size, replicas=replicas,
                          data_source=runs.data_label(data), sittings=sittings, epochs=epochs)
    metrics.update(extra)
    runs.write_metrics(run_dir, metrics)
    # Only now: a kill or a full disk before metrics.json leaves a run that resumes.
    runs.remove_resume_state(run_dir)
    (run_dir / runs.SITTINGS).unlink(missing_ok=True)  # folded into metrics.json
    return runs.RunResult(run_dir, history, metrics)


def _rebuild_metrics(config, spec, run_dir, *, data, data_dir, policy, holdout=None,
                     holdout_seed=0) -> runs.RunResult:
    """`metrics.json` of a finished run whose own is missing, unreadable or incomplete.

    The run is not retrained: `model.keras` is evaluated on the test split.
    Where `history.csv` still holds the last epoch's row, its validation on
    the test split (what the training's final evaluation measured) gives
    top-1, top-5 and loss, and the model must give the same top-1 (it is that
    epoch's model); where it does not (missing, empty or damaged), the model's
    evaluation gives them, and `rebuilt.from` says so.

    Raises:
        RunFolderError: `model.keras` does not give the history's last top-1.
    """
    epochs, seed, limit = spec["epochs"], spec["seed"], spec["limit"]
    history = runs.history_frame(run_dir)
    _, model = runs.load_trained_model(run_dir)  # float32: fast on any CPU
    batch_size = config.protocol.batch_size
    splits = _splits(config, data, batch_size=batch_size, seed=seed, limit=limit,
                     data_dir=data_dir, holdout=holdout, holdout_seed=holdout_seed)
    compile_model(model, config, -(-splits.train_size // batch_size), epochs)
    evaluation = model.evaluate(splits.test, return_dict=True, verbose=0)
    last = history[history["epoch"] == epochs - 1]
    columns = {"accuracy": "val_accuracy", "top5": "val_top5", "loss": "val_loss"}
    recorded = None
    if len(last) and set(columns.values()) <= set(last):
        recorded = {key: float(last[column].iloc[-1]) for key, column in columns.items()}
        if not all(math.isfinite(value) for value in recorded.values()):
            recorded = None  # a row cut short
    measured = 100 * evaluation["accuracy"]
    metrics_file = run_dir / "metrics.json"
    # Another precision (a mixed-precision run evaluated in float32) may flip a few images.
    tolerance = max(0.5, 300 / splits.test_size)
    if recorded is not None and abs(measured - 100 * recorded["accuracy"]) > tolerance:
        raise runs.RunFolderError(
            f"{metrics_file} is missing or unreadable, and {run_dir / 'model.keras'} gives "
            f"top-1 {measured:.2f} % on the test split where the last epoch of history.csv "
            f"logged {100 * recorded['accuracy']:.2f} %: the model is not that epoch's, so the "
            "metrics cannot be rebuilt. Restore metrics.json, train into another out_dir (CLI: "
            "--out), or pass overwrite=True (CLI: --overwrite) to train it afresh.")
    metrics = run_metrics(config, splits, model, history, recorded or evaluation, seed=seed,
                          limit=limit, policy=policy, batch_size=None, replicas=None,
                          data_source=runs.data_label(data), epochs=epochs)
    metrics.update(evaluation_extras(model, config, splits, batch_size))
    finished = datetime.datetime.fromtimestamp((run_dir / "model.keras").stat().st_mtime,
                                               datetime.timezone.utc)
    metrics.update(
        hardware="unknown (metrics rebuilt)",
        finished=finished.isoformat(timespec="seconds"),
        rebuilt={"from": ["history.csv", "model.keras"] if recorded else ["model.keras"],
                 "was": "unreadable" if metrics_file.exists() else "missing",
                 "evaluated_top1": round(measured, 2), "on": devices.hardware(),
                 "at": datetime.datetime.now(datetime.timezone.utc).isoformat(
                     timespec="seconds")})
    runs.write_metrics(run_dir, metrics)
    return runs.RunResult(run_dir, history, metrics, status="rebuilt")


def run_seeds(name_or_config, seeds=(0, 1, 2), **kwargs) -> list[runs.RunResult]:
    """`run_experiment` for several seeds in one process, one run folder per seed.

    Under JAX the compiled training and evaluation steps of the first seed are
    reused by the later ones through the persistent compilation cache
    (`devices.enable_compilation_cache`): same shapes, same programs.
    """
    seeds = list(seeds)
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"`seeds` must be distinct seeds, at least one. Received: seeds={seeds!r}")
    return [run_experiment(name_or_config, seed=seed, **kwargs) for seed in seeds]
