"""LiteRT export of a run: converts its model in four forms and measures each with the interpreter.

Four forms, converted with TensorFlow's `tf.lite.TFLiteConverter` (TensorFlow
2.21 still ships the converter; the interpreter lives in the `ai-edge-litert`
package, `tf.lite.Interpreter` being deprecated in its favour):

- `float32`: no quantization.
- `float16`: weights stored as float16.
- `dynamic_int8`: dynamic-range quantization (int8 weights, float activations).
- `int8`: full-integer quantization, uint8 input and output, calibrated on
  images of the train split.

Each form is measured for bytes on disk, bytes after gzip (a stand-in for the
Huffman coding stage of Deep Compression), top-1 on the test split computed by
the LiteRT interpreter itself, and the median batch-1 CPU latency.

An export folder belongs to the model it was made from: beside `litert.csv`,
`source.json` records the SHA-256 of that `model.keras` (`source_sha256`),
the data it was measured on (`data`, `data_identity`) and how many test
images were evaluated, so that stale tables can be told apart
(`squeeze_keras.smallmodels`). A table of a `limit`ed test subset goes to
its own folder (`litert_limit<N>`) and never replaces a full one; a table of
other data than the run was trained on never goes inside the run folder
(`check_data`).
"""

from __future__ import annotations

import contextlib
import gzip
import io
import pathlib
import shutil
import statistics
import time
import warnings

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from squeeze_keras import data as data_lib
from squeeze_keras import fileio, runs

try:
    from ai_edge_litert.interpreter import Interpreter
except ImportError:  # fall back on TensorFlow's copy, deprecated in favour of LiteRT
    Interpreter = tf.lite.Interpreter

FORMS = ("float32", "float16", "dynamic_int8", "int8")
SOURCE_FILE = "source.json"
TABLE_FILE = "litert.csv"


def _interpreter(model_content: bytes):
    return Interpreter(model_content=model_content, num_threads=1)


def _is_float32(model) -> bool:
    return all(layer.dtype_policy.name == "float32" for layer in [model, *model.layers])


def as_float32(model):
    """`model` itself if every layer computes in float32, else a float32 clone with its weights.

    A model built under a mixed policy (`mixed_bfloat16`, `mixed_float16`)
    casts to half precision inside every layer, which the LiteRT builtin ops
    cannot express (the converter asks for Flex ops on every Conv2D); its
    variables are float32 already, so a float32 clone holds the same weights.
    """
    if _is_float32(model):
        return model

    def float32_layer(layer):
        return layer.__class__.from_config({**layer.get_config(), "dtype": "float32"})

    with runs.dtype_policy("float32"):
        clone = keras.models.clone_model(model, clone_function=float32_layer)
    clone.set_weights([keras.ops.convert_to_numpy(w) for w in model.get_weights()])
    return clone


def convert(model, form: str, representative_images=None) -> bytes:
    """Converts a Keras model to a LiteRT flatbuffer in one of `FORMS`.

    A model built under a mixed-precision policy is converted as its float32
    clone (`as_float32`).

    Args:
        model: a Keras model taking normalised float images.
        form: one of `FORMS`.
        representative_images: normalised float images that calibrate the
            activations of `"int8"` (needed for it only). Defaults to `None`.

    Returns:
        The `.tflite` flatbuffer.
    """
    if form not in FORMS:
        raise ValueError(f"`form` must be one of {FORMS}. Received: form={form!r}")
    if form == "int8" and representative_images is None:
        raise ValueError("`representative_images` are needed for form='int8'. "
                         "Received: representative_images=None")
    converter = tf.lite.TFLiteConverter.from_keras_model(as_float32(model))
    if form == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif form == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif form == "int8":
        images = np.asarray(representative_images, np.float32)

        def representative():
            for image in images:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    # Keep the converter's chatter (the temporary SavedModel's path and signature, asset
    # logs, a calibration warning) out of notebooks and logs.
    tf_logger = tf.get_logger()
    level = tf_logger.level
    tf_logger.setLevel("ERROR")
    try:
        with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            return converter.convert()
    finally:
        tf_logger.setLevel(level)


def predict(model_content: bytes, images: np.ndarray, batch_size: int = 250) -> np.ndarray:
    """Class scores of normalised float images, computed by the LiteRT interpreter."""
    interpreter = _interpreter(model_content)
    inp = interpreter.get_input_details()[0]
    interpreter.resize_tensor_input(inp["index"], [batch_size, *images.shape[1:]])
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    out = interpreter.get_output_details()[0]
    scores = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        n = len(batch)
        if n < batch_size:
            batch = np.concatenate([batch, np.zeros((batch_size - n, *batch.shape[1:]), batch.dtype)])
        if inp["dtype"] != np.float32:  # quantized input: float -> uint8/int8
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            batch = np.clip(np.round(batch / scale + zero), info.min, info.max)
        interpreter.set_tensor(inp["index"], batch.astype(inp["dtype"]))
        interpreter.invoke()
        result = interpreter.get_tensor(out["index"])[:n]
        if out["dtype"] != np.float32:
            scale, zero = out["quantization"]
            result = (result.astype(np.float32) - zero) * scale
        scores.append(result)
    return np.concatenate(scores)


