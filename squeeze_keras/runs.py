"""Run folders: their names, what a run was made with, and whether to reuse, resume or refuse.

A run folder `<out>/<experiment>[_<protocol>][_seed<k>]` holds `config.json`
(everything the run was made with: the experiment's full config, epochs,
seed, data identity, subset limit, precision), `history.csv`, `metrics.json`
and `model.keras`; while training, `backup/` (the resume state: the last
epoch's and the one before, `ResumeState`), `checkpoints/` and
`sittings.json` (which machine trained from which epoch, folded into
`metrics.json` when the run finishes); after export or pruning, derived
folders (`litert/`, `pruned*/`) that belong to the model they were made from.

The rule: a folder is only ever continued by the same run. Before anything
is trained, the stored `config.json` is compared field by field with the
requested one; a finished run is returned as it is, an unfinished one
resumes, and any difference is refused with the fields, their stored and
requested values and the ways out named. With `overwrite`, nothing is
removed until the new run's data have passed their checks; the old run is
then moved aside (`.replaced/`) and removed once the new run has finished an
epoch, or put back if it fails before. A finished run (one with
`model.keras`) whose `metrics.json` is missing, unreadable or incomplete is
never retrained: its metrics are rebuilt from `model.keras` and what
`history.csv` still holds (`"rebuild"`). A lock keeps a second process out of
a folder in use. What survives which interruption: docs/resume.md.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import errno
import hashlib
import io
import json
import math
import os
import pathlib
import shutil
import statistics
import typing

import keras
import numpy as np
import pandas as pd

from squeeze_keras import experiments
from squeeze_keras import data as data_lib
from squeeze_keras import fileio, sources
from squeeze_keras import layers  # noqa: F401  (registers the layers model.keras files name)

BACKUP = "backup"  # the resume state of an unfinished run (`ResumeState`)
DAMAGED_HISTORY = "history.csv.damaged"  # what a resumed run could not read of history.csv
TRAINING_STATE = ("history.csv", "metrics.json", "model.keras", BACKUP, "checkpoints",
                  DAMAGED_HISTORY)
REPLACED = ".replaced"  # an overwritten run, kept until the new one has finished an epoch
SITTINGS = "sittings.json"  # the machines of an unfinished run, one entry per (re)start


SPEC_KEYS = ("experiment", "epochs", "seed", "data", "limit", "precision")  # of config.json


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

    `seconds` holds each epoch's seconds, epoch 1 first (`None` where
    `history.csv` lost the epoch's row).
    """
    seconds = list(seconds)
    out = []
    for i, sitting in enumerate(sittings):
        first = int(sitting["first_epoch"])
        last = int(sittings[i + 1]["first_epoch"]) - 1 if i + 1 < len(sittings) else len(seconds)
        if last < first:
            continue  # a sitting that only evaluated (killed after the last epoch's state)
        own = [s for s in seconds[first - 1:last] if s is not None and math.isfinite(s)]
        out.append({"epochs": f"{first}-{last}" if last > first else f"{first}",
                    "hardware": sitting["hardware"],
                    "seconds_per_epoch": round(statistics.median(own), 1) if own else None})
    return out


def logged_epochs(run_dir) -> int:
    """Epochs `history.csv` records in readable rows (0 if it is absent, empty or unreadable)."""
    return len(history_rows(run_dir)[0])


# What a finished run's metrics.json holds at the least (every version has written these).
METRICS_KEYS = ("experiment", "protocol", "seed", "epochs", "top1", "top5", "hardware",
                "seconds_per_epoch", "report_top1")


def read_metrics(run_dir) -> dict | None:
    """`metrics.json` of a run folder, or `None` if it is missing, unreadable or incomplete.

    Incomplete: not an object, without one of `METRICS_KEYS`, or without a
    finite `top1` (`{}` or `"top1": null` left by a hand edit or another tool).
    """
    try:
        metrics = fileio.read_json(pathlib.Path(run_dir) / "metrics.json")
    except (OSError, ValueError):
        return None
    if not isinstance(metrics, dict) or not set(METRICS_KEYS) <= metrics.keys():
        return None
    return metrics if _is_finite(metrics["top1"]) else None


def _is_finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------- history.csv

