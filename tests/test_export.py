"""LiteRT export: every form round-trips, the interpreter agrees with Keras, results are kept apart."""

import json
import pathlib
import shutil

import keras
import numpy as np
import pytest

from squeeze_keras import data, export, runs
from squeeze_keras.__main__ import main


@pytest.fixture(scope="module")
def table(learned, tmp_path_factory):
    out = tmp_path_factory.mktemp("litert")
    return export.export_run(learned.run_dir, data="synthetic", out_dir=out, eval_limit=300,
                             representative=64, latency_runs=10), out


def copy_run(run_dir, dest) -> pathlib.Path:
    """A run folder's finished state (no resume state), copied to `dest`."""
    dest.mkdir(parents=True)
    for name in ("config.json", "metrics.json", "model.keras"):
        shutil.copy(pathlib.Path(run_dir) / name, dest / name)
    return dest


def test_every_form_is_written_and_smaller_where_it_should_be(table, learned):
    df, out = table
    assert list(df["form"]) == ["keras (reference)", *export.FORMS]
    assert {p.name for p in out.iterdir()} == (
        {f"{f}.tflite" for f in export.FORMS} | {"litert.csv", "source.json"})
    size = dict(zip(df["form"], df["bytes"]))
    params = 740_554
    assert 4 * params < size["float32"] < 4.2 * params
    assert 2 * params < size["float16"] < 2.2 * params
    assert params < size["dynamic_int8"] < 1.2 * params and params < size["int8"] < 1.25 * params
    assert (df["gzip bytes"] < df["bytes"]).all()
    assert (df["latency ms"].dropna() > 0).all()
    source = json.loads((out / "source.json").read_text())
    assert source["source_sha256"] == runs.model_fingerprint(learned.run_dir / "model.keras")
    assert source["eval_limit"] == 300 and source["test_images"] == 300 == df.attrs["test_images"]
    assert source["data_identity"] == {"source": "synthetic"} and df.attrs["out_dir"] == str(out)


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


def test_limit_is_the_seeded_random_subset_of_train_limit(table, learned):
    df, _ = table
    full = data.load("cifar10", "synthetic")
    rng = np.random.default_rng(0)
    rng.permutation(full.train_size)  # `train --limit` draws the train subset first
    index = np.sort(rng.permutation(full.test_size)[:300])
    assert not np.array_equal(index, np.arange(300))  # random, not the first 300
    limited = data.load("cifar10", "synthetic", limit=300)
    np.testing.assert_array_equal(limited.x_test, full.x_test[index])
    _, model = runs.load_trained_model(learned.run_dir)
    pred = model.predict(data.normalize(limited.x_test, "cifar"), verbose=0).argmax(1)
    reference = df.loc[df["form"] == "keras (reference)", "top-1"].item()
    assert reference == round(100 * float((pred == limited.y_test).mean()), 2)


@pytest.mark.parametrize("limit", [0, -5, 2.5, True, "300"])
def test_limit_must_be_a_positive_integer(learned, limit):
    with pytest.raises(ValueError, match=rf"eval_limit={limit!r}"):
        export.export_run(learned.run_dir, data="synthetic", eval_limit=limit)


def test_limited_export_never_replaces_the_full_table(learned, tmp_path):
    run_dir = copy_run(learned.run_dir, tmp_path / "e1")
    full = run_dir / "litert" / "litert.csv"
    full.parent.mkdir()
    full.write_text("form,bytes\nint8,1\n")  # a full-test-set table (legacy: no source.json)
    df = export.export_run(run_dir, data="synthetic", forms=("float32",), eval_limit=50,
                           latency_runs=2)
    assert full.read_text() == "form,bytes\nint8,1\n"
    assert (run_dir / "litert_limit50" / "litert.csv").exists() and df.attrs["test_images"] == 50
    with pytest.raises(FileExistsError, match="overwrite=True"):
        export.export_run(run_dir, data="synthetic", out_dir=run_dir / "litert", eval_limit=50)
    assert full.read_text() == "form,bytes\nint8,1\n"


def test_mixed_precision_model_is_converted_in_float32():
    with runs.dtype_policy("mixed_bfloat16"):
        model = keras.Sequential([
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(4, 3, activation="relu", name="conv"),
            keras.layers.GlobalAveragePooling2D(),
            keras.layers.Dense(3, name="logits"),
            keras.layers.Activation("softmax", dtype="float32"),
        ])
        model.compile("adam", "sparse_categorical_crossentropy")
        x = np.random.default_rng(0).normal(size=(32, 8, 8, 3)).astype(np.float32)
        model.fit(x, np.arange(32) % 3, epochs=1, verbose=0)
    assert model.layers[0].compute_dtype == "bfloat16"
    clone = export.as_float32(model)
    assert all(layer.compute_dtype == "float32" for layer in clone.layers)
    for w, w0 in zip(clone.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(w, w0)
    assert export.as_float32(clone) is clone
    for form in ("float32", "int8"):  # int8 used to fail: Flex ops needed on every Conv2D
        content = export.convert(model, form, x)
        scores = export.predict(content, x)
        np.testing.assert_allclose(scores, clone.predict(x, verbose=0), atol=0.05)


def test_interrupted_export_leaves_no_partial_file(learned, tmp_path, monkeypatch):
    run_dir = copy_run(learned.run_dir, tmp_path / "e1")
    out = run_dir / "litert"
    out.mkdir()
    before = {"float32.tflite": b"old model", "litert.csv": b"form,bytes\nfloat32,9\n"}
    for name, content in before.items():
        (out / name).write_bytes(content)
    (out / "source.json").write_text("{}")

    def half_then_fail(self, content):  # a disk that fills up halfway through a write
        with open(self, "wb") as f:
            f.write(content[:len(content) // 2])
        raise OSError("No space left on device")

    monkeypatch.setattr(pathlib.Path, "write_bytes", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        export.export_run(run_dir, data="synthetic", forms=("float32",), latency_runs=2)
    monkeypatch.undo()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # no .tmp left over
    assert not (out / "source.json").exists()  # the old table is no longer vouched for


def test_run_without_model_is_refused(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        export.export_run(tmp_path, data="synthetic")
    assert main(["export", str(tmp_path), "--data", "synthetic"]) == 2
    with pytest.raises(ValueError, match="form='int4'"):
        export.convert(None, "int4")
