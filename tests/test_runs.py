"""Run folders: nothing mixes, nothing is lost, and every refusal says why."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import time

import keras
import numpy as np
import pytest
from PIL import Image

from squeeze_keras import experiments, notebook, runs
from squeeze_keras.__main__ import main
from squeeze_keras.train import run_experiment

FAST = dict(limit=64, verbose=0, precision="float32")


class Interrupt(keras.callbacks.Callback):
    """Stops training like Ctrl-C after `epoch` has been logged and backed up."""

    def __init__(self, epoch):
        super().__init__()
        self.epoch = epoch

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch:
            raise KeyboardInterrupt("simulated Ctrl-C")


def write_folder(root, seed, per_class=4, classes=10):
    """A tiny CIFAR-shaped image folder (2 splits x `classes` classes x `per_class` PNGs)."""
    rng = np.random.default_rng(seed)
    for split in ("train", "test"):
        for label in range(classes):
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def test_an_unfinished_run_is_not_resumed_under_another_config(tmp_path, monkeypatch):
    from squeeze_keras import devices

    monkeypatch.setattr(devices, "hardware", lambda: "machine A")
    with pytest.raises(KeyboardInterrupt):
        run_experiment("baseline", epochs=3, data="synthetic", out_dir=tmp_path,
                       callbacks=[Interrupt(0)], **FAST)
    run_dir = tmp_path / "baseline"
    assert (run_dir / "backup").exists() and not (run_dir / "metrics.json").exists()
    stored = json.loads((run_dir / runs.SITTINGS).read_text())
    assert [(s["first_epoch"], s["hardware"]) for s in stored] == [(1, "machine A")]
    folder = write_folder(tmp_path / "small", seed=0)
    with pytest.raises(runs.RunFolderError, match=r"unfinished run .*differs in: .*data\.source.*epochs"):
        run_experiment("baseline", epochs=2, data=str(folder), out_dir=tmp_path, **FAST)
    # Nothing of the interrupted run was touched: the same command still resumes it,
    # here on another machine, and metrics.json says which machine trained which epochs.
    assert (run_dir / "backup").exists()
    monkeypatch.setattr(devices, "hardware", lambda: "machine B")
    result = run_experiment("baseline", epochs=3, data="synthetic", out_dir=tmp_path, **FAST)
    assert result.status == "resumed" and list(result.history["epoch"]) == [0, 1, 2]
    assert [(s["epochs"], s["hardware"]) for s in result.metrics["sittings"]] == [
        ("1", "machine A"), ("2-3", "machine B")]
    assert result.metrics["hardware"] == "machine A (epochs 1); machine B (epochs 2-3)"
    # The notebooks' result line gives each machine its own speed, not one median of both.
    line = notebook.result_line(result.metrics).splitlines()[-1]
    assert re.search(r"epochs 1 at [\d.]+ s/epoch on machine A; epochs 2-3 at [\d.]+ s/epoch "
                     r"on machine B; data: synthetic", line), line
    assert not (run_dir / runs.SITTINGS).exists()  # folded into metrics.json


def test_sittings_summary_gives_each_machine_its_epochs_and_speed():
    seconds = [10.0, 12.0, 30.0, 31.0, 29.0]
    assert runs.sittings_summary([{"first_epoch": 1, "hardware": "A"},
                                  {"first_epoch": 3, "hardware": "B"}], seconds) == [
        {"epochs": "1-2", "hardware": "A", "seconds_per_epoch": 11.0},
        {"epochs": "3-5", "hardware": "B", "seconds_per_epoch": 30.0}]


def test_record_sitting_drops_starts_that_trained_nothing(tmp_path):
    runs.record_sitting(tmp_path, 1, "A", "t0")
    runs.record_sitting(tmp_path, 4, "B", "t1")
    runs.record_sitting(tmp_path, 4, "C", "t2")  # B was stopped before finishing epoch 4
    stored = json.loads((tmp_path / runs.SITTINGS).read_text())
    assert [(s["first_epoch"], s["hardware"]) for s in stored] == [(1, "A"), (4, "C")]
    # A resumed run whose first sitting was never recorded does not credit this machine.
    (tmp_path / runs.SITTINGS).unlink()
    assert [s["hardware"] for s in runs.record_sitting(tmp_path, 5, "D", "t3")] == [
        "unknown (not recorded)", "D"]


def test_two_folders_with_the_same_name_are_different_data(tmp_path):
    first = write_folder(tmp_path / "a" / "small", seed=0)
    second = write_folder(tmp_path / "b" / "small", seed=1)
    assert runs.data_identity(str(first)) != runs.data_identity(str(second))
    out = tmp_path / "runs"
    run_experiment("baseline", epochs=1, data=str(first), out_dir=out, **FAST)
    with pytest.raises(runs.RunFolderError, match=r"finished run .*differs in: data \(data\.path\)"):
        run_experiment("baseline", epochs=1, data=str(second), out_dir=out, **FAST)


def test_an_archive_is_identified_by_content_not_by_path(tmp_path):
    import tarfile

    folder = write_folder(tmp_path / "small", seed=0)
    for copy in ("a", "b"):
        (tmp_path / copy).mkdir()
        with tarfile.open(tmp_path / copy / "small.tar.gz", "w:gz") as tar:
            tar.add(folder, arcname="small")
    identity = runs.data_identity(str(tmp_path / "a" / "small.tar.gz"))
    assert str(tmp_path) not in json.dumps(identity)  # committed runs carry no machine path
    assert identity["name"] == "small.tar.gz" and len(identity["digest"]) == 16
    (tmp_path / "b" / "small.tar.gz").write_bytes(b"other bytes")
    assert runs.data_identity(str(tmp_path / "b" / "small.tar.gz")) != identity


def test_another_precision_is_another_run(tmp_path):
    first = run_experiment("baseline", epochs=1, data="synthetic", out_dir=tmp_path, **FAST)
    # One sitting: the machine alone, and no sittings record is left behind.
    assert "sittings" not in first.metrics and "(epochs" not in first.metrics["hardware"]
    assert not (first.run_dir / runs.SITTINGS).exists()
    with pytest.raises(runs.RunFolderError, match=r"differs in: precision"):
        run_experiment("baseline", epochs=1, data="synthetic", out_dir=tmp_path,
                       **{**FAST, "precision": "mixed_bfloat16"})


def test_a_folder_in_use_is_refused(tmp_path):
    run_dir = runs.run_dir_for(experiments.get("baseline"), tmp_path)
    with runs.locked(run_dir):
        with pytest.raises(runs.RunFolderError, match="in use by process"):
            run_experiment("baseline", epochs=1, data="synthetic", out_dir=tmp_path, **FAST)
    assert not (run_dir / "config.json").exists()


def test_a_failed_start_leaves_no_folder(tmp_path):
    from squeeze_keras import data

    splits = data.load("cifar100", "synthetic", synthetic_sizes=(64, 64))
    with pytest.raises(ValueError, match="expects 10 classes"):
        run_experiment("baseline", epochs=1, data=splits, out_dir=tmp_path, **FAST)
    assert not (tmp_path / "baseline").exists()


def test_overwrite_removes_what_was_derived_from_the_old_model(tmp_path):
    first = run_experiment("baseline", epochs=1, data="synthetic", out_dir=tmp_path, **FAST)
    (first.run_dir / "litert").mkdir()
    (first.run_dir / "litert" / "litert.csv").write_text("stale\n")
    (first.run_dir / "pruned60").mkdir()

    def files():
        return {p.relative_to(first.run_dir): p.read_bytes()
                for p in first.run_dir.rglob("*") if p.is_file() and p.name != ".lock"}

    before = files()
    with pytest.raises(KeyboardInterrupt):  # at the first epoch's end, before it counts
        run_experiment("baseline", epochs=2, data="synthetic", out_dir=tmp_path,
                       overwrite=True, callbacks=[Interrupt(0)], **FAST)
    # The new run finished no epoch: the old one is back as it was.
    assert files() == before and (first.run_dir / "pruned60").is_dir()
    assert not (first.run_dir / runs.REPLACED).exists()
    again = run_experiment("baseline", epochs=2, data="synthetic", out_dir=tmp_path,
                           overwrite=True, **FAST)
    assert again.status == "trained" and len(again.history) == 2
    assert not (first.run_dir / "litert").exists() and not (first.run_dir / "pruned60").exists()
    assert not (first.run_dir / runs.REPLACED).exists()


def test_a_trained_folder_without_config_is_refused(tmp_path):
    run_dir = runs.run_dir_for(experiments.get("baseline"), tmp_path)
    run_dir.mkdir()
    (run_dir / "model.keras").write_bytes(b"a trained model")
    with pytest.raises(runs.RunFolderError, match="holds a trained run but no config.json"):
        run_experiment("baseline", epochs=1, data="synthetic", out_dir=tmp_path, **FAST)
    assert (run_dir / "model.keras").read_bytes() == b"a trained model"


def test_a_refusal_points_to_a_run_left_aside_by_a_killed_overwrite(tmp_path):
    spec = runs.run_spec(experiments.get("baseline"), epochs=1, seed=0, data="synthetic",
                         limit=None, precision="float32")
    (tmp_path / runs.REPLACED).mkdir(parents=True)  # kill -9 in the new run's first epoch
    (tmp_path / "config.json").write_text(json.dumps({**spec, "epochs": 2}))
    with pytest.raises(runs.RunFolderError, match=r"epochs: stored 2, requested 1.*\.replaced "
                                                  r"holds the run this folder held before"):
        runs.decide(tmp_path, spec)


def test_metrics_are_not_rebuilt_from_another_model(learned, tmp_path):
    import shutil

    from squeeze_keras import data

    run_dir = tmp_path / "e1"
    shutil.copytree(learned.run_dir, run_dir, ignore=shutil.ignore_patterns("checkpoints"))
    (run_dir / "metrics.json").unlink()
    config, model = runs.load_trained_model(run_dir)
    model.set_weights([w * 0 for w in model.get_weights()])  # not the history's model
    runs.save_model(model, config, run_dir / "model.keras")
    model_bytes = (run_dir / "model.keras").read_bytes()
    splits = data.load("cifar10", "synthetic", preprocessing="cifar", synthetic_sizes=(4000, 1000))
    with pytest.raises(runs.RunFolderError, match=r"logged .* the model is not that epoch's"):
        run_experiment("e1", epochs=4, data=splits, out_dir=tmp_path, precision="float32",
                       verbose=0)
    assert (run_dir / "model.keras").read_bytes() == model_bytes
    assert not (run_dir / "metrics.json").exists()


def test_a_run_loads_with_its_own_stored_config(tmp_path):
    parent = experiments.get("baseline").with_protocol("tuned")
    custom = dataclasses.replace(
        parent, name="custom", model=dataclasses.replace(parent.model, dropout=0.25))
    result = run_experiment(custom, epochs=1, data="synthetic", out_dir=tmp_path, **FAST)
    config, model = runs.load_trained_model(result.run_dir)
    assert config == custom  # not the registry's (there is no "custom" there)
    assert config.protocol.name == "tuned" and model.get_layer("dropout").rate == 0.25
    assert model.dtype_policy.name == "float32"


def test_stored_configs_of_older_versions_still_match(tmp_path):
    """A field added to a config since a run was made counts at its default."""
    result = run_experiment("baseline", epochs=1, data="synthetic", out_dir=tmp_path, **FAST)
    config_file = result.run_dir / "config.json"
    stored = json.loads(config_file.read_text())
    del stored["experiment"]["epochs"]  # as if written before the field existed
    config_file.write_text(json.dumps(stored))
    again = run_experiment("baseline", epochs=1, data="synthetic", out_dir=tmp_path, **FAST)
    assert again.status == "finished"


def test_every_committed_run_matches_its_registered_config():
    """results/: each run folder's config is what the registry builds today."""
    import pathlib

    results = pathlib.Path(__file__).resolve().parents[1] / "results"
    checked = 0
    for config_file in sorted(results.glob("*/config.json")):
        stored = json.loads(config_file.read_text())
        registered = experiments.get(stored["experiment"]["name"]).with_protocol(
            stored["experiment"]["protocol"]["name"])
        assert runs.config_from_dict(stored["experiment"]) == registered, config_file
        assert {"data", "precision", "epochs", "seed", "limit"} <= stored.keys(), config_file
        checked += 1
    assert checked >= 7


