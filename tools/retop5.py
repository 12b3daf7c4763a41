"""Re-evaluates finished runs' top-5 with ties counted as misses (issue #36), from `model.keras`.

    nice -n 19 python tools/retop5.py --data ../shared/data/cifar10-jpeg.tar.gz \\
        --data ../shared/data/cifar100-train-png.tar.gz [RUN ...] [--dry-run]

Runs made before `train.TopKNoTies` recorded Keras's top-5, which counts a
class tied with the true class as a hit (`train.top_k_hits`). For each run
folder (default: every `results/*/` with a `metrics.json`; a folder without
one, such as a run still training, is never touched) this rebuilds the model
in float32 (`runs.load_trained_model`), predicts the split the run was
evaluated on (its test split, or its hold-out as `config.json` records it,
loaded from the `--data` archive whose content digest is the one recorded),
and writes into `metrics.json`: `top5` (ties as misses), `top5_with_ties`
(the value recorded at training), and `top5_reevaluated` (how: the tool, the
images, the top-1 and the top-5 with ties measured here as checks, machine
and date). Top-1 stays as trained. A hold-out run's `official_test.top5` is
re-evaluated the same way (its old value, whose ties went to the lowest class
index, kept as `official_test.top5_ties_by_index`). `history.csv` is left as
trained. A run already re-evaluated is skipped.
"""

from __future__ import annotations

import argparse
import datetime
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402

from squeeze_keras import data as data_lib  # noqa: E402
from squeeze_keras import devices, fileio, runs, sources, train  # noqa: E402

HOW = ("tools/retop5.py: model.keras rebuilt in float32 (runs.load_trained_model), predicted on "
       "the {images:,} images of the {evaluation} of {source}; a class tied with the true class "
       "counts against it (train.top_k_hits). Top-1 is the trained one; history.csv's top5 and "
       "val_top5 are as trained (ties counted as hits).")


def with_ties(probabilities, labels, k: int = 5) -> float:
    """Keras's top-`k` (a class tied with the true class counts as a hit), in %."""
    metric = keras.metrics.SparseTopKCategoricalAccuracy(k=k)
    metric.update_state(labels, probabilities)
    return round(100 * float(metric.result()), 2)


def source_for(run_dir: pathlib.Path, archives: list[str]) -> str:
    """The `--data` archive whose content is the one the run's `config.json` records."""
    recorded = runs.stored_data(run_dir) or {}
    for archive in archives:
        if sources.file_digest(archive) == recorded.get("digest"):
            return archive
    raise SystemExit(f"error: no --data archive has the content {run_dir}/config.json records "
                     f"({recorded.get('name')}, digest {recorded.get('digest')}).")


def reevaluate(run_dir: pathlib.Path, archives: list[str]) -> dict | None:
    """The run's new `metrics.json`, or None where it has none or was re-evaluated already."""
    metrics = runs.read_metrics(run_dir)
    if metrics is None or "top5_reevaluated" in metrics:
        return None
    source = source_for(run_dir, archives)
    holdout = (runs.stored_data(run_dir) or {}).get("holdout")
    config, model = runs.load_trained_model(run_dir)
    splits = data_lib.load(
        config.dataset, source, preprocessing=config.preprocessing, limit=metrics.get("limit"),
        holdout=None if holdout is None else holdout.get("per_class", holdout.get("fraction")),
        holdout_seed=0 if holdout is None else holdout["seed"], pipeline="numpy",
        log=lambda *_: None)
    if splits.holdout is not None and splits.holdout["digest"] != holdout["digest"]:
        raise SystemExit(f"error: the hold-out of {source} is not the one {run_dir} records.")

    def predict(images):
        return model.predict(data_lib.normalize(images, config.preprocessing), batch_size=250,
                             verbose=0)

    probabilities = predict(splits.x_test)
    top5 = train.topk_accuracy(probabilities, splits.y_test, 5)
    check = {"top1": train.topk_accuracy(probabilities, splits.y_test, 1),
             "top5_with_ties": with_ties(probabilities, splits.y_test)}
    new = {}
    for key, value in metrics.items():
        new[key] = value
        if key == "top5":
            new.update(top5=top5, top5_with_ties=value)
    if splits.x_official_test is not None and "official_test" in metrics:
        official = predict(splits.x_official_test)
        new["official_test"] = {**metrics["official_test"],
                                "top5": train.topk_accuracy(official, splits.y_official_test, 5),
                                "top5_ties_by_index": metrics["official_test"]["top5"]}
        check["official_test_top1"] = train.topk_accuracy(official, splits.y_official_test, 1)
    new["top5_reevaluated"] = {
        "how": HOW.format(images=len(splits.y_test), source=pathlib.Path(source).name,
                          evaluation="test split" if splits.evaluation == "test"
                          else splits.evaluation),
        "measured": check, "on": devices.hardware(),
        "at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    return new


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("runs", nargs="*", help="run folders (default: every results/*/ finished)")
    parser.add_argument("--data", action="append", required=True,
                        help="an archive the runs trained on (repeat for several)")
    parser.add_argument("--dry-run", action="store_true", help="print, write nothing")
    args = parser.parse_args(argv)
    folders = [pathlib.Path(r) for r in args.runs] or sorted(
        p.parent for p in (ROOT / "results").glob("*/metrics.json"))
    for run_dir in folders:
        metrics = reevaluate(run_dir, args.data)
        if metrics is None:
            print(f"{run_dir.name}: skipped (no metrics.json, or re-evaluated already)")
            continue
        measured = metrics["top5_reevaluated"]["measured"]
        print(f"{run_dir.name}: top-5 {metrics['top5_with_ties']:.2f} -> {metrics['top5']:.2f} "
              f"(measured with ties {measured['top5_with_ties']:.2f}, top-1 {measured['top1']:.2f}"
              f" against {metrics['top1']:.2f} trained)", flush=True)
        if not args.dry_run:
            fileio.write_json(run_dir / "metrics.json", metrics)


if __name__ == "__main__":
    main()
