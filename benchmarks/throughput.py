"""Training/inference throughput of the package's training path, beside torchvision's SqueezeNet.

For each experiment: steady-state training images/s through the package's own
pipeline (`data.make_pipeline`, the experiment's preprocessing and
augmentation) and `compile_model` (callbacks off), the same with batches that
are already tensors (the pipeline's cost is the gap), inference images/s, and,
when PyTorch is installed, torchvision's SqueezeNet 1.0 (its `Fire` module,
the same layer list) with the same changes trained on the same batch shape,
in a worker process (`torch_worker.py`). Each side (Keras through the pipeline, Keras
with tensor input, Keras inference, PyTorch) first warms up: windows of the timed length
until two consecutive ones agree within 5 % (`--warmup-tolerance`), so that neither is
measured cold. Then Keras and PyTorch windows are interleaved so machine drift hits both;
each figure is the median of the timed windows.

    python benchmarks/throughput.py --experiments baseline e1 e2 e3 e4 --out benchmarks/results

Not part of the test suite. PyTorch is optional: `pip install torch torchvision`, or in
another environment named by `--torch-python` (the worker runs in its own process anyway).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import platform
import statistics
import time

import pandas as pd

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")  # as the command line sets it (squeeze_keras/__main__.py)

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

from squeeze_keras import data, experiments  # noqa: E402
from squeeze_keras.devices import hardware, select_precision  # noqa: E402
from squeeze_keras.model import forward_gflops  # noqa: E402
from squeeze_keras.train import compile_model  # noqa: E402


def warm_up(measure, steps, tolerance=0.05, max_windows=10):
    """Runs `measure(steps)` (images/s) until two consecutive windows agree within `tolerance`.

    Returns the number of windows run and whether two agreed before `max_windows`.
    """
    previous = measure(steps)
    for windows in range(2, max_windows + 1):
        current = measure(steps)
        if abs(current - previous) <= tolerance * max(current, previous):
            return windows, True
        previous = current
    return max_windows, False


class StepTimer(keras.callbacks.Callback):
    """Wall time at the end of every training step (the loss is fetched, so the step is done)."""

    def on_train_begin(self, logs=None):
        self.times = []

    def on_train_batch_end(self, batch, logs=None):
        float(logs["loss"])
        self.times.append(time.perf_counter())


class KerasBench:
    def __init__(self, config, batch_size, precision, images=4096, jit_compile=False):
        (x, y), _ = data.synthetic_arrays(config.classes, images, 1, seed=0)
        keras.mixed_precision.set_global_policy(precision)
        self.model = compile_model(config.build_model(), config, images // batch_size, 20)
        # Keras leaves XLA off on CPU-only machines ("auto"); `jit_compile=True` asks for it.
        self.model.jit_compile = jit_compile
        self.batch_size = batch_size
        self.pipeline = data.make_pipeline(x, y, preprocessing=config.preprocessing, training=True,
                                           batch_size=batch_size).repeat()
        batch = next(iter(self.pipeline))  # (images, labels[, sample weights])
        self.tensors = tf.data.Dataset.from_tensors(batch).repeat()
        self.xb = batch[0]

    def train(self, steps, tensors=False):
        """Steady-state images/s: from the end of the first step to the end of the last, so
        `fit`'s own start-up (iterator, callbacks; amortised over 782 steps in a real
        epoch) is not counted."""
        ds = self.tensors if tensors else self.pipeline
        timer = StepTimer()
        self.model.fit(ds, epochs=1, steps_per_epoch=steps + 1, verbose=0, shuffle=False,
                       callbacks=[timer])
        return steps * self.batch_size / (timer.times[-1] - timer.times[0])

    def infer(self, steps):
        start = time.perf_counter()
        for _ in range(steps):
            self.model.predict_on_batch(self.xb)
        return steps * self.batch_size / (time.perf_counter() - start)


def torch_precision(policy: str) -> str:
    """The PyTorch peer of a Keras policy: bfloat16 autocast for `mixed_bfloat16`, else float32."""
    return "bfloat16" if policy == "mixed_bfloat16" else "float32"


class TorchBench:
    """Drives benchmarks/torch_worker.py (PyTorch must not share TensorFlow's process)."""

    def __init__(self, config, batch_size, python=None, precision="float32"):
        import dataclasses
        import json
        import subprocess
        import sys

        self.json = json
        self.proc = subprocess.Popen(
            [python or sys.executable, str(pathlib.Path(__file__).with_name("torch_worker.py"))],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        spec = {"model": dataclasses.asdict(config.model), "classes": config.classes,
                "batch": batch_size, "lr": config.protocol.learning_rate, "precision": precision}
        spec["model"]["fires"] = [[n, [f["squeeze"], f["expand1x1"], f["expand3x3"]]]
                                  for n, f in spec["model"]["fires"]]
        self.proc.stdin.write(json.dumps(spec) + "\n")
        self.proc.stdin.flush()
        info = json.loads(self.proc.stdout.readline())
        self.params = info["params"]
        self.version = f"PyTorch {info['torch']} (torchvision {info['torchvision']})"

    def train(self, steps):
        self.proc.stdin.write(f"train {steps}\n")
        self.proc.stdin.flush()
        return float(self.proc.stdout.readline())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait()


def bench(name, batch_size, steps, windows, precisions, torch_python, warmup, xla=False):
    """One experiment's rows, one per precision; all sides of all precisions interleaved.

    `torch_python`: a Python for the PyTorch worker, `""` for this one, or `None` (no
    PyTorch side). `xla`: also time the Keras model compiled with XLA (`jit_compile=True`).
    """
    config = experiments.get(name)
    sides = {}  # (precision, side) -> images/s of `steps` steps
    torch_benches, keras_benches = [], {}
    for precision in precisions:
        kb = KerasBench(config, batch_size, precision)
        keras_benches[precision] = kb
        sides[precision, "keras"] = kb.train
        sides[precision, "tensor input"] = lambda n, kb=kb: kb.train(n, tensors=True)
        if xla:
            xb = KerasBench(config, batch_size, precision, jit_compile=True)
            sides[precision, "keras XLA"] = xb.train
        if torch_python is not None:
            tb = TorchBench(config, batch_size, torch_python or None, torch_precision(precision))
            assert tb.params == kb.model.count_params(), (tb.params, kb.model.count_params())
            torch_benches.append(tb)
            sides[precision, "torch"] = tb.train
    keras.mixed_precision.set_global_policy("float32")
    # Warm-up: tracing, first allocations, kernel choice, caches; each side until steady.
    warmed = {key: warm_up(measure, steps, *warmup) for key, measure in sides.items()}
    for key in keras_benches:
        warmed[key, "infer"] = warm_up(keras_benches[key].infer, steps, *warmup)
    for (precision, side), (count, agreed) in warmed.items():
        if not agreed:
            print(f"warning: {name} {precision} {side}: no two consecutive warm-up windows "
                  f"agreed within {warmup[0]:.0%} in {count}; timing anyway", flush=True)
    timed = {key: [] for key in sides}
    for _ in range(windows):  # interleaved windows, every side of every precision
        for key, measure in sides.items():
            timed[key].append(measure(steps))
    torch_version = None
    for tb in torch_benches:
        tb.close()
        torch_version = tb.version
    rows = []
    for precision, kb in keras_benches.items():
        infer = statistics.median(kb.infer(steps) for _ in range(windows))
        gflops = forward_gflops(kb.model)
        ips = statistics.median(timed[precision, "keras"])
        tensor_ips = statistics.median(timed[precision, "tensor input"])
        row = {
            "experiment": name, "device": hardware(), "precision": precision, "batch": batch_size,
            "train img/s": round(ips, 1),
            "train img/s range": f"{min(timed[precision, 'keras']):.0f}-"
                                 f"{max(timed[precision, 'keras']):.0f}",
            "train img/s (tensor input)": round(tensor_ips, 1),
            "pipeline gap %": round(100 * (1 - ips / tensor_ips), 1),
            "infer img/s": round(infer, 1),
            "s per 20-epoch run": round(20 * 50_000 / ips),
            "fwd GFLOP/img": round(gflops, 3),
            "train GFLOP/s": round(3 * gflops * ips, 1),  # forward + backward ~ 3x forward
        }
        if xla:
            row["train img/s (XLA)"] = round(statistics.median(timed[precision, "keras XLA"]), 1)
        if (precision, "torch") in timed:
            row["torch precision"] = ("bf16 autocast" if torch_precision(precision) == "bfloat16"
                                      else "float32")
            row["torch train img/s"] = round(statistics.median(timed[precision, "torch"]), 1)
            row["keras/torch"] = round(ips / row["torch train img/s"], 2)
        # Warm-up windows per side, "*" where no two agreed within the tolerance.
        row["warm-up windows"] = " ".join(
            f"{side} {count}{'' if agreed else '*'}"
            for (p, side), (count, agreed) in warmed.items() if p == precision)
        rows.append(row)
    return rows, torch_version


def hardware_limit(repeats=5):
    """GFLOP/s of plain TensorFlow ops in float32 and bfloat16, the ceiling for training.

    A large matmul (near the matrix units' peak) and the two forward convolutions of
    E4's Fire4 at 33x33 (expand3x3 and expand1x1: 32 -> 128 channels, batch 64), its
    costliest layer, each through oneDNN as a `tf.function`; the best of `repeats`
    timings after one warm-up call.
    """
    cases = {
        "matmul 2048x2048x2048": (lambda dtype: (tf.random.normal((2048, 2048), dtype=dtype),
                                                 tf.random.normal((2048, 2048), dtype=dtype)),
                                  lambda a, b: tf.linalg.matmul(a, b), 2 * 2048 ** 3),
        "conv 3x3 64x33x33x32 -> 128": (
            lambda dtype: (tf.random.normal((64, 33, 33, 32), dtype=dtype),
                           tf.random.normal((3, 3, 32, 128), dtype=dtype)),
            lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"), 2 * 64 * 33 * 33 * 128 * 9 * 32),
        "conv 1x1 64x33x33x32 -> 128": (
            lambda dtype: (tf.random.normal((64, 33, 33, 32), dtype=dtype),
                           tf.random.normal((1, 1, 32, 128), dtype=dtype)),
            lambda x, w: tf.nn.conv2d(x, w, 1, "SAME"), 2 * 64 * 33 * 33 * 128 * 32),
    }
    rows = []
    for label, (make, op, flops) in cases.items():
        row = {"op": label}
        for dtype in (tf.float32, tf.bfloat16):
            args = make(dtype)
            fn = tf.function(op)
            fn(*args).numpy()
            best = float("inf")
            for _ in range(repeats):
                start = time.perf_counter()
                fn(*args).numpy()
                best = min(best, time.perf_counter() - start)
            row[f"{dtype.name} GFLOP/s"] = round(flops / best / 1e9, 1)
        rows.append(row)
    return pd.DataFrame(rows)


def markdown(df) -> str:
    lines = ["| " + " | ".join(df.columns) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(str(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiments", nargs="*", default=["baseline", "e1", "e2", "e3", "e4"])
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="training steps per timed window")
    parser.add_argument("--windows", type=int, default=5)
    parser.add_argument("--precision", nargs="+", default=["auto"],
                        help="one or more of auto, float32, mixed_bfloat16, mixed_float16: "
                             "every precision's sides are interleaved")
    parser.add_argument("--xla", action="store_true",
                        help="also time the Keras model compiled with XLA (jit_compile=True)")
    parser.add_argument("--limit", action="store_true",
                        help="also measure plain float32/bfloat16 matmul and convolution GFLOP/s")
    parser.add_argument("--warmup-tolerance", type=float, default=0.05,
                        help="warm up until two consecutive windows differ by at most this")
    parser.add_argument("--max-warmup-windows", type=int, default=10)
    parser.add_argument("--no-torch", action="store_true")
    parser.add_argument("--torch-python", help="a Python with torch and torchvision for the "
                        "worker. Defaults to this one, if it has torch")
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("benchmarks/results"))
    args = parser.parse_args()
    import importlib.util

    torch_python = None  # no PyTorch side
    if not args.no_torch and args.torch_python:
        torch_python = args.torch_python
    elif not args.no_torch and importlib.util.find_spec("torch") is not None:
        torch_python = ""  # this Python
    precisions = list(dict.fromkeys(select_precision(p) for p in args.precision))
    rows, torch_version = [], None
    for name in args.experiments:
        new, torch_version = bench(name, args.batch_size, args.steps, args.windows, precisions,
                                   torch_python, (args.warmup_tolerance, args.max_warmup_windows),
                                   xla=args.xla)
        rows += new
        for row in new:
            print(row, flush=True)
    df = pd.DataFrame(rows)
    args.out.mkdir(parents=True, exist_ok=True)
    df.to_csv(args.out / "throughput.csv", index=False)
    versions = (f"TensorFlow {tf.__version__} (oneDNN "
                f"{'on' if os.environ['TF_ENABLE_ONEDNN_OPTS'] == '1' else 'off'}), "
                f"Keras {keras.__version__}, Python {platform.python_version()}")
    if torch_version:
        versions += f", {torch_version}"
    (args.out / "throughput.md").write_text(
        f"{hardware()}; {versions}; batch {args.batch_size}, warm-up until two consecutive "
        f"windows agree within {args.warmup_tolerance:.0%}, then {args.windows} windows of "
        f"{args.steps} steps (median)\n\n" + markdown(df) + "\n")
    print(df.to_string(index=False))
    if args.limit:
        limit = hardware_limit()
        limit.to_csv(args.out / "limit.csv", index=False)
        (args.out / "limit.md").write_text(
            f"{hardware()}; TensorFlow {tf.__version__}; plain ops as `tf.function`, best of 5 "
            "after a warm-up call\n\n" + markdown(limit) + "\n")
        print(limit.to_string(index=False))


if __name__ == "__main__":
    main()
