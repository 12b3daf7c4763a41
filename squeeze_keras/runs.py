"""Run folders: their names, what a run was made with, and whether to reuse, resume or refuse.

A run folder `<out>/<experiment>[_<protocol>][_seed<k>]` holds `config.json`
(everything the run was made with: the experiment's full config, epochs,
seed, data identity, subset limit, precision), `history.csv`, `metrics.json`
and `model.keras`; while training, `backup/` (resume state) and
`checkpoints/`; after export or pruning, derived folders (`litert/`,
`pruned*/`) that belong to the model they were made from.

The rule: a folder is only ever continued by the same run. Before anything
is trained, the stored `config.json` is compared field by field with the
requested one; a finished run is returned as it is, an unfinished one
resumes, and any difference is refused with the fields named (or, with
`overwrite`, the folder is emptied first). A lock keeps a second process
out of a folder in use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import pathlib
import shutil
import typing

import keras
import pandas as pd

from squeeze_keras import experiments
from squeeze_keras import data as data_lib
from squeeze_keras import fileio, sources

TRAINING_STATE = ("history.csv", "metrics.json", "model.keras", "backup", "checkpoints")


class RunFolderError(FileExistsError):
    """A run folder holds another run, or is in use by another process."""


@dataclasses.dataclass
class RunResult:
    """A run folder, its per-epoch history and its metrics."""

    run_dir: pathlib.Path
    history: pd.DataFrame
    metrics: dict
    status: str = "finished"  # what the call did: "trained", "resumed" or "finished" (reused)


# ---------------------------------------------------------------- names


def run_name(config: experiments.ExperimentConfig, seed: int = 0, holdout=None) -> str:
    """`<experiment>[_<protocol>][_holdout<N>][_seed<k>]`: the protocol unless `paper`,
    the hold-out (images per class, or a fraction) when evaluating on one, the seed unless 0."""
    protocol = "" if config.protocol.name == "paper" else f"_{config.protocol.name}"
    held = "" if holdout is None else f"_holdout{sources.check_holdout(holdout)}"
    return f"{config.name}{protocol}{held}{f'_seed{seed}' if seed else ''}"


def run_dir_for(config: experiments.ExperimentConfig, out_dir, seed: int = 0,
                holdout=None) -> pathlib.Path:
    """`out_dir/<run_name>`: e.g. `e4`, `e4_tuned2`, `e4_seed1`, `e5_holdout100`."""
    return pathlib.Path(out_dir) / run_name(config, seed, holdout)


# ---------------------------------------------------------------- what a run is


def data_identity(data, data_dir=None) -> dict:
    """What identifies the data of a run (`config.json["data"]`).

    A named source by its name; an archive by its name, size and content
    digest; an image folder by its resolved path and a fingerprint of its
    files (names and sizes), so two folders that share a name never pass for
    the same data.
    """
    if isinstance(data, data_lib.Splits):
        return {"source": data.source, "dataset": data.dataset,
                "train_size": data.train_size, "test_size": data.test_size}
    identity = data_lib.source_identity(data, data_dir)
    if identity.pop("mtime", None) is not None:
        # An archive (what the committed runs were made from) is identified by its
        # content, so a run folder holds no path or clock of the machine it ran on.
        identity["digest"] = sources.file_digest(identity.pop("path"))
    return identity


def holdout_identity(data, classes: int, holdout, holdout_seed: int = 0, *, seed: int = 0,
                     data_dir=None) -> dict:
    """`config.json["data"]["holdout"]`: the hold-out split of `data`'s training images."""
    if isinstance(data, data_lib.Splits):
        return data.holdout
    names, labels = data_lib.train_listing(data, classes, seed=seed, data_dir=data_dir)
    return data_lib.holdout_identity(names, labels, holdout, holdout_seed)


def data_label(data) -> str:
    """The short name of a run's data for tables: `tfds`, `synthetic` or `folder:<name>`."""
    if isinstance(data, data_lib.Splits):
        return data.source
    return data_lib.source_label(data)