def history_rows(run_dir) -> tuple[dict, list[str], str | None]:
    """The readable rows of `history.csv` by epoch, its columns, and what is unreadable.

    A row is readable if it has as many fields as the header, an integer
    epoch and numbers (or `nan`) elsewhere; a later row of an epoch replaces
    an earlier one (a resumed run trains an epoch again that was logged but
    not backed up). A header that does not start with `epoch` makes the
    whole file unreadable; a column misnamed is only missing to its readers.

    Returns:
        `(rows, columns, problem)`: `{epoch: {column: text}}` (epochs from 0),
        the columns after `epoch`, and `None` or a sentence naming the file and
        what of it cannot be read.
    """
    path = pathlib.Path(run_dir) / "history.csv"
    try:
        lines = list(csv.reader(io.StringIO(path.read_text(errors="replace"))))
    except FileNotFoundError:
        return {}, [], None
    except csv.Error as err:
        return {}, [], f"{path} cannot be read as CSV ({err})"
    if not lines:
        return {}, [], None  # created empty at a first epoch's start
    header, rows, bad = lines[0], {}, 0
    if header[:1] != ["epoch"]:
        return {}, [], f"{path} has a header that does not start with epoch"
    for fields in lines[1:]:
        if not fields:
            continue
        try:
            if len(fields) != len(header):
                raise ValueError(len(fields))
            epoch = int(fields[0])
            [float(value) for value in fields[1:] if value not in ("", "NA")]  # NA: no value
        except ValueError:
            bad += 1
            continue
        rows[epoch] = dict(zip(header, fields))
    problem = f"{path} has {bad} unreadable row{'s' * (bad > 1)}" if bad else None
    return rows, header[1:], problem


def history_frame(run_dir) -> pd.DataFrame:
    """The readable rows of `history.csv` (`history_rows`) as numbers, one per epoch, in order."""
    rows, columns, _ = history_rows(run_dir)
    frame = pd.DataFrame([rows[epoch] for epoch in sorted(rows)], columns=["epoch", *columns])
    return frame.apply(pd.to_numeric, errors="coerce").astype({"epoch": int})


