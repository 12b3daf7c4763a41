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

import contextlib
import gzip
import io
import json
import pathlib
import statistics
import time
import warnings

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


# Reference sizes (ImageNet models, from the SqueezeNet paper's Table 2), for the size axis only.
REFERENCE_SIZES = {
    "AlexNet, 240 MB": 240e6,
    "SqueezeNet, 4.8 MB": 4.8e6,
    "SqueezeNet + Deep Compression, 0.47 MB": 0.47e6,
}
# The bars of the small-models study (bytes; points of top-1 against the float model).
INT8_MAX_BYTES = 850_000
INT8_MAX_DROP = 1.0
PRUNED_MAX_GZIP_BYTES = 500_000
PRUNED_MAX_DROP = 1.5


def size_table(run_dir) -> pd.DataFrame:
    """Every exported form of a run and of its pruned variants (`RUN/pruned*`), one row each.

    Reads the `litert/litert.csv` tables that `export_run` wrote. Adds `model`
    (`dense` or the pruned folder's name), `sparsity` and `drop` (points of
    top-1 lost against the dense Keras model).

    Raises:
        FileNotFoundError: the run has not been exported yet.
    """
    run_dir = pathlib.Path(run_dir)
    dense = run_dir / "litert" / "litert.csv"
    if not dense.exists():
        raise FileNotFoundError(
            f"{run_dir} has no litert/litert.csv: export it first "
            f"(`python -m squeeze_keras export {run_dir}`).")
    frames = [pd.read_csv(dense).assign(model="dense", sparsity=0.0)]
    for pruned in sorted(run_dir.glob("pruned*/litert/litert.csv")):
        metrics = json.loads((pruned.parent.parent / "metrics.json").read_text())
        frames.append(pd.read_csv(pruned).assign(model=pruned.parent.parent.name,
                                                 sparsity=float(metrics["sparsity"])))
    table = pd.concat(frames, ignore_index=True)
    reference = float(table.loc[(table["model"] == "dense")
                                & (table["form"] == "keras (reference)"), "top-1"].iloc[0])
    table["drop"] = (reference - table["top-1"]).round(2)
    return table[["model", "sparsity", "form", "bytes", "gzip bytes", "top-1", "drop",
                  "agreement with keras", "latency ms"]]


def check_bars(table: pd.DataFrame) -> pd.DataFrame:
    """The study's bars against a `size_table`: one row per check, with `met` True/False.

    Dense full-integer int8: under 850,000 bytes and within 1 point of the
    float model. Each pruned variant's int8 model: gzip'ed under 500,000 bytes
    (the paper's 0.47 MB) and within 1.5 points of the dense float model.
    """
    rows = []

    def add(what, measured, limit, met):
        rows.append({"check": what, "measured": measured, "limit": limit, "met": bool(met)})

    int8 = table[table["form"] == "int8"].set_index("model")
    if "dense" in int8.index:
        dense = int8.loc["dense"]
        add("dense int8: bytes", int(dense["bytes"]), INT8_MAX_BYTES,
            dense["bytes"] < INT8_MAX_BYTES)
        add("dense int8: top-1 drop (points)", float(dense["drop"]), INT8_MAX_DROP,
            dense["drop"] <= INT8_MAX_DROP)
    for model, row in int8.drop(index="dense", errors="ignore").iterrows():
        add(f"{model} int8: gzip bytes", int(row["gzip bytes"]), PRUNED_MAX_GZIP_BYTES,
            row["gzip bytes"] < PRUNED_MAX_GZIP_BYTES)
        add(f"{model} int8: top-1 drop (points)", float(row["drop"]), PRUNED_MAX_DROP,
            row["drop"] <= PRUNED_MAX_DROP)
    return pd.DataFrame(rows, columns=["check", "measured", "limit", "met"])


def compress_run(run_dir, *, data="tfds", sparsity=0.6, prune_epochs=6, data_dir=None,
                 limit=None, representative=256, latency_runs=100, verbose=2) -> pd.DataFrame:
    """The whole small-models study of one run: export, prune, export the pruned model.

    Each step whose output already exists in the run folder is reused, not
    redone (delete `RUN/litert` or `RUN/pruned<percent>` to redo it).
    `limit` caps the test images evaluated and the examples per split of the
    fine-tuning (smoke runs). Returns `size_table(run_dir)`.
    """
    from squeeze_keras.prune import prune_run, pruned_dir

    run_dir = pathlib.Path(run_dir)
    pruned = pruned_dir(run_dir, sparsity)
    options = dict(data=data, data_dir=data_dir, eval_limit=limit,
                   representative=representative, latency_runs=latency_runs)
    if not (run_dir / "litert" / "litert.csv").exists():
        export_run(run_dir, **options)
    if not (pruned / "metrics.json").exists():
        prune_run(run_dir, data=data, sparsity=sparsity, epochs=prune_epochs, out_dir=pruned,
                  data_dir=data_dir, limit=limit, verbose=verbose)
    if not (pruned / "litert" / "litert.csv").exists():
        export_run(pruned, **options)
    return size_table(run_dir)
