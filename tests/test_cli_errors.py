"""The command line when things go wrong: one `error:` line naming the file or the variable,
exit code 2, and nothing of a finished run lost (issue #24, second pass)."""

import errno
import json
import math
import pathlib
import shutil
import signal

import keras
import numpy as np
import pytest
from test_runs import Interrupt, start_cli, wait_for, write_folder

from squeeze_keras import data, experiments, export, prune, runs, train
from squeeze_keras.__main__ import main

TRAIN = ["--data", "synthetic", "--limit", "64", "--epochs", "1", "--precision", "float32",
         "--verbose", "0"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A finished one-epoch baseline run (`train baseline ... --out <tmp>`) to copy."""
    out = tmp_path_factory.mktemp("tiny")
    assert main(["train", "baseline", "--out", str(out), *TRAIN]) == 0
    return out


@pytest.fixture()
def run(tiny, tmp_path):
    """A copy of the tiny run's `--out` folder with a stand-in export: returns `out`."""
    out = tmp_path / "out"
    shutil.copytree(tiny, out)
    (out / "baseline" / "litert").mkdir()
    (out / "baseline" / "litert" / "litert.csv").write_text("form,top-1\nint8,57.94\n")
    return out


@pytest.fixture(scope="module")
def unfinished(tmp_path_factory):
    """`train baseline ... --epochs 3` stopped by Ctrl-C after its first epoch (`--out <tmp>`)."""
    out = tmp_path_factory.mktemp("unfinished")
    with pytest.raises(KeyboardInterrupt):
        train.run_experiment("baseline", epochs=3, data="synthetic", out_dir=out, limit=64,
                             precision="float32", verbose=0, callbacks=[Interrupt(0)])
    return out


def snapshot(run_dir):
    """Every file of a run folder and its bytes (the lock file aside)."""
    return {p.relative_to(run_dir).as_posix(): p.read_bytes()
            for p in sorted(run_dir.rglob("*")) if p.is_file() and p.name != ".lock"}


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err


def test_overwrite_removes_nothing_when_the_data_fail_their_checks(run, tmp_path, capsys,
                                                                   monkeypatch):
    before = snapshot(run / "baseline")
    nine = write_folder(tmp_path / "nine", seed=0, per_class=1, classes=9)
    argv = ["train", "baseline", "--out", str(run), "--overwrite", *TRAIN]
    assert main([*argv, "--data", str(nine)]) == 2
    assert "9 class folders" in error_line(capsys)
    assert snapshot(run / "baseline") == before  # model, history, metrics, export: all there

    def offline(*args, **kwargs):
        raise data.DataError("tfds could not download cifar10 (no internet).")

    monkeypatch.setattr(data, "tfds_arrays", offline)
    assert main([*argv, "--data", "tfds"]) == 2
    assert "no internet" in error_line(capsys)
    assert snapshot(run / "baseline") == before
    assert not (run / "baseline" / ".replaced").exists()


def test_a_refusal_says_stored_and_requested_values_and_the_safe_ways_out_first(run, capsys):
    before = snapshot(run / "baseline")
    argv = ["train", "baseline", "--out", str(run), *TRAIN]
    assert main([*argv, "--precision", "mixed_bfloat16", "--epochs", "2"]) == 2
    err = error_line(capsys)
    assert "epochs: stored 1, requested 2; precision: stored float32, requested mixed_bfloat16" in err
    assert err.index("--epochs 1, --precision float32") < err.index("--out") < err.index("--overwrite")
    assert snapshot(run / "baseline") == before


def test_a_finished_run_that_lost_its_metrics_is_rebuilt_not_retrained(run, capsys):
    run_dir = run / "baseline"
    original = json.loads((run_dir / "metrics.json").read_text())
    model = (run_dir / "model.keras").read_bytes()
    argv = ["train", "baseline", "--out", str(run), *TRAIN]
    for damage, was in ((lambda f: f.unlink(), "missing"), (lambda f: f.write_text("{\n"), "unreadable")):
        damage(run_dir / "metrics.json")
        assert main(argv) == 0
        out = capsys.readouterr().out
        assert f"not retrained; its metrics.json was {was} and is rebuilt" in out, out
        assert (run_dir / "model.keras").read_bytes() == model
        rebuilt = json.loads((run_dir / "metrics.json").read_text())
        for key in ("top1", "top5", "epochs", "params", "precision", "train_size", "test_size"):
            assert rebuilt[key] == original[key], key
        assert rebuilt["test_loss"] == pytest.approx(original["test_loss"], abs=2e-4)
        assert rebuilt["rebuilt"]["was"] == was
    assert main(argv) == 0
    assert "already finished, not retrained." in capsys.readouterr().out


def test_a_run_without_metrics_or_model_or_resume_state_is_not_retrained(run, capsys):
    run_dir = run / "baseline"
    for name in ("metrics.json", "model.keras"):
        (run_dir / name).unlink()
    before = snapshot(run_dir)
    assert main(["train", "baseline", "--out", str(run), *TRAIN]) == 2
    assert "cannot be finished without training it again" in error_line(capsys)
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("command", ["export", "prune"])
def test_a_config_without_an_experiment_is_named(run, command, capsys):
    run_dir = run / "baseline"
    (run_dir / "config.json").write_text("{}")
    assert main([command, str(run_dir), "--data", "synthetic"]) == 2
    assert f"{run_dir / 'config.json'} holds no experiment config" in error_line(capsys)
    assert not (run_dir / "pruned60").exists()


def test_a_truncated_model_is_named_as_such(run, capsys):
    model_file = run / "baseline" / "model.keras"
    model_file.write_bytes(model_file.read_bytes()[:1000])
    assert main(["export", str(model_file.parent), "--data", "synthetic"]) == 2
    err = error_line(capsys)
    assert f"{model_file} cannot be read as a Keras model (1,000 bytes" in err
    assert "File not found" not in err


@pytest.mark.parametrize("backend, words", [
    ("jaxx", "KERAS_BACKEND=jaxx is not a backend this package trains under"),
    ("numpy", "KERAS_BACKEND=numpy is not a backend this package trains under"),
])
def test_an_unusable_keras_backend_is_named(backend, words, monkeypatch, capsys):
    monkeypatch.setenv("KERAS_BACKEND", backend)
    assert main(["train", "e1", "--data", "synthetic"]) == 2
    assert words in error_line(capsys)


@pytest.mark.parametrize("command", [["train", "e1"], ["export", "results/e1"],
                                     ["prune", "results/e1"]])
def test_an_empty_out_is_refused(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--out", "", "--data", "synthetic"])
    assert exit_info.value.code == 2
    assert "--out: must name a folder, got an empty string" in capsys.readouterr().err


def test_prune_checks_its_run_and_output_before_fine_tuning(run, capsys, monkeypatch):
    run_dir = run / "baseline"

    def fine_tuning(*args, **kwargs):
        raise AssertionError("fine-tuning started")

    monkeypatch.setattr(prune, "_prune", fine_tuning)
    (run_dir / "metrics.json").write_text("{\n")
    assert main(["prune", str(run_dir), "--data", "synthetic"]) == 2
    assert f"error: {run_dir / 'metrics.json'} is not valid JSON (" in error_line(capsys)
    assert not (run_dir / "pruned60").exists()
    (run_dir / "metrics.json").write_text(json.dumps({"top1": 10.0}))
    access = prune.os.access

    def read_only(path, mode):  # the output folder is read-only (chmod cannot, as root)
        return False if pathlib.Path(path).name == "pruned60" else access(path, mode)

    monkeypatch.setattr(prune.os, "access", read_only)
    assert main(["prune", str(run_dir), "--data", "synthetic"]) == 2
    assert f"cannot write into {run_dir / 'pruned60'} (permission denied)" in error_line(capsys)
    assert not (run_dir / "pruned60").exists()


def test_export_and_prune_on_other_data_than_the_run_are_refused_inside_it(run, capsys,
                                                                        monkeypatch):
    run_dir = run / "baseline"
    config = json.loads((run_dir / "config.json").read_text())
    config["data"] = {"source": "folder", "name": "cifar10-jpeg.tar.gz", "bytes": 19432150,
                      "digest": "0bfcb68717a0ecb0"}  # as the committed runs
    (run_dir / "config.json").write_text(json.dumps(config))
    before = snapshot(run_dir)
    for argv in (["export", str(run_dir)], ["export", str(run_dir), "--limit", "50"],
                 ["prune", str(run_dir)], ["export", str(run_dir), "--out",
                                           str(run_dir / "litert"), "--overwrite"]):
        assert main([*argv, "--data", "synthetic"]) == 2
        err = error_line(capsys)
        assert "trained on cifar10-jpeg.tar.gz (19,432,150 bytes" in err and "asked on synthetic" in err
        assert "--data <path of cifar10-jpeg.tar.gz>" in err and "outside the run folder" in err
    assert snapshot(run_dir) == before
    # Elsewhere, the table is made, and says what it was measured on.
    other = run / "synthetic_litert"
    table = export.export_run(run_dir, data="synthetic", out_dir=other, forms=("float32",),
                              eval_limit=50, representative=8, latency_runs=2)
    assert table.attrs["out_dir"] == str(other)
    source = json.loads((other / "source.json").read_text())
    assert source["data"] == "synthetic" and source["data_identity"] == {"source": "synthetic"}
    monkeypatch.setattr(export, "export_run", lambda *args, **kwargs: table)
    assert main(["export", str(run_dir), "--data", "synthetic", "--out", str(other)]) == 0
    assert capsys.readouterr().out.rstrip().endswith(f"-> {other}")


def test_committed_derived_folders_record_the_runs_data():
    results = pathlib.Path(__file__).resolve().parents[1] / "results"
    checked = 0
    for source_file in sorted(results.glob("*/**/source.json")):
        run_dir = source_file.parent
        while run_dir.name.startswith(("litert", "pruned")):
            run_dir = run_dir.parent
        source = json.loads(source_file.read_text())
        trained_on = json.loads((run_dir / "config.json").read_text())["data"]
        assert source["data_identity"] == trained_on, source_file
        assert source["data"] == f"folder:{trained_on['name']}", source_file
        checked += 1
    assert checked >= 14


# ---------------------------------------------------------------- issue #36


def strict_json(path):
    """A JSON file read as JSON is defined: `NaN` and `Infinity` are refused."""
    def refuse(constant):
        raise ValueError(f"{path} holds {constant}")

    return json.loads(pathlib.Path(path).read_text(), parse_constant=refuse)


def without(header_name, text):
    return text.replace(header_name, header_name[:-2], 1)


# Each: what is done to a finished run's records; every one but the first two also loses
# metrics.json, and the second item says what is left of history.csv for the rebuild: its
# last row (`intact`), no row (`lost`), or the row without its validation top-1.
DAMAGE = {
    "metrics.json of {}": (lambda d: (d / "metrics.json").write_text("{}"), "intact"),
    "metrics.json with top1 null": (lambda d: (d / "metrics.json").write_text(json.dumps(
        {**json.loads((d / "metrics.json").read_text()), "top1": None})), "intact"),
    "no history.csv": (lambda d: (d / "history.csv").unlink(), "lost"),
    "an empty history.csv": (lambda d: (d / "history.csv").write_text(""), "lost"),
    "its last row cut": (lambda d: (d / "history.csv").write_text(
        (d / "history.csv").read_text()[:-40]), "lost"),
    "a row of 12 fields": (lambda d: (d / "history.csv").write_text(
        (d / "history.csv").read_text().rstrip("\n") + ",1,2,3\n"), "lost"),
    "a misspelt header": (lambda d: (d / "history.csv").write_text(
        without("val_accuracy", (d / "history.csv").read_text())), "misnamed"),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_finished_run_with_damaged_records_is_rebuilt_never_retrained(run, damage, capsys):
    """Cases 2 and 5, and `metrics.json` of `{}` or `top1: null`: before, the run was trained
    again (model.keras replaced), or a traceback, or `"top1": NaN` written with exit 0."""
    run_dir = run / "baseline"
    original = json.loads((run_dir / "metrics.json").read_text())
    model = (run_dir / "model.keras").read_bytes()
    harm, history = DAMAGE[damage]
    if history != "intact":
        (run_dir / "metrics.json").unlink()
    harm(run_dir)
    assert main(["train", "baseline", "--out", str(run), *TRAIN]) == 0
    out = capsys.readouterr().out
    assert "already finished, not retrained; its metrics.json was" in out, out
    assert (run_dir / "model.keras").read_bytes() == model
    rebuilt = strict_json(run_dir / "metrics.json")
    assert rebuilt["epochs"] == 1 and math.isfinite(rebuilt["top1"])
    if history == "intact":
        assert rebuilt["top1"] == original["top1"] and "history_missing" not in rebuilt
        assert rebuilt["rebuilt"]["from"] == ["history.csv", "model.keras"]
    else:  # measured on model.keras: the same model on the same images
        assert rebuilt["top1"] == pytest.approx(original["top1"], abs=0.5)
        assert rebuilt["rebuilt"]["from"] == ["model.keras"]
        assert "from model.keras. Top-1" in out
    if history == "lost":
        assert rebuilt["history_missing"] == [1] and rebuilt["seconds_per_epoch"] is None
        assert "? s/epoch" in out
    assert main(["train", "baseline", "--out", str(run), *TRAIN]) == 0
    assert "already finished, not retrained." in capsys.readouterr().out


def test_a_config_of_nothing_is_named_not_compared_field_by_field(run, capsys):
    run_dir = run / "baseline"
    (run_dir / "config.json").write_text("{}")
    before = snapshot(run_dir)
    assert main(["train", "baseline", "--out", str(run), *TRAIN]) == 2
    err = error_line(capsys)
    assert f"{run_dir / 'config.json'} is not a run's config (no experiment, epochs" in err
    assert "differs in" not in err and "--epochs None" not in err
    assert snapshot(run_dir) == before


@pytest.mark.parametrize("damage, named", [
    ("the weights file left out", "latest.weights.h5 is missing (training_metadata.json "
                                  "records 1 trained epoch; a copy that left out"),
    ("training_metadata.json garbled", "training_metadata.json is not valid JSON"),
])
def test_a_resume_state_with_a_file_missing_or_damaged_is_refused_by_name(
        unfinished, tmp_path, damage, named, capsys):
    """Case 4: without its weights file the run "resumed" from random weights and reported
    "finished"; a garbled record gave an error naming no file."""
    out = tmp_path / "out"
    shutil.copytree(unfinished, out)
    backup = out / "baseline" / "backup"
    if damage == "the weights file left out":
        (backup / "latest.weights.h5").unlink()
    else:
        (backup / "training_metadata.json").write_text('{"epoch": ')
    before = snapshot(out / "baseline")
    assert main(["train", "baseline", "--out", str(out), *TRAIN, "--epochs", "3"]) == 2
    err = error_line(capsys)
    assert f"{out / 'baseline'} cannot be resumed: {backup}" in err and named in err, err
    assert "--overwrite" in err
    assert snapshot(out / "baseline") == before


def test_a_garbled_history_row_of_an_unfinished_run_costs_only_that_row(unfinished, tmp_path,
                                                                        capsys):
    """Case 1's other form: the run finishes; metrics.json says which epoch has no row."""
    out = tmp_path / "out"
    shutil.copytree(unfinished, out)
    history = out / "baseline" / "history.csv"
    header = history.read_text().splitlines()[0]
    history.write_text(f"{header}\n0,0.1,garbled\n")
    assert main(["train", "baseline", "--out", str(out), *TRAIN, "--epochs", "3"]) == 0
    assert "resumed and finished" in capsys.readouterr().out
    metrics = strict_json(out / "baseline" / "metrics.json")
    assert metrics["epochs"] == 3 and metrics["history_missing"] == [1]
    assert list(runs.history_frame(out / "baseline")["epoch"]) == [1, 2]
    assert (out / "baseline" / "history.csv.damaged").read_text().endswith("0,0.1,garbled\n")


def test_a_run_that_diverges_stops_with_one_line_and_keeps_its_finished_epochs(
        tmp_path, capsys, monkeypatch):
    scale, begin = keras.Variable(1.0, trainable=False), train.EpochStats.on_epoch_begin
    loss = train.make_loss(experiments.get("baseline"))

    class Diverging(keras.losses.Loss):  # the run's loss, NaN from epoch 2 on
        def call(self, y_true, y_pred):
            return loss.call(y_true, y_pred) * scale

    def diverge(self, epoch, logs=None):
        begin(self, epoch, logs)
        scale.assign(np.nan if epoch == 1 else 1.0)

    monkeypatch.setattr(train.EpochStats, "on_epoch_begin", diverge)
    monkeypatch.setattr(train, "make_loss",
                        lambda config: Diverging(reduction=train.LOSS_REDUCTION))
    argv = ["train", "baseline", "--out", str(tmp_path), *TRAIN, "--epochs", "3"]
    assert main(argv) == 1
    err = error_line(capsys)
    run_dir = tmp_path / "baseline"
    assert f"Training of {run_dir} stopped after 1 of 3 epochs: the loss of epoch 2 was nan" in err
    assert f"epoch 1 is kept in {run_dir / 'backup'}" in err and "--seed" in err
    assert runs.resumable_epochs(run_dir) == 1 and not (run_dir / "model.keras").exists()


@pytest.mark.parametrize("fills", ["the second epoch's resume state", "model.keras"])
def test_a_full_disk_stops_with_one_line_and_loses_no_finished_epoch(tmp_path, fills, capsys,
                                                                   monkeypatch):
    def full(path):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    if fills == "model.keras":
        monkeypatch.setattr(runs, "save_model", lambda model, config, path: full(path))
    else:
        save_weights, saved = keras.Model.save_weights, []

        def second_full(self, filepath, *args, **kwargs):
            saved.append(filepath)
            if len(saved) == 2:
                full(filepath)
            return save_weights(self, filepath, *args, **kwargs)

        monkeypatch.setattr(keras.Model, "save_weights", second_full)
    argv = ["train", "baseline", "--out", str(tmp_path), *TRAIN, "--epochs", "2"]
    assert main(argv) == 2
    err = error_line(capsys)
    assert "error: no space left on the disk of " in err
    assert "run the same command again to resume from the last finished epoch" in err
    run_dir = tmp_path / "baseline"
    assert runs.resumable_epochs(run_dir) == (2 if fills == "model.keras" else 1)
    monkeypatch.undo()  # space freed
    assert main(argv) == 0
    assert "resumed and finished" in capsys.readouterr().out
    metrics = strict_json(run_dir / "metrics.json")
    assert metrics["epochs"] == 2 and list(runs.history_frame(run_dir)["epoch"]) == [0, 1]
    if fills != "model.keras":  # the second sitting trained epoch 2 only
        assert [s["epochs"] for s in metrics["sittings"]] == ["1", "2"]


def test_sigterm_during_an_overwrites_first_epoch_puts_the_old_run_back(run):
    """As Ctrl-C does: before, SIGTERM (a scheduler, `timeout`) left it in `.replaced/`."""
    run_dir = run / "baseline"
    before = snapshot(run_dir)
    proc = start_cli("train", "baseline", "--out", str(run), *TRAIN, "--limit", "2048",
                     "--overwrite")
    wait_for(proc, lambda: (run_dir / ".replaced").is_dir())
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=300)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err[-3000:]
    assert "Traceback" not in err
    assert err.strip().splitlines()[-1] == (
        "terminated (SIGTERM): run it again without --overwrite to resume the new run from its "
        "last finished epoch (if it had none, the old run was put back as it was).")
    assert snapshot(run_dir) == before and not (run_dir / ".replaced").exists()