def test_resume_state_travels_with_the_working_tree_but_is_never_committed():
    """backup/ is untracked, not ignored, so an unfinished run survives a carried checkout."""
    import pathlib
    import shutil
    import subprocess

    root = pathlib.Path(__file__).resolve().parents[1]
    if shutil.which("git") is None or not (root / ".git").exists():
        pytest.skip("needs git and a git checkout")

    def git(*args):
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True)

    backup = "results/e5_holdout100/backup/latest.weights.h5"
    assert git("check-ignore", "-q", backup).returncode == 1, f"{backup} is git-ignored"
    sittings = "results/e5_holdout100/sittings.json"
    assert git("check-ignore", "-q", sittings).returncode == 1, f"{sittings} is git-ignored"
    assert git("check-ignore", "-q", "results/e5_holdout100/checkpoints/best.keras").returncode == 0
    tracked = git("ls-files", "results").stdout.split()
    assert tracked, "no committed runs"
    state = [name for name in tracked
             if {"backup", "checkpoints", ".lock", "sittings.json"}
             & set(pathlib.PurePosixPath(name).parts)]
    assert state == [], f"resume state committed: {state}"


# ---------------------------------------------------------------- kill -9 (issue #36)


def start_cli(*argv) -> subprocess.Popen:
    """`python -m squeeze_keras *argv` in a process of its own, to be killed."""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.Popen([sys.executable, "-m", "squeeze_keras", *argv], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def wait_for(proc, condition, timeout=600):
    """Polls `condition` every 20 ms while `proc` runs (the kill loop of the issue)."""
    end = time.time() + timeout
    while not condition():
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        assert time.time() < end, "timed out"
        time.sleep(0.02)


def backed_up(run_dir) -> int:
    """The epoch count `backup/training_metadata.json` records (0 while there is none)."""
    try:
        return json.loads((run_dir / "backup" / "training_metadata.json").read_text())["epoch"]
    except (OSError, ValueError, KeyError):
        return 0


def killed_run(tmp_path, epochs, until):
    """`train baseline` killed with SIGKILL once `until(run_dir)`: returns (argv, run_dir)."""
    argv = ["train", "baseline", "--data", "synthetic", "--limit", "640", "--epochs", str(epochs),
            "--precision", "float32", "--out", str(tmp_path), "--verbose", "2"]
    run_dir = tmp_path / "baseline"
    proc = start_cli(*argv)
    try:
        wait_for(proc, lambda: until(run_dir))
    finally:
        proc.kill()
        proc.communicate()
    return argv, run_dir


def test_a_kill_9_as_the_resume_state_is_written_loses_no_epoch(tmp_path, capsys):
    """Case 1: killed as `backup/training_metadata.json` appears, then `history.csv` emptied.

    The resumed run finishes (before, `fit` failed after Keras had removed `backup/`, and
    the run could not be finished without training it again from epoch 1).
    """
    argv, run_dir = killed_run(tmp_path, 3, lambda d: (d / "backup" / "training_metadata.json").exists())
    done = backed_up(run_dir)
    assert 1 <= done < 3
    (run_dir / "history.csv").write_text("")
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Resuming baseline at epoch {done + 1}/3" in out and f"lacks {done} of them" in out
    assert "resumed and finished. Top-1" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 3 and metrics["history_missing"] == list(range(1, done + 1))
    assert (run_dir / "model.keras").exists() and not (run_dir / "backup").exists()
    assert list(runs.history_frame(run_dir)["epoch"]) == list(range(done, 3))
    assert main(argv) == 0  # and it stays finished
    assert "already finished, not retrained" in capsys.readouterr().out


def test_a_resume_state_cut_short_falls_back_to_the_one_before(tmp_path, capsys):
    """Case 3: `backup/latest.weights.h5` cut to 96 bytes after a kill: the state before it
    (`previous.weights.h5`) is intact, and the run resumes from it (before, an h5py traceback every time)."""
    argv, run_dir = killed_run(tmp_path, 4, lambda d: backed_up(d) >= 2)
    done = backed_up(run_dir)
    assert 2 <= done < 4
    with open(run_dir / "backup" / "latest.weights.h5", "r+b") as f:
        f.truncate(96)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"Resuming baseline at epoch {done}/4 (" in out
    assert "latest.weights.h5 is damaged (96 bytes" in out
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 4 and "history_missing" not in metrics
    assert list(runs.history_frame(run_dir)["epoch"]) == [0, 1, 2, 3]