def run_spec(config, *, epochs, seed, data, limit, precision, data_dir=None, holdout=None,
             holdout_seed=0) -> dict:
    """The `config.json` of a run: everything that makes two runs the same run.

    With a hold-out, `data.holdout` records the split (`holdout_identity`).
    """
    spec = {"experiment": dataclasses.asdict(config), "epochs": epochs, "seed": seed,
            "data": data_identity(data, data_dir), "limit": limit, "precision": precision}
    if holdout is not None:
        spec["data"]["holdout"] = holdout_identity(data, config.classes, holdout, holdout_seed,
                                                   seed=seed, data_dir=data_dir)
    return json.loads(json.dumps(spec))  # tuples -> lists, as stored


def differences(stored: dict, wanted: dict) -> list[str]:
    """Dotted names of the fields in which two run specs differ (e.g. `experiment.model.dropout`).

    The stored experiment is read back through `config_from_dict` first, so a
    config field added since the run was made counts at its default, and one
    removed since then is ignored.
    """
    stored = dict(stored)
    if isinstance(stored.get("experiment"), dict):
        stored["experiment"] = json.loads(json.dumps(
            dataclasses.asdict(config_from_dict(stored["experiment"]))))
    a, b = _flatten(stored), _flatten(wanted)
    return [key for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]


def _flatten(obj, prefix=""):
    if not isinstance(obj, dict):
        return {prefix: obj}
    flat = {}
    for key, value in obj.items():
        flat.update(_flatten(value, f"{prefix}.{key}" if prefix else key))
    return flat


def config_from_dict(stored: dict) -> experiments.ExperimentConfig:
    """Rebuilds the `ExperimentConfig` a run stored in `config.json["experiment"]`."""
    return _dataclass_from_json(experiments.ExperimentConfig, stored)


def _dataclass_from_json(cls, obj):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for field in dataclasses.fields(cls):
        if field.name not in obj or not field.init:
            continue  # a field added since the run was made keeps its default
        kwargs[field.name] = _value_from_json(hints[field.name], obj[field.name])
    return cls(**kwargs)


def _value_from_json(hint, value):
    if dataclasses.is_dataclass(hint) and isinstance(value, dict):
        return _dataclass_from_json(hint, value)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple and isinstance(value, list):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value_from_json(args[0], v) for v in value)
        return tuple(_value_from_json(a, v) for a, v in zip(args, value))
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        for arg in args:
            if dataclasses.is_dataclass(arg) and isinstance(value, dict):
                return _dataclass_from_json(arg, value)
    return value


# ---------------------------------------------------------------- reuse, resume or refuse


@contextlib.contextmanager
def locked(run_dir):
    """Holds an exclusive lock on `run_dir` (created if needed) while the block runs.

    Raises:
        RunFolderError: another process holds it.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    lock_file = run_dir / ".lock"
    handle = open(lock_file, "a+")
    try:
        try:
            import fcntl

            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except ImportError:  # no fcntl (Windows): no lock, as before
            pass
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            raise RunFolderError(
                f"{run_dir} is in use by {holder}: wait for it to finish, or train into "
                "another out_dir (CLI: --out).") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"process {os.getpid()}")
        handle.flush()
        yield run_dir
    finally:
        handle.close()


def clear(run_dir) -> None:
    """Removes a run's training state and everything derived from its model."""
    run_dir = pathlib.Path(run_dir)
    for path in [run_dir / "config.json", *(run_dir / name for name in TRAINING_STATE),
                 *run_dir.glob("litert*"), *run_dir.glob("pruned*")]:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)