class HistoryLog(keras.callbacks.Callback):
    """`history.csv`: a row per epoch (`epoch`, then the logs' names in order), written whole.

    Keras's `CSVLogger` appends in place, so a kill or a full disk in the
    middle of a row leaves a cut row that the next sitting's rows are then
    appended to. Here the file is rewritten atomically at each epoch's end,
    with the epoch's row replacing an earlier one of the same epoch. What a
    resumed run finds unreadable (`history_rows`) is left out, and the file as
    it was is kept once in `history.csv.damaged`.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.path = pathlib.Path(run_dir) / "history.csv"

    def on_train_begin(self, logs=None):
        self.rows, self.columns, problem = history_rows(self.path.parent)
        damaged = self.path.with_name(DAMAGED_HISTORY)
        if problem is not None and not damaged.exists():
            fileio.write_bytes(damaged, self.path.read_bytes())

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        self.rows[epoch] = {"epoch": epoch, **logs}
        self.columns = sorted(set(self.columns) | set(logs))
        text = io.StringIO()
        writer = csv.DictWriter(text, ["epoch", *self.columns], restval="", lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows[e] for e in sorted(self.rows))
        fileio.write_text(self.path, text.getvalue())


# ---------------------------------------------------------------- the resume state

# Keras's `BackupAndRestore` names, so that a run backed up by Keras itself resumes; the state
# before the latest one under names Keras loads (it refuses weights not named `.weights.h5`).
LATEST = ("latest.weights.h5", "training_metadata.json")
PREVIOUS = ("previous.weights.h5", "previous_training_metadata.json")
PARTIAL = ".partial.weights.h5"  # a state being written (Keras wants `.weights.h5`)


@dataclasses.dataclass(frozen=True)
class SavedState:
    """A resume state that passed its checks: the epochs it holds and its two files."""

    epochs: int
    weights: pathlib.Path
    metadata: pathlib.Path


def find_resume_state(run_dir) -> tuple[SavedState | None, str | None]:
    """The newest intact resume state in `run_dir/backup/`, and what is wrong with the rest.

    A state is a `training_metadata.json` (`{"epoch": N, "sha256": ...}`) and
    the weights file whose SHA-256 it records: the latest, the previous one
    (`previous.weights.h5`), or one a kill left before its rename (`ResumeState`). A record
    without `sha256` (written by Keras's `BackupAndRestore`) goes with the
    weights file of its own name, which must open as HDF5.

    Returns:
        `(state, problem)`: the state with the most epochs, or `None`; and
        `None`, or a sentence naming the file that is missing or damaged in
        the latest state (or the only one).
    """
    backup = pathlib.Path(run_dir) / BACKUP
    if not backup.is_dir():
        return None, None
    digests = {}

    def digest(path):
        if path not in digests:
            digests[path] = _sha256(path) if path.is_file() else None
        return digests[path]

    found, problems = [], []
    for weights_name, metadata_name in (LATEST, PREVIOUS):
        metadata_file, weights_file = backup / metadata_name, backup / weights_name
        if not metadata_file.exists():
            if weights_file.exists():
                problems.append(f"{weights_file} has no {metadata_name} beside it")
            continue
        try:
            record = fileio.read_json(metadata_file)
        except (OSError, ValueError) as err:
            problems.append(str(err).rstrip("."))
            continue
        epochs = record.get("epoch") if isinstance(record, dict) else None
        if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
            problems.append(f"{metadata_file} holds no epoch count")
            continue
        if "sha256" in record:
            candidates = (backup / LATEST[0], backup / PARTIAL, backup / PREVIOUS[0])
            weights = next((c for c in candidates if digest(c) == record["sha256"]), None)
        else:
            weights = weights_file if _opens_as_hdf5(weights_file) else None
        if weights is not None:
            found.append(SavedState(epochs, weights, metadata_file))
        elif not weights_file.exists():
            problems.append(f"{weights_file} is missing ({metadata_name} records {epochs} "
                            f"trained epoch{'s' * (epochs != 1)}; a copy that left out the "
                            "weights file?)")
        else:
            problems.append(f"{weights_file} is damaged ({weights_file.stat().st_size:,} bytes, "
                            f"not the file {metadata_name} records)")
    state = max(found, key=lambda s: s.epochs, default=None)
    return state, (problems[0] if problems else None)


def resumable_epochs(run_dir) -> int:
    """Epochs the run folder's resume state holds (0 for none)."""
    state, _ = find_resume_state(run_dir)
    return state.epochs if state is not None else 0


def remove_resume_state(run_dir) -> None:
    """Removes `backup/`: call it once `model.keras` and `metrics.json` are written."""
    shutil.rmtree(pathlib.Path(run_dir) / BACKUP, ignore_errors=True)


def _sha256(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _state_bytes(model) -> int:
    """About the size of `model.save_weights`' file: weights and optimizer state, and 1 MiB."""
    optimizer = getattr(model, "optimizer", None)
    variables = [*model.weights, *(optimizer.variables if optimizer is not None else [])]
    return sum(math.prod(v.shape) * np.dtype(v.dtype).itemsize for v in variables) + (1 << 20)


def _opens_as_hdf5(path) -> bool:
    import h5py  # Keras's own weights format; imported here as only old records need it

    try:
        with h5py.File(path, "r"):
            return True
    except (OSError, ValueError):
        return False


class ResumeState(keras.callbacks.Callback):
    """Keras's `BackupAndRestore` that no kill, full disk or damaged file can cost an epoch.

    At each epoch's end (a finite loss only) the training state (weights and
    optimizer) goes to a temporary file first; then the state it replaces is
    renamed to `previous*`, the new record (epochs and the weights' SHA-256) is
    written atomically and the weights renamed into place. At every moment
    one complete state is on disk, and `find_resume_state` tells an intact
    state from a damaged one by its digest, falling back to the previous one.
    (Keras's `double_checkpoint` copies the files in place instead, so a kill
    during its copy damages both, and it falls back on an `OSError` only.)
    Nothing is removed when `fit` ends: the run folder's state stays until
    `model.keras` and `metrics.json` are written (`remove_resume_state`).

    Args:
        run_dir: the run folder; the state lives in its `backup/`.
    """

    def __init__(self, run_dir):
        super().__init__()
        self.backup = pathlib.Path(run_dir) / BACKUP
        self.epochs_done = 0  # epochs the state on disk holds
        self._kept = None  # which pair of names holds the state to keep while writing one

    def on_train_begin(self, logs=None):
        state, problem = find_resume_state(self.backup.parent)
        if state is None:
            if problem is not None:  # damaged since `decide` looked
                raise RunFolderError(f"{self.backup.parent} cannot be resumed: {problem}.")
            return
        if state.weights.name == PARTIAL:  # killed before the rename: finish it
            os.replace(state.weights, self.backup / LATEST[0])
            state = dataclasses.replace(state, weights=self.backup / LATEST[0])
        optimizer = self.model.optimizer
        if optimizer is not None and not optimizer.built:
            optimizer.build(self.model.trainable_variables)  # its variables are in the file
        try:
            self.model.load_weights(state.weights)
        except Exception as err:  # a file of another model, or damaged past its header
            raise RunFolderError(
                f"{state.weights} cannot be loaded into this run's model ({err}); restore it, "
                "or pass overwrite=True (CLI: --overwrite) to train the run afresh.") from None
        self.model._initial_epoch = state.epochs  # what `BackupAndRestore` sets: fit starts there
        self.epochs_done = state.epochs
        self._kept = LATEST if state.metadata.name == LATEST[1] else PREVIOUS

    def on_epoch_end(self, epoch, logs=None):
        if math.isfinite(float((logs or {}).get("loss", 0.0))):  # a diverged epoch is no state
            self._save(epoch + 1)

    def _save(self, epochs: int) -> None:
        self.backup.mkdir(exist_ok=True)
        partial = self.backup / PARTIAL
        # Room first: h5py on a full disk leaves a file it cannot close, which prints
        # tracebacks after the command's error line and can crash the process as it exits.
        if shutil.disk_usage(self.backup).free < _state_bytes(self.model):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(partial))
        try:
            self.model.save_weights(partial)
            sha256 = _sha256(partial)
        except OSError as err:  # h5py names the disk's error only inside a long message
            partial.unlink(missing_ok=True)
            if err.errno is None:
                raise
            raise OSError(err.errno, os.strerror(err.errno), str(partial)) from None
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        if self._kept == LATEST:  # the latest state becomes the previous one
            for name, previous in zip(LATEST, PREVIOUS):
                if (self.backup / name).exists():
                    os.replace(self.backup / name, self.backup / previous)
        fileio.write_json(self.backup / LATEST[1], {"epoch": epochs, "batch": 0,
                                                    "sha256": sha256})
        os.replace(partial, self.backup / LATEST[0])
        self._kept, self.epochs_done = LATEST, epochs


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
    (`set_aside`) once its data have passed their checks. A run with
    `model.keras` but no complete `metrics.json` (and no resume state) is
    finished: it is rebuilt, never retrained.

    Raises:
        RunFolderError: the folder holds a run with another spec, a damaged
            `config.json`, a trained run without `config.json`, a resume state
            whose files are missing or damaged, or a run that can be neither
            resumed nor finished without retraining (and not `overwrite`).
    """
    run_dir = pathlib.Path(run_dir)
    config_file = run_dir / "config.json"
    if overwrite:
        return "new"
    if not config_file.exists():
        if (any((run_dir / name).exists() for name in ("model.keras", "metrics.json", BACKUP))
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
    missing = ([key for key in SPEC_KEYS if key not in stored] if isinstance(stored, dict)
               else list(SPEC_KEYS))
    if missing or not isinstance(stored.get("experiment"), dict):
        # A damaged file, not another run: a field-by-field comparison would list every field.
        raise RunFolderError(
            f"{config_file} is not a run's config (no {', '.join(missing or ['experiment'])} "
            "entry): damaged, or not written by `train`. Restore it from a copy of the run, "
            "or pass overwrite=True (CLI: --overwrite) to train the run afresh.")
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
    state, problem = find_resume_state(run_dir)
    if state is not None:
        return "resume"
    if (run_dir / "model.keras").exists():
        return "rebuild"  # written only once the last epoch is done: a finished run
    logged = logged_epochs(run_dir)
    if problem is not None:
        raise RunFolderError(
            f"{run_dir} cannot be resumed: {problem}, and no earlier resume state is intact. "
            "Copy the file back from where the run was trained, or pass overwrite=True (CLI: "
            f"--overwrite) to train it afresh (its {logged} logged epochs are lost then).")
    if logged == 0 or (logged == 1 and (run_dir / BACKUP).is_dir()):
        # Nothing trained yet, or a first epoch killed before its state was recorded.
        return "resume"
    raise RunFolderError(
        f"{run_dir} holds {logged} trained epochs of {spec['epochs']} but no model.keras and no "
        "resume state (backup/): it cannot be finished without training it again from epoch 1. "
        "Train into another out_dir (CLI: --out), or pass overwrite=True (CLI: --overwrite) "
        "to train it afresh.")


# ---------------------------------------------------------------- reading runs


def load_run(run_dir) -> RunResult:
    """Reads a finished run folder: its metrics and the readable rows of its history.

    Raises:
        FileNotFoundError: the folder holds no `metrics.json`.
        UnreadableFileError: `metrics.json` is not JSON.
    """
    run_dir = pathlib.Path(run_dir)
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.exists():
        raise FileNotFoundError(f"{run_dir} holds no finished run (no metrics.json).")
    metrics = fileio.read_json(metrics_file)
    # A row lost to damage is listed in the metrics (`history_missing`), not an error here.
    return RunResult(run_dir, history_frame(run_dir), metrics)


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
