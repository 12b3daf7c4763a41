"""The small-models study: compress_run, size tables tied to their models, the bars."""

import json
import pathlib
import shutil

import numpy as np
import pandas as pd
import pytest

from squeeze_keras import export, plots, prune, runs, smallmodels

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("run", ["baseline", "e1", "e4_tuned", "e4_tuned2"])
def test_committed_tables_match_their_models(run):
    table = smallmodels.size_table(RESULTS / run)
    assert table.loc[0, "model"] == "dense" and table.loc[0, "drop"] == 0
    assert {"dense", "pruned60"} <= set(table["model"])
    assert set(table["data"]) == {"folder:cifar10-jpeg.tar.gz"}


def test_committed_best_run_meets_the_bars():
    bars = smallmodels.check_bars(smallmodels.size_table(RESULTS / "e4_tuned2"))
    assert list(bars["check"]) == [
        "dense int8: bytes", "dense int8: top-1 drop (points)",
        "pruned60 int8: gzip bytes", "pruned60 int8: top-1 drop (points)"]
    assert bars["met"].all()


@pytest.fixture(scope="module")
def compressed(learned, tmp_path_factory):
    """The whole small-models study (smoke size) on a copy of the learned run."""
    run_dir = tmp_path_factory.mktemp("compress") / "e1"
    shutil.copytree(learned.run_dir, run_dir, ignore=shutil.ignore_patterns("backup", "checkpoints"))
    table = smallmodels.compress_run(run_dir, data="synthetic", sparsity=0.6, prune_epochs=1,
                                     limit=300, representative=64, latency_runs=5, verbose=0)
    return run_dir, table


def test_compress_run_measures_dense_and_pruned_forms(compressed):
    run_dir, table = compressed
    assert list(table["model"].unique()) == ["dense", "pruned60_limit300"]
    assert list(table["form"]) == 2 * ["keras (reference)", *export.FORMS]
    assert set(table["data"]) == {"synthetic"}
    pruned = table.loc[table["model"] == "pruned60_limit300", "sparsity"].tolist()
    assert pruned == pytest.approx(5 * [0.6], abs=0.01)
    gz = table[table["form"] == "int8"].set_index("model")["gzip bytes"]
    assert gz["pruned60_limit300"] < 0.8 * gz["dense"]  # zeros compress
    reference = table.loc[0, "top-1"]
    np.testing.assert_allclose(table["drop"], reference - table["top-1"], atol=0.01)
    # A smoke study writes beside the full results, never over them.
    assert (run_dir / "pruned60_limit300" / "litert_limit300" / "int8.tflite").exists()
    assert not (run_dir / "litert").exists() and not (run_dir / "pruned60").exists()
    pd.testing.assert_frame_equal(smallmodels.size_table(run_dir, limit=300), table)


def test_compress_run_reuses_what_exists(compressed):
    run_dir, _ = compressed
    files = [run_dir / "litert_limit300" / "litert.csv",
             run_dir / "pruned60_limit300" / "model.keras",
             run_dir / "pruned60_limit300" / "litert_limit300" / "litert.csv"]
    before = [f.stat().st_mtime_ns for f in files]
    smallmodels.compress_run(run_dir, data="synthetic", sparsity=0.6, limit=300)  # minutes if redone
    assert [f.stat().st_mtime_ns for f in files] == before


def _retrain(folder):
    """Replaces `folder/model.keras` by another model (as a new training would)."""
    config, model = runs.load_trained_model(folder)
    model.set_weights([w * 0.5 for w in model.get_weights()])
    runs.save_model(model, config, folder / "model.keras")


@pytest.fixture()
def study_copy(compressed, tmp_path):
    run_dir, _ = compressed
    copy = tmp_path / "e1"
    shutil.copytree(run_dir, copy)
    return copy


def test_size_table_refuses_tables_of_another_model(study_copy):
    _retrain(study_copy)
    with pytest.raises(smallmodels.StaleResultError,
                       match=r"litert_limit300 was made from another model.*export it again"):
        smallmodels.size_table(study_copy, limit=300)
    # The dense table re-made: the pruned folder still belongs to the old model.
    source = json.loads((study_copy / "litert_limit300" / "source.json").read_text())
    source["source_sha256"] = runs.model_fingerprint(study_copy / "model.keras")
    (study_copy / "litert_limit300" / "source.json").write_text(json.dumps(source))
    with pytest.raises(smallmodels.StaleResultError, match=r"pruned60_limit300 .*prune it again"):
        smallmodels.size_table(study_copy, limit=300)


def test_pruned_table_is_checked_through_the_recorded_chain(study_copy):
    pruned = study_copy / "pruned60_limit300"
    (pruned / "model.keras").unlink()  # not committed: the record stands in for it
    assert len(smallmodels.size_table(study_copy, limit=300)) == 10
    source = json.loads((pruned / "source.json").read_text())
    source["model_sha256"] = "0" * 64
    (pruned / "source.json").write_text(json.dumps(source))
    with pytest.raises(smallmodels.StaleResultError, match=r"litert_limit300 .*export it again"):
        smallmodels.size_table(study_copy, limit=300)