def latency_ms(model_content: bytes, image: np.ndarray, runs: int = 100) -> float:
    """Median wall time of one batch-1 inference on one CPU thread, in milliseconds."""
    interpreter = _interpreter(model_content)
    interpreter.allocate_tensors()
    inp = interpreter.get_input_details()[0]
    x = np.zeros(inp["shape"], inp["dtype"])
    if inp["dtype"] == np.float32:
        x[...] = image
    times = []
    for i in range(runs + 5):
        interpreter.set_tensor(inp["index"], x)
        start = time.perf_counter()
        interpreter.invoke()
        if i >= 5:  # warm-up
            times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)




def _check_positive_int(name, value, optional=False):
    if optional and value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        kind = "a positive integer or None" if optional else "a positive integer"
        raise ValueError(f"`{name}` must be {kind}. Received: {name}={value!r}")


def litert_dir(folder, eval_limit=None) -> pathlib.Path:
    """Where `export_run` writes by default: `folder/litert`, or `folder/litert_limit<N>`."""
    folder = pathlib.Path(folder)
    return folder / ("litert" if eval_limit is None else f"litert_limit{eval_limit}")


def read_source(out_dir) -> dict | None:
    """The `source.json` of an export (or pruned) folder, or `None` if it has none."""
    path = pathlib.Path(out_dir) / SOURCE_FILE
    return fileio.read_json(path) if path.exists() else None


def recorded_data(out_dir):
    """The data a derived folder records it was measured on: its `data_identity`, or for
    older records its `data` label; `None` if it records none."""
    source = read_source(out_dir)
    if not isinstance(source, dict):
        return None
    return source.get("data_identity", source.get("data"))


def check_data(run_dir, data, data_dir, out_dir, what="an export") -> dict:
    """The identity of `data`, after checking that a result on it may go to `out_dir`.

    A result measured on other data than `run_dir` was trained on (its
    `config.json`) may not go inside the run folder, where it would stand in
    for the run's own results (`litert/`, `pruned60/`): it needs an
    `out_dir` outside it. On the run's own data, a hold-out run's identity
    keeps its `holdout`: the result is measured on the same held-out images
    as the run (`holdout_arguments`); other data are measured on their test
    split.

    Raises:
        ValueError: other data, with an `out_dir` inside the run folder.
    """
    identity = runs.data_identity(data, data_dir)
    trained_on = runs.stored_data(run_dir)
    held = trained_on.get("holdout") if isinstance(trained_on, dict) else None
    if held is not None:
        source = {key: value for key, value in trained_on.items() if key != "holdout"}
        if runs.same_data(source, identity):
            return {**identity, "holdout": held}
    if trained_on is None or runs.same_data(trained_on, identity):
        return identity
    run_dir = pathlib.Path(run_dir).resolve()
    out = pathlib.Path(out_dir).resolve()
    if out == run_dir or run_dir in out.parents:
        raise ValueError(
            f"{pathlib.Path(run_dir).name} was trained on {runs.describe_data(trained_on)} but "
            f"{what} was asked on {runs.describe_data(identity)}; its results would replace "
            f"the run's own in {out_dir}. Pass the run's data (CLI: "
            f"{runs.data_flag(trained_on) or '--data'}), or write the other data's results "
            "outside the run folder (CLI: --out).")
    return identity


def holdout_arguments(identity: dict) -> dict:
    """`data.load`'s `holdout` and `holdout_seed` for an identity from `check_data`."""
    held = identity.get("holdout") if isinstance(identity, dict) else None
    if held is None:
        return {}
    return {"holdout": held.get("per_class", held.get("fraction")), "holdout_seed": held["seed"]}


def check_split(splits, identity: dict) -> None:
    """Raises ValueError if a hold-out run's data, loaded again, hold out other images."""
    held = identity.get("holdout") if isinstance(identity, dict) else None
    if held is not None and splits.holdout != held:
        raise ValueError(
            f"The data's hold-out split is not the run's: config.json records {held}, the "
            f"data give {splits.holdout}. Pass the data the run was trained on.")


def holds_full_table(out_dir) -> bool:
    """Whether `out_dir` holds a `litert.csv` of the whole test split (legacy tables count)."""
    out_dir = pathlib.Path(out_dir)
    if not (out_dir / TABLE_FILE).exists():
        return False
    source = read_source(out_dir)
    return source is None or source.get("eval_limit") is None


