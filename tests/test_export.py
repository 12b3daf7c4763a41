"""LiteRT export: every form round-trips and the interpreter agrees with Keras."""

import shutil

import numpy as np
import pandas as pd
import pytest

from squeeze_keras import export
from squeeze_keras.plots import plot_size_vs_accuracy
from squeeze_keras.__main__ import main


@pytest.fixture(scope="module")
def table(learned, tmp_path_factory):
    out = tmp_path_factory.mktemp("litert")
    return export.export_run(learned.run_dir, data="synthetic", out_dir=out, eval_limit=300,
                             representative=64, latency_runs=10), out


def test_every_form_is_written_and_smaller_where_it_should_be(table):
    df, out = table
    assert list(df["form"]) == ["keras (reference)", *export.FORMS]
    assert {p.name for p in out.iterdir()} == {f"{f}.tflite" for f in export.FORMS} | {"litert.csv"}
    size = dict(zip(df["form"], df["bytes"]))
    params = 740_554
    assert 4 * params < size["float32"] < 4.2 * params
    assert 2 * params < size["float16"] < 2.2 * params
    assert params < size["dynamic_int8"] < 1.2 * params and params < size["int8"] < 1.25 * params
    assert (df["gzip bytes"] < df["bytes"]).all()
    assert (df["latency ms"].dropna() > 0).all()


def test_interpreter_agrees_with_keras(table):
    df, _ = table
    acc = dict(zip(df["form"], df["top-1"]))
    agree = dict(zip(df["form"], df["agreement with keras"]))
    assert acc["keras (reference)"] > 50  # the trained model works on this data
    assert agree["float32"] >= 99 and agree["float16"] >= 98
    assert agree["dynamic_int8"] >= 90 and agree["int8"] >= 90  # "most test inputs"
    assert abs(acc["int8"] - acc["keras (reference)"]) < 5


def test_int8_model_takes_and_gives_uint8(table):
    from ai_edge_litert.interpreter import Interpreter

    _, out = table
    interpreter = Interpreter(model_path=str(out / "int8.tflite"))
    assert interpreter.get_input_details()[0]["dtype"] == np.uint8
    assert interpreter.get_output_details()[0]["dtype"] == np.uint8


def test_run_without_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        export.export_run(tmp_path, data="synthetic")
    assert main(["export", str(tmp_path), "--data", "synthetic"]) == 2
    with pytest.raises(ValueError, match="form='int4'"):
        export.convert(None, "int4")


@pytest.fixture(scope="module")
def compressed(learned, tmp_path_factory):
    """The whole small-models study on a copy of the learned run: export, prune, export."""
    run_dir = tmp_path_factory.mktemp("compress") / "e1"
    shutil.copytree(learned.run_dir, run_dir, ignore=shutil.ignore_patterns("backup", "checkpoints"))
    table = export.compress_run(run_dir, data="synthetic", sparsity=0.6, prune_epochs=1,
                                limit=300, representative=64, latency_runs=5, verbose=0)
    return run_dir, table


def test_compress_run_measures_dense_and_pruned_forms(compressed):
    run_dir, table = compressed
    assert list(table["model"].unique()) == ["dense", "pruned60"]
    assert list(table["form"]) == 2 * ["keras (reference)", *export.FORMS]
    assert table.loc[table["model"] == "pruned60", "sparsity"].tolist() == pytest.approx(5 * [0.6], abs=0.01)
    gz = table[table["form"] == "int8"].set_index("model")["gzip bytes"]
    assert gz["pruned60"] < 0.8 * gz["dense"]  # zeros compress
    reference = table.loc[0, "top-1"]
    np.testing.assert_allclose(table["drop"], reference - table["top-1"], atol=0.01)
    assert (run_dir / "pruned60" / "litert" / "int8.tflite").exists()


def test_compress_run_reuses_what_exists(compressed):
    run_dir, _ = compressed
    files = [run_dir / "litert" / "litert.csv", run_dir / "pruned60" / "model.keras",
             run_dir / "pruned60" / "litert" / "litert.csv"]
    before = [f.stat().st_mtime_ns for f in files]
    export.compress_run(run_dir, data="synthetic", sparsity=0.6)  # would take minutes if redone
    assert [f.stat().st_mtime_ns for f in files] == before


def test_bars_are_checked_against_their_limits():
    table = pd.DataFrame({
        "model": ["dense", "dense", "pruned60", "pruned80"],
        "form": ["keras (reference)", "int8", "int8", "int8"],
        "bytes": [3_000_000, 849_999, 849_999, 849_999],
        "gzip bytes": [2_700_000, 760_000, 499_999, 300_000],
        "drop": [0.0, 1.0, 1.5, 1.51],
    })
    bars = export.check_bars(table).set_index("check")
    assert bars["met"].to_dict() == {
        "dense int8: bytes": True, "dense int8: top-1 drop (points)": True,
        "pruned60 int8: gzip bytes": True, "pruned60 int8: top-1 drop (points)": True,
        "pruned80 int8: gzip bytes": True, "pruned80 int8: top-1 drop (points)": False,
    }
    table.loc[1, "bytes"] = 850_000
    assert not export.check_bars(table).set_index("check").loc["dense int8: bytes", "met"]


def test_size_table_needs_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match="export it first"):
        export.size_table(tmp_path)


def test_size_plot_has_the_reference_lines(compressed, tmp_path):
    _, table = compressed
    fig = plot_size_vs_accuracy(table, "test", tmp_path / "small.png")
    ax = fig.axes[0]
    xs = sorted(line.get_xdata()[0] for line in ax.lines if len(line.get_xdata()) == 2)
    assert xs == sorted(export.REFERENCE_SIZES.values())
    assert ax.get_xscale() == "log" and (tmp_path / "small.png").stat().st_size > 0