ARCHIVE = {"source": "folder", "name": "cifar10-jpeg.tar.gz", "bytes": 19432150,
           "digest": "0bfcb68717a0ecb0"}


def _record_data(table_dir, identity):
    source = json.loads((table_dir / "source.json").read_text())
    source["data_identity"] = identity
    (table_dir / "source.json").write_text(json.dumps(source))


def test_size_table_and_bars_refuse_results_of_different_data(study_copy):
    pruned_table = study_copy / "pruned60_limit300" / "litert_limit300"
    _record_data(pruned_table, ARCHIVE)  # as if measured on the real CIFAR-10 copy
    with pytest.raises(smallmodels.MixedDataError,
                       match=r"litert_limit300 was measured on cifar10-jpeg\.tar\.gz .*but the "
                             r"run was trained on synthetic"):
        smallmodels.size_table(study_copy, limit=300)
    _record_data(pruned_table, {"source": "synthetic"})
    _record_data(study_copy / "litert_limit300", ARCHIVE)  # the dense table on other data
    with pytest.raises(smallmodels.MixedDataError, match="results of different data"):
        smallmodels.size_table(study_copy, limit=300)
    _record_data(study_copy / "litert_limit300", {"source": "synthetic"})
    table = smallmodels.size_table(study_copy, limit=300)
    assert smallmodels.check_bars(table)["check"].size == 4
    table.loc[table["model"] != "dense", "data"] = "folder:cifar10-jpeg.tar.gz"
    with pytest.raises(smallmodels.MixedDataError, match="mixes results measured on different"):
        smallmodels.check_bars(table)


def test_compress_run_redoes_stale_steps(study_copy, monkeypatch):
    """With export and pruning replaced by fast stand-ins that record their calls."""
    calls = []
    csv = (study_copy / "litert_limit300" / "litert.csv").read_text()

    def fake_export(run_dir, *, out_dir, **kwargs):
        calls.append(("export", out_dir.relative_to(study_copy).as_posix()))
        out_dir.mkdir(parents=True)
        (out_dir / "litert.csv").write_text(csv)
        (out_dir / "source.json").write_text(json.dumps(
            {"source_sha256": runs.model_fingerprint(run_dir / "model.keras"),
             "data_identity": {"source": "synthetic"}}))

    def fake_prune(run_dir, *, out_dir, **kwargs):
        calls.append(("prune", out_dir.relative_to(study_copy).as_posix()))
        assert not out_dir.exists()  # the stale folder went first
        out_dir.mkdir()
        shutil.copy(run_dir / "model.keras", out_dir / "model.keras")
        (out_dir / "metrics.json").write_text(json.dumps({"sparsity": 0.6}))
        (out_dir / "source.json").write_text(json.dumps({
            "source_sha256": runs.model_fingerprint(run_dir / "model.keras"),
            "model_sha256": runs.model_fingerprint(out_dir / "model.keras")}))

    monkeypatch.setattr(export, "export_run", fake_export)
    monkeypatch.setattr(prune, "prune_run", fake_prune)
    options = dict(data="synthetic", sparsity=0.6, limit=300)
    _retrain(study_copy / "pruned60_limit300")  # only the pruned model changed
    smallmodels.compress_run(study_copy, **options)
    assert calls == [("export", "pruned60_limit300/litert_limit300")]
    calls.clear()
    _retrain(study_copy)  # the run's model changed: everything is redone
    smallmodels.compress_run(study_copy, **options)
    assert calls == [("export", "litert_limit300"), ("prune", "pruned60_limit300"),
                     ("export", "pruned60_limit300/litert_limit300")]


def test_bars_are_checked_against_their_limits():
    table = pd.DataFrame({
        "model": ["dense", "dense", "pruned60", "pruned80"],
        "form": ["keras (reference)", "int8", "int8", "int8"],
        "bytes": [3_000_000, 849_999, 849_999, 849_999],
        "gzip bytes": [2_700_000, 760_000, 499_999, 300_000],
        "drop": [0.0, 1.0, 1.5, 1.51],
    })
    bars = smallmodels.check_bars(table).set_index("check")
    assert bars["met"].to_dict() == {
        "dense int8: bytes": True, "dense int8: top-1 drop (points)": True,
        "pruned60 int8: gzip bytes": True, "pruned60 int8: top-1 drop (points)": True,
        "pruned80 int8: gzip bytes": True, "pruned80 int8: top-1 drop (points)": False,
    }
    table.loc[1, "bytes"] = 850_000
    assert not smallmodels.check_bars(table).set_index("check").loc["dense int8: bytes", "met"]


def test_size_table_needs_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="export it first"):
        smallmodels.size_table(tmp_path)


def test_size_table_is_what_the_size_plot_takes(compressed, tmp_path):
    _, table = compressed  # the plot itself is tested in test_plots.py
    assert plots.plot_size_vs_accuracy(table, "test", tmp_path / "small.png") is not None
    assert (tmp_path / "small.png").stat().st_size > 0