def export_run(run_dir, *, data="tfds", out_dir=None, forms=FORMS, representative=256,
               eval_limit=None, latency_runs=100, data_dir=None,
               overwrite=False) -> pd.DataFrame:
    """Exports a run folder's `model.keras` in every form and measures each.

    Writes one `.tflite` per form, `litert.csv` (the returned table) and
    `source.json` (the SHA-256 of the exported `model.keras`, the data and
    the number of test images), each atomically.

    Args:
        run_dir: a run folder written by `run_experiment` (or a pruned one).
        data: the source the test split is read from (as `run_experiment`).
            Defaults to `"tfds"`.
        out_dir: where the files go. Defaults to `litert_dir(run_dir, eval_limit)`:
            `run_dir/litert`, or `run_dir/litert_limit<N>` with a limit.
        forms: which of `FORMS` to export. Defaults to all.
        representative: train images (a seeded random subset) that calibrate
            `int8`. Defaults to `256`.
        eval_limit: evaluate on a seeded random subset of this many test
            images, the one `train --limit` uses, or `None` for all.
            Defaults to `None`.
        latency_runs: timed batch-1 inferences per form. Defaults to `100`.
        data_dir: tfds data folder. Defaults to tfds' own.
        overwrite: let a limited export replace the full-test-set table of
            an explicit `out_dir`. Defaults to `False`.

    Returns:
        A DataFrame: form, bytes, gzip bytes, top-1 (LiteRT), agreement with
        the Keras model's predictions, batch-1 latency; `attrs["test_images"]`.

    Raises:
        FileNotFoundError: `run_dir` holds no `model.keras`.
        FileExistsError: a limited export into an `out_dir` that holds a
            full-test-set table, without `overwrite`.
        ValueError: `data` is not what the run was trained on and `out_dir`
            is inside the run folder (`check_data`).
    """
    _check_positive_int("eval_limit", eval_limit, optional=True)
    _check_positive_int("representative", representative)
    _check_positive_int("latency_runs", latency_runs)
    for form in forms:
        if form not in FORMS:
            raise ValueError(f"`forms` must be a subset of {FORMS}. Received: forms={forms!r}")
    run_dir = pathlib.Path(run_dir)
    out_dir = litert_dir(run_dir, eval_limit) if out_dir is None else pathlib.Path(out_dir)
    identity = check_data(run_dir, data, data_dir, out_dir)
    if eval_limit is not None and not overwrite and holds_full_table(out_dir):
        raise FileExistsError(
            f"{out_dir} holds a table of the full test split; an export with "
            f"eval_limit={eval_limit} would replace it. Leave out_dir to its default "
            f"({litert_dir(run_dir, eval_limit)}), or pass overwrite=True "
            "(CLI: --overwrite).")
    model_file = run_dir / "model.keras"
    config, model = runs.load_trained_model(run_dir)
    fingerprint = runs.model_fingerprint(model_file)
    splits = data_lib.load(config.dataset, data, preprocessing=config.preprocessing,
                           batch_size=250, seed=0, limit=eval_limit, data_dir=data_dir,
                           **holdout_arguments(identity))
    check_split(splits, identity)
    x_test = data_lib.normalize(splits.x_test, config.preprocessing)
    y_test = np.asarray(splits.y_test)
    calibration = np.sort(np.random.default_rng(0).permutation(len(splits.x_train))[:representative])
    x_rep = data_lib.normalize(splits.x_train[calibration], config.preprocessing)
    keras_pred = model.predict(x_test, batch_size=250, verbose=0).argmax(1)

    # The old record goes first: a table never sits beside another model's fingerprint.
    (out_dir / SOURCE_FILE).unlink(missing_ok=True)
    model_bytes = model_file.read_bytes()
    rows = [{
        "form": "keras (reference)", "bytes": len(model_bytes),
        "gzip bytes": len(gzip.compress(model_bytes, 9)),
        "top-1": round(100 * float((keras_pred == y_test).mean()), 2),
        "agreement with keras": 100.0, "latency ms": None,
    }]
    for form in forms:
        content = convert(model, form, x_rep)
        fileio.write_bytes(out_dir / f"{form}.tflite", content)
        pred = predict(content, x_test).argmax(1)
        rows.append({
            "form": form, "bytes": len(content), "gzip bytes": len(gzip.compress(content, 9)),
            "top-1": round(100 * float((pred == y_test).mean()), 2),
            "agreement with keras": round(100 * float((pred == keras_pred).mean()), 2),
            "latency ms": round(latency_ms(content, x_test[0], latency_runs), 3),
        })
    table = pd.DataFrame(rows)
    table.attrs["test_images"] = len(y_test)
    table.attrs["out_dir"] = str(out_dir)
    fileio.write_text(out_dir / TABLE_FILE, table.to_csv(index=False))
    fileio.write_json(out_dir / SOURCE_FILE, {
        "model": "model.keras", "source_sha256": fingerprint,
        "data": runs.data_label(data), "data_identity": identity,
        "eval_limit": eval_limit, "test_images": len(y_test),
    })
    return table


def remove_exports(folder) -> None:
    """Removes every export folder (`litert`, `litert_limit<N>`) of a run or pruned folder."""
    for path in pathlib.Path(folder).glob("litert*"):
        if path.is_dir():
            shutil.rmtree(path)
