"""The command line when things go wrong: one `error:` line naming the file or the variable,
exit code 2, and nothing of a finished run lost (issue #24, second pass)."""

import json
import pathlib
import shutil

import pytest
from test_runs import write_folder

from squeeze_keras import data, export, prune
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
