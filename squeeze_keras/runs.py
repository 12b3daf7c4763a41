"""Run folders: their names, what a run was made with, and whether to reuse, resume or refuse.

A run folder `<out>/<experiment>[_<protocol>][_seed<k>]` holds `config.json`
(everything the run was made with: the experiment's full config, epochs,
seed, data identity, subset limit, precision), `history.csv`, `metrics.json`
and `model.keras`; while training, `backup/` (resume state),
`checkpoints/` and `sittings.json` (which machine trained from which epoch,
folded into `metrics.json` when the run finishes); after export or pruning,
derived folders (`litert/`, `pruned*/`) that belong to the model they were
made from.

The rule: a folder is only ever continued by the same run. Before anything
is trained, the stored `config.json` is compared field by field with the
requested one; a finished run is returned as it is, an unfinished one
resumes, and any difference is refused with the fields, their stored and
requested values and the ways out named. With `overwrite`, nothing is
removed until the new run's data have passed their checks; the old run is
then moved aside (`.replaced/`) and removed once the new run has finished an
epoch, or put back if it fails before. A finished run whose `metrics.json`
is missing or unreadable is never retrained: its metrics are rebuilt from
`history.csv` and `model.keras` (`"rebuild"`). A lock keeps a second process
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
import statistics
import typing

import keras
import pandas as pd

from squeeze_keras import experiments
from squeeze_keras import data as data_lib
from squeeze_keras import fileio, sources

TRAINING_STATE = ("history.csv", "metrics.json", "model.keras", "backup", "checkpoints")
REPLACED = ".replaced"  # an overwritten run, kept until the new one has finished an epoch
SITTINGS = "sittings.json"  # the machines of an unfinished run, one entry per (re)start


class RunFolderError(FileExistsError):
    """A run folder holds another run, or is in use by another process."""


@dataclasses.dataclass
class RunResult:
    """A run folder, its per-epoch history and its metrics."""

    run_dir: pathlib.Path
    history: pd.DataFrame
    metrics: dict
    # What the call did: "trained", "resumed", "finished" (reused) or "rebuilt" (a finished
    # run's missing or unreadable metrics.json rebuilt from history.csv and model.keras).
    status: str = "finished"


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


def _split_identity(data, classes: int, holdout, holdout_seed: int = 0, *, seed: int = 0,
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


def comparable_data(identity):
    """The part of a data identity that two measurements must share to be on the same data.

    An archive counts by its content (not its name), tfds by itself (not the
    folder it is cached in), and data handed over as `Splits` by its source
    kind only (nothing more is known of it); everything else as recorded.
    A label (older records hold only `data_label`'s string) stays as it is.
    """
    if not isinstance(identity, dict):
        return identity
    identity = dict(identity)
    if {"dataset", "train_size", "test_size"} <= identity.keys():  # given `Splits`
        for key in ("dataset", "train_size", "test_size"):
            identity.pop(key)
    elif identity.get("source") == "tfds":
        identity.pop("data_dir", None)
    elif "digest" in identity and "path" not in identity:  # an archive
        identity.pop("name", None)
    return identity


def identity_label(identity) -> str:
    """`data_label`'s name for a recorded data identity (or a recorded label itself)."""
    if not isinstance(identity, dict):
        return str(identity)
    source = identity.get("source", "?")
    return f"folder:{identity.get('name', '?')}" if source == "folder" else source


def same_data(a, b) -> bool:
    """Whether two recorded data identities (or labels) name the same data.

    Where either side is only a label (an older record), labels are compared.
    """
    if isinstance(a, dict) and isinstance(b, dict):
        return comparable_data(a) == comparable_data(b)
    return identity_label(a) == identity_label(b)


def describe_data(identity) -> str:
    """A recorded data identity in words, for errors: `cifar10-jpeg.tar.gz (19,432,150 bytes, digest ...)`."""
    if not isinstance(identity, dict):
        return str(identity)
    if {"dataset", "train_size", "test_size"} <= identity.keys():
        return (f"{identity['source']} data given as arrays ({identity['train_size']} train, "
                f"{identity['test_size']} test images)")
    if identity.get("source") != "folder":
        extra = f" in {identity['data_dir']}" if identity.get("data_dir") else ""
        return f"{identity.get('source')}{extra}"
    if "path" in identity:
        return f"the folder {identity['path']}"
    return (f"{identity.get('name')} ({identity.get('bytes', 0):,} bytes, digest "
            f"{identity.get('digest')})")


def run_spec(config, *, epochs, seed, data, limit, precision, data_dir=None, holdout=None,
             holdout_seed=0) -> dict:
    """The `config.json` of a run: everything that makes two runs the same run.

    With a hold-out, `data.holdout` records the split (`data.holdout_identity`).
    """
    spec = {"experiment": dataclasses.asdict(config), "epochs": epochs, "seed": seed,
            "data": data_identity(data, data_dir), "limit": limit, "precision": precision}
    if holdout is not None:
        spec["data"]["holdout"] = _split_identity(data, config.classes, holdout, holdout_seed,
                                                   seed=seed, data_dir=data_dir)
    return json.loads(json.dumps(spec))  # tuples -> lists, as stored


def differences(stored: dict, wanted: dict) -> list[str]:
    """Dotted names of the fields in which two run specs differ (e.g. `experiment.model.dropout`).

    The stored experiment is read back through `config_from_dict` first, so a
    config field added since the run was made counts at its default, and one
    removed since then is ignored.
    """
    a, b = _flat_specs(stored, wanted)
    return [key for key in sorted(a.keys() | b.keys()) if a.get(key) != b.get(key)]


def _flat_specs(stored: dict, wanted: dict):
    stored = dict(stored)
    if isinstance(stored.get("experiment"), dict):
        stored["experiment"] = json.loads(json.dumps(
            dataclasses.asdict(config_from_dict(stored["experiment"]))))
    return _flatten(stored), _flatten(wanted)


def _refusal(run_dir, state: str, stored: dict, wanted: dict, diff: list[str]) -> str:
    """Why a run folder is refused: each field with its stored and requested values, then
    the ways out, the non-destructive ones first."""
    a, b = _flat_specs(stored, wanted)
    items, flags = [], []
    data_fields = [key for key in diff if key.startswith("data.")]
    if data_fields:
        items.append(f"data ({', '.join(data_fields)}): stored "
                     f"{describe_data(stored.get('data'))}, requested "
                     f"{describe_data(wanted.get('data'))}")
        flags.append(data_flag(stored.get("data")))
    others = [key for key in diff if not key.startswith("data.")]
    for key in others[:8]:
        items.append(f"{key}: stored {a.get(key, '(none)')}, requested {b.get(key, '(none)')}")
        if key == "precision":
            flags.append(f"--precision {a.get(key)}")
        elif key == "epochs":
            flags.append(f"--epochs {a.get(key)}")
        elif key == "limit":
            flags.append("no --limit" if a.get(key) is None else f"--limit {a.get(key)}")
    if len(others) > 8:
        items.append(f"and {len(others) - 8} more")
    flags = [flag for flag in flags if flag]
    ways = [f"to use it, request what it stored (CLI: {', '.join(flags)})"] if flags else []
    ways += ["train into another out_dir (CLI: --out)",
             "pass overwrite=True (CLI: --overwrite) to replace it (the old run is kept until "
             "the new one has finished an epoch)"]
    ways = "; or ".join(ways)
    return (f"{run_dir} holds {state} made with another config (differs in: "
            f"{'; '.join(items)}). {ways[0].upper()}{ways[1:]}.")


def data_flag(identity) -> str | None:
    """The `--data` argument that names a recorded data identity, or `None`."""
    if not isinstance(identity, dict):
        return None
    if identity.get("source") in data_lib.NAMED_SOURCES:
        return f"--data {identity['source']}"
    if "path" in identity:
        return f"--data {identity['path']}"
    if "name" in identity:
        return f"--data <path of {identity['name']}>"
    return None


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


def _run_paths(run_dir) -> list[pathlib.Path]:
    """What a run folder holds of a run: config, training state, derived folders."""
    run_dir = pathlib.Path(run_dir)
    paths = [run_dir / "config.json", run_dir / SITTINGS,
             *(run_dir / name for name in TRAINING_STATE),
             *sorted(run_dir.glob("litert*")), *sorted(run_dir.glob("pruned*"))]
    return [path for path in paths if path.exists() or path.is_symlink()]


def _remove(path: pathlib.Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def clear(run_dir) -> None:
    """Removes a run's training state and everything derived from its model."""
    for path in _run_paths(run_dir):
        _remove(path)


def set_aside(run_dir) -> pathlib.Path | None:
    """Moves the run a folder holds (config, training state, derived folders) into
    `run_dir/.replaced/`; returns that folder, or `None` if there was nothing to move.

    Call it holding the folder's lock, once everything that can fail before
    training has passed. `restore_replaced` puts the run back;
    `discard_replaced` removes it. Where a `.replaced/` is left by an earlier
    overwrite that stopped before its new run finished an epoch, that one is
    kept (the run it holds is the last finished one) and the folder's
    unfinished content is removed instead.
    """
    run_dir = pathlib.Path(run_dir)
    paths = _run_paths(run_dir)
    aside = run_dir / REPLACED
    if aside.is_dir():
        for path in paths:
            _remove(path)
        return aside
    if not paths:
        return None
    aside.mkdir()
    moved = []
    try:
        for path in paths:
            os.replace(path, aside / path.name)
            moved.append(path)
    except BaseException:
        for path in moved:
            os.replace(aside / path.name, path)
        shutil.rmtree(aside, ignore_errors=True)
        raise
    return aside


def restore_replaced(run_dir) -> None:
    """Puts a run set aside by `set_aside` back, removing what the new run had written.

    A no-op where nothing is set aside (the new run has finished an epoch).
    """
    run_dir = pathlib.Path(run_dir)
    aside = run_dir / REPLACED
    if not aside.is_dir():
        return
    for path in _run_paths(run_dir):
        _remove(path)
    for path in aside.iterdir():
        os.replace(path, run_dir / path.name)
    aside.rmdir()


def discard_replaced(run_dir) -> None:
    """Removes an overwritten run kept in `run_dir/.replaced/`, if any."""
    shutil.rmtree(pathlib.Path(run_dir) / REPLACED, ignore_errors=True)


def record_sitting(run_dir, first_epoch: int, hardware: str, started: str) -> list[dict]:
    """Adds a sitting (training from `first_epoch` on `hardware`) to `sittings.json`.

    A run resumed by `BackupAndRestore`, perhaps on another machine, is
    trained in several sittings. Earlier entries that trained nothing before
    this one starts are dropped; a resumed run with no record of its first
    sitting gets one whose machine is `"unknown (not recorded)"`. Returns
    the sittings, oldest first.
    """
    path = pathlib.Path(run_dir) / SITTINGS
    try:
        stored = fileio.read_json(path) if path.exists() else []
        sittings = [s for s in stored if int(s["first_epoch"]) < first_epoch]
    except (OSError, TypeError, KeyError, ValueError):  # ValueError: not valid JSON
        sittings = []  # unreadable: what the machines were is lost, the run is not
    if first_epoch > 1 and not sittings:
        sittings = [{"first_epoch": 1, "hardware": "unknown (not recorded)"}]
    sittings.append({"first_epoch": first_epoch, "hardware": hardware, "started": started})
    fileio.write_json(path, sittings)
    return sittings


def sittings_summary(sittings: list[dict], seconds) -> list[dict]:
    """Each sitting's epochs (`"1-10"`, or `"11"`), machine and median seconds per epoch.

    `seconds` is the `seconds` column of the finished run's history, epoch 1 first.
    """
    seconds = list(seconds)
    out = []
    for i, sitting in enumerate(sittings):
        first = int(sitting["first_epoch"])
        last = int(sittings[i + 1]["first_epoch"]) - 1 if i + 1 < len(sittings) else len(seconds)
        own = seconds[first - 1:last]
        out.append({"epochs": f"{first}-{last}" if last > first else f"{first}",
                    "hardware": sitting["hardware"],
                    "seconds_per_epoch": round(statistics.median(own), 1) if own else None})
    return out


def logged_epochs(run_dir) -> int:
    """Epochs `history.csv` records (0 if it is absent, empty or unreadable)."""
    try:
        return int(pd.read_csv(pathlib.Path(run_dir) / "history.csv")["epoch"].nunique())
    except (OSError, ValueError, KeyError, pd.errors.ParserError):
        return 0


def read_metrics(run_dir) -> dict | None:
    """`metrics.json` of a run folder, or `None` if it is missing or unreadable."""
    try:
        metrics = fileio.read_json(pathlib.Path(run_dir) / "metrics.json")
    except (OSError, ValueError):
        return None
    return metrics if isinstance(metrics, dict) else None


def remove_if_untrained(run_dir) -> None:
    """Removes a run folder that holds no trained epoch (call it holding the folder's lock)."""
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir() or any((run_dir / n).exists() for n in TRAINING_STATE):
        return
    (run_dir / "config.json").unlink(missing_ok=True)
    (run_dir / SITTINGS).unlink(missing_ok=True)
    if {p.name for p in run_dir.iterdir()} <= {".lock"}:
        shutil.rmtree(run_dir, ignore_errors=True)


def decide(run_dir, spec: dict, overwrite: bool = False) -> str:
    """`"reuse"` a finished run, `"resume"` an unfinished one, `"rebuild"` the metrics of a
    finished one, or `"new"`.

    Compares `spec` with the folder's `config.json` before anything is trained.
    Removes nothing: a `"new"` run sets the folder's old content aside
    (`set_aside`) once its data have passed their checks.

    Raises:
        RunFolderError: the folder holds a run with another spec, a trained run
            without `config.json`, or a run that can be neither resumed nor
            finished without retraining (and not `overwrite`).
    """
    run_dir = pathlib.Path(run_dir)
    config_file = run_dir / "config.json"
    if overwrite:
        return "new"
    if not config_file.exists():
        if (any((run_dir / name).exists() for name in ("model.keras", "metrics.json", "backup"))
                or logged_epochs(run_dir)):
            raise RunFolderError(
                f"{run_dir} holds a trained run but no config.json, so whether it is this run "
                "cannot be told: train into another out_dir (CLI: --out), or pass "
                "overwrite=True (CLI: --overwrite) to replace it.")
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
        finished = (run_dir / "metrics.json").exists() or (run_dir / "model.keras").exists()
        state = "a finished run" if finished else "an unfinished run"
        message = _refusal(run_dir, state, stored, spec, diff)
        if (run_dir / REPLACED).is_dir():
            message += (f" ({run_dir / REPLACED} holds the run this folder held before an "
                        "overwrite that stopped before its first epoch: moving its files back "
                        "restores it.)")
        raise RunFolderError(message)
    if read_metrics(run_dir) is not None:
        return "reuse"
    if (run_dir / "backup").exists():
        return "resume"
    logged = logged_epochs(run_dir)
    if logged == 0:
        return "resume"  # nothing trained yet: it starts at epoch 1
    if (run_dir / "model.keras").exists() and logged >= spec["epochs"]:
        return "rebuild"
    missing = "metrics.json" if (run_dir / "model.keras").exists() else "model.keras"
    raise RunFolderError(
        f"{run_dir} holds {logged} trained epochs of {spec['epochs']} but no {missing} and no "
        "resume state (backup/): it cannot be finished without training it again from epoch 1. "
        "Train into another out_dir (CLI: --out), or pass overwrite=True (CLI: --overwrite) "
        "to train it afresh.")


# ---------------------------------------------------------------- reading runs


def load_run(run_dir) -> RunResult:
    """Reads a finished run folder (history and metrics)."""
    run_dir = pathlib.Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no metrics.json).")
    metrics = fileio.read_json(metrics_file)
    return RunResult(run_dir, read_history(run_dir), metrics)


def read_history(run_dir) -> pd.DataFrame:
    """A run's `history.csv`; an unreadable one is named in the error."""
    history_file = pathlib.Path(run_dir) / "history.csv"
    try:
        return pd.read_csv(history_file)
    except (ValueError, pd.errors.ParserError) as err:  # EmptyDataError is a ValueError
        raise fileio.UnreadableFileError(f"{history_file} cannot be read as CSV ({err}).") from None


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
    model_file = run_dir / "model.keras"
    if not model_file.exists():
        raise FileNotFoundError(
            f"{run_dir} holds no model.keras: a finished run is needed "
            "(`python -m squeeze_keras train ...`).")
    config = stored_config(run_dir)
    with dtype_policy("float32"):
        model = config.build_model()
    try:
        weights = keras.models.load_model(model_file, compile=False).get_weights()
    except Exception as err:  # Keras reports a truncated zip as "File not found"
        raise fileio.UnreadableFileError(
            f"{model_file} cannot be read as a Keras model ({model_file.stat().st_size:,} "
            "bytes: truncated or damaged?): restore it, or train the run again "
            "(`train ... --overwrite`).") from err
    try:
        model.set_weights(weights)
    except ValueError as err:
        raise fileio.UnreadableFileError(
            f"{model_file} does not hold the weights of the model its config.json "
            f"describes ({err}).") from None
    return config, model


def stored_config(run_dir) -> experiments.ExperimentConfig:
    """The `ExperimentConfig` a run folder's `config.json` holds; a bad file is named."""
    config_file = pathlib.Path(run_dir) / "config.json"
    if not config_file.exists():
        raise FileNotFoundError(f"{pathlib.Path(run_dir)} holds no config.json: it is not a "
                                "run folder written by `train`.")
    stored = fileio.read_json(config_file)
    if not isinstance(stored, dict) or not isinstance(stored.get("experiment"), dict):
        raise fileio.UnreadableFileError(
            f"{config_file} holds no experiment config (no 'experiment' entry): it was not "
            "written by `train`; restore it, or train the run again.")
    try:
        return config_from_dict(stored["experiment"])
    except (TypeError, ValueError, KeyError) as err:
        raise fileio.UnreadableFileError(
            f"{config_file} holds an experiment config this version cannot read ({err}).") from None


def stored_data(run_dir):
    """The data identity a run folder's `config.json` records, or `None` if it records none."""
    try:
        stored = fileio.read_json(pathlib.Path(run_dir) / "config.json")
    except FileNotFoundError:
        return None
    return stored.get("data") if isinstance(stored, dict) else None


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
