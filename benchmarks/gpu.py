"""E4 `tuned2` end to end on one GPU: the package under Keras's JAX backend against plain PyTorch.

Runs, one after the other in one process tree on the same machine,

- the package's own training, `python -m squeeze_keras train e4 --protocol tuned2 --data
  <archive> --out <tmp>` under `KERAS_BACKEND=jax` (a subprocess; fresh caches: its own
  temp folder for the unpacked archive and its decoded-array cache, and its own JAX
  compilation cache), and with `--warm`, the same command again with those caches kept;
- the peer, `gpu_torch_peer.py`: torchvision's `squeezenet1_0` with the E4 changes in
  plain PyTorch eager, the same recipe, the data decoded once and resident on the GPU,
  augmentation on the GPU, bf16 autocast, channels-last;

and measures for each: process wall (process start to `metrics.json` / the peer's result),
epoch-1 seconds, steady-state epoch seconds (median of epochs 2..N, evaluation of the test
split included, from the run's `history.csv` `seconds` column) and training images/s
(training images / that median), top-1. It prints a table and writes
`gpu_<machine>.csv` and `gpu_<machine>.md` into `--out`, with Keras/PyTorch speed ratios
(PyTorch seconds / Keras seconds; Keras images/s / PyTorch images/s: above 1, Keras is
faster).

GPU command (one H100/H200; the archive is the JPEG folder archive of CIFAR-10; the Python
needs squeeze_keras with jax[cuda], torch and torchvision; not part of CI):

    python benchmarks/gpu.py --data /path/to/cifar10-jpeg.tar.gz --warm --out benchmarks/results

CPU smoke check (a synthetic JPEG archive of a few hundred images, 2 epochs, TensorFlow
backend where JAX is absent, the peer in another Python):

    python benchmarks/gpu.py --smoke --keras-backend tensorflow --torch-python VENV/bin/python
"""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import os
import pathlib
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time

import numpy as np

HERE = pathlib.Path(__file__).resolve().parent
REPO = HERE.parent


def synthetic_archive(path: pathlib.Path, train: int, test: int, classes: int = 10, seed: int = 0):
    """A small JPEG folder archive (train/<class>/*.jpg, test/<class>/*.jpg) with class signal.

    Each class is a smooth colour template, shifted and noised per image (as
    `squeeze_keras.data.synthetic_arrays`, without importing Keras here).
    """
    from PIL import Image

    rng = np.random.default_rng(seed)
    templates = np.kron(rng.normal(size=(classes, 4, 4, 3)), np.ones((1, 8, 8, 1)))
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", train), ("test", test)):
            labels = np.arange(n) % classes  # every class present
            for i, label in enumerate(labels):
                shifted = np.roll(templates[label], tuple(rng.integers(-3, 4, 2)), axis=(0, 1))
                image = np.clip(128 + 40 * shifted + 20 * rng.normal(size=shifted.shape), 0, 255)
                buffer = io.BytesIO()
                Image.fromarray(image.astype(np.uint8)).save(buffer, format="JPEG", quality=95)
                info = tarfile.TarInfo(f"{split}/class{label}/{i:05d}.jpg")
                info.size = buffer.tell()
                buffer.seek(0)
                tar.addfile(info, buffer)


def machine_name(fallback: str) -> str:
    """The GPU's name from `nvidia-smi`, else `fallback` (the Keras run's hardware line)."""
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        names = [line.strip() for line in out.stdout.splitlines() if line.strip()]
        if out.returncode == 0 and names:
            return f"{len(names)}x {names[0]}" if len(names) > 1 else names[0]
    except (OSError, subprocess.TimeoutExpired):
        pass
    return fallback


def epoch_figures(seconds: list[float], train_size: int) -> dict:
    """Epoch-1 seconds, median of the later epochs, and training images/s at that median."""
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    return {"epoch1_s": seconds[0], "steady_epoch_s": steady,
            "steady_img_s": train_size / steady}


def run_keras(args, work: pathlib.Path, name: str, folder: str, env: dict) -> dict:
    """One `python -m squeeze_keras train` run (`name` in the table); its figures from its run folder."""
    out = work / folder
    command = [args.keras_python, "-m", "squeeze_keras", "train", args.experiment,
               "--protocol", "tuned2", "--data", str(args.data), "--out", str(out),
               "--verbose", "2"]
    if args.epochs:
        command += ["--epochs", str(args.epochs)]
    log = work / f"{folder}.log"
    print("$", " ".join(command), flush=True)
    start = time.time()
    with open(log, "w") as f:
        code = subprocess.run(command, cwd=REPO, env=env, stdout=f, stderr=subprocess.STDOUT).returncode
    exited = time.time()
    if code != 0:
        sys.exit(f"{name} failed (exit {code}); see {log}:\n" + log.read_text()[-3000:])
    metrics_file = next(out.glob("*/metrics.json"))
    metrics = json.loads(metrics_file.read_text())
    seconds = [float(row["seconds"]) for row in csv.DictReader(open(metrics_file.with_name("history.csv")))]
    return {"side": name, "wall_s": metrics_file.stat().st_mtime - start,
            "exit_s": exited - start, **epoch_figures(seconds, metrics["train_size"]),
            "top1": metrics["top1"], "epochs": len(seconds), "train_size": metrics["train_size"],
            "params": metrics["params"], "precision": metrics["precision"],
            "device": metrics["hardware"], "versions": metrics["versions"]}