def remove_if_untrained(run_dir) -> None:
    """Removes a run folder that holds no trained epoch (call it holding the folder's lock)."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir() or any((run_dir / n).exists() for n in TRAINING_STATE):
        return
    (run_dir / "config.json").unlink(missing_ok=True)
    if {p.name for p in run_dir.iterdir()} <= {".lock"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def decide(run_dir, spec: dict, overwrite: bool = False) -> str:
    """`"reuse"` a finished run, `"resume"` an unfinished one, or `"new"` (folder emptied).

    Compares `spec` with the folder's `config.json` before anything is trained.

    Raises:
        RunFolderError: the folder holds a run with another spec (and not `overwrite`).
    """
    run_dir = pathlib.Path(run_dir)
    config_file = run_dir / "config.json"
    if overwrite or not config_file.exists():
        clear(run_dir)
        return "new"
    try:
        stored = json.loads(config_file.read_text())
    except (OSError, ValueError) as err:
        raise RunFolderError(
            f"{config_file} cannot be read ({err}); pass overwrite=True (CLI: --overwrite) "
            "to start that run afresh.") from err
    try:
        diff = differences(stored, spec)
    except (TypeError, ValueError, KeyError) as err:  # a config this version cannot read
        raise RunFolderError(
            f"{config_file} holds a config this version cannot read ({err}); pass "
            "overwrite=True (CLI: --overwrite) to start that run afresh.") from err
    if diff:
        state = "a finished run" if (run_dir / "metrics.json").exists() else "an unfinished run"
        raise RunFolderError(
            f"{run_dir} holds {state} made with another config (differs in: "
            f"{', '.join(diff)}). Pass overwrite=True (CLI: --overwrite) to replace it, or "
            "train into another out_dir (CLI: --out).")
    return "reuse" if (run_dir / "metrics.json").exists() else "resume"


# ---------------------------------------------------------------- reading runs


def load_run(run_dir) -> RunResult:
    """Reads a finished run folder (history and metrics)."""
    run_dir = pathlib.Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no metrics.json).")
    history = pd.read_csv(run_dir / "history.csv")
    return RunResult(run_dir, history, json.loads(metrics_file.read_text()))


@contextlib.contextmanager
def dtype_policy(policy: str):
    """Sets Keras's global dtype policy for the block, then restores the previous one."""
    previous = keras.mixed_precision.global_policy().name
    keras.mixed_precision.set_global_policy(policy)
    try:
        yield
    finally:
        keras.mixed_precision.set_global_policy(previous)


def load_trained_model(run_dir):
    """A run's stored config and its trained model, rebuilt in float32.

    The architecture and protocol are those the run stored in its
    `config.json`, not the registry's current ones. Rebuilding (instead of
    using the loaded file as is) gives a float32 model whatever policy the
    run trained under.
    """
    run_dir = pathlib.Path(run_dir)
    if not (run_dir / "model.keras").exists():
        raise FileNotFoundError(
            f"{run_dir} holds no model.keras: a finished run is needed "
            "(`python -m squeeze_keras train ...`).")
    config = config_from_dict(json.loads((run_dir / "config.json").read_text())["experiment"])
    with dtype_policy("float32"):
        model = config.build_model()
    model.set_weights(keras.models.load_model(run_dir / "model.keras").get_weights())
    return config, model


def save_model(model, config, path) -> None:
    """Saves `model`'s weights as an uncompiled float32 `config` model, atomically.

    Keras 3 saves a compiled model's optimizer state too; rebuilding first
    keeps `model.keras` small and loadable under any backend or policy.
    """
    path = pathlib.Path(path)
    with dtype_policy("float32"):
        final = config.build_model()
    final.set_weights([keras.ops.convert_to_numpy(w) for w in model.get_weights()])
    tmp = path.with_name(f".{path.stem}.partial.keras")
    try:
        final.save(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def model_fingerprint(model_file) -> str:
    """SHA-256 of a `model.keras`: what a derived folder records as its source."""
    return hashlib.sha256(pathlib.Path(model_file).read_bytes()).hexdigest()


def write_metrics(run_dir, metrics: dict) -> None:
    """Writes `metrics.json` (atomically: its presence means the run is finished)."""
    fileio.write_json(pathlib.Path(run_dir) / "metrics.json", metrics)
