"""Small deployable models: LiteRT (TFLite) export of a run, measured by the LiteRT interpreter.

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
"""

from __future__ import annotations

import gzip
import pathlib
import statistics
import time

import numpy as np
import pandas as pd
import tensorflow as tf

FORMS = ("float32", "float16", "dynamic_int8", "int8")


def _interpreter(model_content: bytes):
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:  # fall back on TensorFlow's copy, deprecated in favour of LiteRT
        Interpreter = tf.lite.Interpreter
    return Interpreter(model_content=model_content, num_threads=1)


def convert(model, form: str, representative_images=None) -> bytes:
    """Converts a Keras model to a LiteRT flatbuffer in one of `FORMS`."""
    if form not in FORMS:
        raise ValueError(f"`form` must be one of {FORMS}. Received: form={form!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if form == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif form == "dynamic_int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
    elif form == "int8":
        if representative_images is None:
            raise ValueError("Full-integer quantization needs `representative_images`.")
        images = np.asarray(representative_images, np.float32)

        def representative():
            for image in images:
                yield [image[None]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.uint8
        converter.inference_output_type = tf.uint8
    return converter.convert()


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


def _split_arrays(ds, limit=None):
    xs, ys = [], []
    for x, y in ds:
        xs.append(x.numpy())
        ys.append(y.numpy())
        if limit and sum(map(len, xs)) >= limit:
            break
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x[:limit], y[:limit]) if limit else (x, y)


def export_run(run_dir, *, data="tfds", out_dir=None, forms=FORMS, representative=256,
               eval_limit=None, latency_runs=100, data_dir=None) -> pd.DataFrame:
    """Exports a run folder's `model.keras` in every form and measures each.

    Args:
        run_dir: a run folder written by `run_experiment`.
        data: the source the test split is read from (as `run_experiment`).
        out_dir: where the `.tflite` files and `litert.csv` go.
            Defaults to `run_dir/litert`.
        forms: which of `FORMS` to export. Defaults to all.
        representative: train images used to calibrate `int8`. Defaults to `256`.
        eval_limit: evaluate on only this many test images. Defaults to all.
        latency_runs: timed batch-1 inferences per form. Defaults to `100`.
        data_dir: tfds data folder.

    Returns:
        A DataFrame: form, bytes, gzip bytes, top-1 (LiteRT), agreement with
        the Keras model's predictions, batch-1 latency.
    """
    from squeeze_keras import data as data_lib
    from squeeze_keras.train import load_trained_model

    run_dir = pathlib.Path(run_dir)
    model_file = run_dir / "model.keras"
    config, preprocessing, model = load_trained_model(run_dir, "export")
    splits = data_lib.load(config.dataset, data, preprocessing=preprocessing,
                           batch_size=250, seed=0, data_dir=data_dir)
    x_test, y_test = _split_arrays(splits.test, eval_limit)
    x_rep, _ = _split_arrays(splits.train, representative)
    keras_pred = model.predict(x_test, batch_size=250, verbose=0).argmax(1)
    out_dir = pathlib.Path(out_dir) if out_dir else run_dir / "litert"
    out_dir.mkdir(parents=True, exist_ok=True)
    rows = [{
        "form": "keras (reference)", "bytes": model_file.stat().st_size,
        "gzip bytes": len(gzip.compress(model_file.read_bytes(), 9)),
        "top-1": round(100 * float((keras_pred == y_test).mean()), 2),
        "agreement with keras": 100.0, "latency ms": None,
    }]
    for form in forms:
        content = convert(model, form, x_rep)
        (out_dir / f"{form}.tflite").write_bytes(content)
        pred = predict(content, x_test).argmax(1)
        rows.append({
            "form": form, "bytes": len(content), "gzip bytes": len(gzip.compress(content, 9)),
            "top-1": round(100 * float((pred == y_test).mean()), 2),
            "agreement with keras": round(100 * float((pred == keras_pred).mean()), 2),
            "latency ms": round(latency_ms(content, x_test[0], latency_runs), 3),
        })
    table = pd.DataFrame(rows)
    table.attrs["test_images"] = len(y_test)
    table.to_csv(out_dir / "litert.csv", index=False)
    return table