def run_torch(args, work: pathlib.Path) -> dict:
    """The PyTorch eager peer in its own process; its figures from the JSON it writes."""
    result_file = work / "pytorch.json"
    command = [args.torch_python, str(HERE / "gpu_torch_peer.py"), "--data", str(args.data),
               "--result", str(result_file), "--epochs", str(args.epochs or 20)]
    log = work / "pytorch.log"
    print("$", " ".join(command), flush=True)
    start = time.time()
    with open(log, "w") as f:
        code = subprocess.run(command, stdout=f, stderr=subprocess.STDOUT).returncode
    exited = time.time()
    if code != 0:
        sys.exit(f"the PyTorch peer failed (exit {code}); see {log}:\n" + log.read_text()[-3000:])
    result = json.loads(result_file.read_text())
    seconds = [e["seconds"] for e in result["epochs"]]
    return {"side": "pytorch", "wall_s": result_file.stat().st_mtime - start,
            "exit_s": exited - start, **epoch_figures(seconds, result["train_size"]),
            "top1": result["top1"], "epochs": len(seconds), "train_size": result["train_size"],
            "params": result["params"], "precision": result["precision"],
            "device": result["device"], "decode_s": result["decode_seconds"],
            "versions": result["versions"]}


ROWS = (  # (label, key, digits, speed ratio: "lower" = PyTorch / Keras, "higher" = Keras / PyTorch)
    ("process wall s (start to metrics)", "wall_s", 1, "lower"),
    ("epoch 1 s", "epoch1_s", 2, "lower"),
    ("steady epoch s (median of 2..N, with evaluation)", "steady_epoch_s", 3, "lower"),
    ("steady training img/s", "steady_img_s", 0, "higher"),
    ("top-1 %", "top1", 2, None),
)


def table(sides: list[dict]) -> list[dict]:
    """One row per measure: each side's figure and the Keras/PyTorch speed ratio of each Keras side."""
    torch_side = next(s for s in sides if s["side"] == "pytorch")
    rows = []
    for label, key, digits, better in ROWS:
        row = {"measure": label}
        for side in sides:
            row[side["side"]] = round(side[key], digits) if digits else round(side[key])
        for side in sides:
            if side is torch_side or better is None:
                continue
            ratio = (torch_side[key] / side[key] if better == "lower"
                     else side[key] / torch_side[key])
            row[f"{side['side']}/pytorch speed"] = round(ratio, 2)
        rows.append(row)
    return rows


def markdown(rows: list[dict]) -> str:
    columns = list(dict.fromkeys(k for row in rows for k in row))
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(str(row.get(c, "")) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, help="JPEG folder archive (.tar.gz) of CIFAR-10")
    parser.add_argument("--out", type=pathlib.Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--epochs", type=int, default=None, help="defaults to 20 (2 with --smoke)")
    parser.add_argument("--experiment", default="e4")
    parser.add_argument("--keras-backend", default="jax")
    parser.add_argument("--keras-python", default=sys.executable)
    parser.add_argument("--torch-python", default=sys.executable)
    parser.add_argument("--warm", action="store_true",
                        help="run the Keras side a second time with its caches warm")
    parser.add_argument("--smoke", action="store_true",
                        help="a synthetic archive of 384 + 128 images and 2 epochs (CPU check)")
    parser.add_argument("--work", type=pathlib.Path, default=None,
                        help="scratch folder (kept); defaults to a temporary one (removed)")
    args = parser.parse_args()

    work = args.work or pathlib.Path(tempfile.mkdtemp(prefix="squeeze_keras_gpu_"))
    work.mkdir(parents=True, exist_ok=True)
    if args.smoke:
        args.epochs = args.epochs or 2
        if args.data is None:
            args.data = work / "synthetic-jpeg.tar.gz"
            synthetic_archive(args.data, 384, 128)
    if args.data is None:
        parser.error("--data is required (or --smoke)")
    args.data = args.data.resolve()

    # Fresh caches for the Keras side: its own temp folder (unpacked archive, decoded arrays)
    # and its own compilation cache, kept for the --warm run.
    tmp, cache = work / "tmp", work / "cache"
    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "KERAS_BACKEND": args.keras_backend, "TMPDIR": str(tmp),
           "SQUEEZE_KERAS_CACHE": str(cache), "JAX_COMPILATION_CACHE_DIR": str(cache / "jax")}
    try:
        sides = [run_keras(args, work, f"keras ({args.keras_backend})", "keras", env)]
        if args.warm:
            sides.append(run_keras(args, work, f"keras ({args.keras_backend}, warm caches)",
                                   "keras_warm", env))
        sides.append(run_torch(args, work))
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)

    machine = machine_name(sides[0]["device"])
    if len({s["params"] for s in sides}) != 1:
        print("warning: the two sides' models differ in size: "
              + ", ".join(f"{s['side']} {s['params']:,}" for s in sides), file=sys.stderr)
    rows = table(sides)
    details = "; ".join(
        f"{s['side']}: {s['epochs']} epochs of {s['train_size']} images, {s['precision']}, "
        f"{s['params']:,} parameters, " + ", ".join(f"{k} {v}" for k, v in s["versions"].items())
        + (f", decoding {s['decode_s']:.1f} s" if "decode_s" in s else "")
        for s in sides)
    stamp = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    header = (f"{machine}; {stamp}; data {args.data.name}{' (smoke)' if args.smoke else ''}; "
              f"{details}")
    print(header)
    print(markdown(rows))
    args.out.mkdir(parents=True, exist_ok=True)
    slug = re.sub(r"[^a-z0-9]+", "_", machine.lower()).strip("_")[:40] + ("_smoke" if args.smoke else "")
    with open(args.out / f"gpu_{slug}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["machine", *dict.fromkeys(k for r in rows for k in r)])
        writer.writeheader()
        writer.writerows({"machine": machine, **row} for row in rows)
    (args.out / f"gpu_{slug}.md").write_text(header + "\n\n" + markdown(rows) + "\n")
    print(f"wrote {args.out / f'gpu_{slug}.csv'} and .md")


if __name__ == "__main__":
    main()
