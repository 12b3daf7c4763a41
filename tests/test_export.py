"""LiteRT export: every form round-trips and the interpreter agrees with Keras."""

import numpy as np
import pytest

from squeeze_keras import export
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
