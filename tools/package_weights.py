"""Ships a finished run's weights as named weights: `SqueezeNet(weights=NAME)`.

    python tools/package_weights.py results/e5_holdout100 cifar100 \\
        --data "CIFAR-100, ..." --evaluated-on "the 10,000 held-out ..."

Writes `squeeze_keras/weights/<NAME>_<run folder>.weights.h5` and the entry
NAME of `squeeze_keras/weights/weights.json` (the registry that
`squeeze_keras.pretrained` reads). Everything in the entry comes from the
run's `config.json` and `metrics.json` except the two sentences that describe
the data it trained on and the images its top-1 was measured on, which are
given here in words. The weights are the run's `model.keras` rebuilt in
float32 (`runs.load_trained_model`); saving them again gives the same bytes,
so the registered SHA-256 can be checked against the run at any time
(tests/test_pretrained.py does, for every available entry).

Refused: a run that has not finished, a NAME whose weights already ship
(unless `--replace`), and a run whose dataset is not the one a pending entry
of that NAME announces.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from squeeze_keras import data as data_lib  # noqa: E402
from squeeze_keras import runs  # noqa: E402

WEIGHTS_DIR = ROOT / "squeeze_keras" / "weights"
MADE_BY = ("tools/package_weights.py: runs.load_trained_model('{run}') (its model.keras rebuilt in "
           "float32), then model.save_weights(...); tests/test_pretrained.py checks that the two "
           "hold the same arrays")


def entry_for_run(run_dir: pathlib.Path, *, data: str, evaluated_on: str) -> dict:
    """The registry entry of a finished run (without the file and its SHA-256)."""
    config = json.loads((run_dir / "config.json").read_text())
    metrics_file = run_dir / "metrics.json"
    if not metrics_file.is_file() or not (run_dir / "model.keras").is_file():
        raise SystemExit(f"error: {run_dir} is not a finished run (metrics.json and model.keras "
                         "are written when its last epoch ends).")
    metrics = json.loads(metrics_file.read_text())
    experiment = config["experiment"]
    preprocessing = experiment["preprocessing"]
    mean, std = data_lib.mean_std(preprocessing)
    versions = metrics.get("versions", {})
    entry = {
        "available": True,
        "dataset": experiment["dataset"],
        "classes": data_lib.DATASETS[experiment["dataset"]],
        "experiment": metrics["experiment"],
        "run": run_dir.relative_to(ROOT).as_posix() if run_dir.is_relative_to(ROOT) else str(run_dir),
    }
    for key in ("protocol", "seed", "epochs", "top1", "top5", "params"):
        entry[key] = metrics[key]
    # Hold-out runs: which images, and the superclasses; newer runs: top-1 with test-time flip.
    for key in ("evaluation", "coarse_top1", "top1_flip_tta"):
        if key in metrics:
            entry[key] = metrics[key]
    entry.update({
        "evaluated_on": evaluated_on,
        "data": data,
        "precision": metrics["precision"],
        "hardware": (f"{metrics['hardware']}; TensorFlow {versions.get('tensorflow', '?')}, "
                     f"Keras {versions.get('keras', '?')}"),
        "preprocessing": {"name": preprocessing, "mean": list(mean), "std": list(std)},
        "architecture": experiment["model"],
        "made_by": MADE_BY.format(run=entry["run"]),
    })
    return entry


def _dumps(value, indent: int = 0) -> str:
    """JSON as the registry is written: lists (and the dicts inside them) on one line where
    they fit in 100 columns, every other dict one key a line."""
    line = json.dumps(value)
    if not isinstance(value, (dict, list)) or (
            (isinstance(value, list) or indent >= 8) and indent + len(line) <= 100):
        return line
    pad = " " * (indent + 2)
    if isinstance(value, dict):
        items = [f"{pad}{json.dumps(key)}: {_dumps(item, indent + 2)}" for key, item in value.items()]
        return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"
    items = [pad + _dumps(item, indent + 2) for item in value]
    return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"


def package(run_dir, name: str, *, data: str, evaluated_on: str, weights_dir=WEIGHTS_DIR,
            replace: bool = False) -> dict:
    """Writes the weights file and the registry entry; returns the entry."""
    run_dir = pathlib.Path(run_dir).resolve()
    weights_dir = pathlib.Path(weights_dir)
    registry_file = weights_dir / "weights.json"
    registry = json.loads(registry_file.read_text()) if registry_file.is_file() else {}
    old = registry.get(name)
    if old and old.get("available") and not replace:
        raise SystemExit(f"error: weights {name!r} already ship ({old['file']}, from {old['run']}); "
                         "pass --replace to replace them.")
    entry = entry_for_run(run_dir, data=data, evaluated_on=evaluated_on)
    if old and old.get("dataset") not in (None, entry["dataset"]):
        raise SystemExit(f"error: the registry announces {name!r} as {old['dataset']} weights, but "
                         f"{run_dir.name} trained on {entry['dataset']}.")
    _, model = runs.load_trained_model(run_dir)
    file = weights_dir / f"{name}_{run_dir.name}.weights.h5"
    model.save_weights(file)
    entry = {"available": True, "file": file.name,
             "sha256": hashlib.sha256(file.read_bytes()).hexdigest(), **entry}
    registry[name] = entry
    registry_file.write_text(_dumps(registry) + "\n")
    return entry


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run", help="a finished run folder, e.g. results/e5_holdout100")
    parser.add_argument("name", help="the weights' name, e.g. cifar100")
    parser.add_argument("--data", required=True, help="the data it trained on, in words")
    parser.add_argument("--evaluated-on", required=True, help="the images its top-1 is measured on")
    parser.add_argument("--weights-dir", default=str(WEIGHTS_DIR), help=argparse.SUPPRESS)
    parser.add_argument("--replace", action="store_true", help="replace weights that already ship")
    args = parser.parse_args(argv)
    entry = package(args.run, args.name, data=args.data, evaluated_on=args.evaluated_on,
                    weights_dir=args.weights_dir, replace=args.replace)
    print(f"{args.name}: {entry['file']} (sha256 {entry['sha256'][:16]}...), top-1 {entry['top1']} "
          f"from {entry['run']}")


if __name__ == "__main__":
    main()
