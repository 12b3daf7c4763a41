"""Table 1 from run folders: the report's numbers beside what was measured here.

A run that has not been made shows as missing (`<NA>`), never as a number.
"""

from __future__ import annotations

import pathlib
import re
import statistics

import pandas as pd

from squeeze_keras import experiments
from squeeze_keras.train import load_run, run_dir_for, run_name


def load_runs(results_dir, protocol: str = "paper") -> dict:
    """`{experiment: RunResult}` for every finished run of `protocol` in `results_dir`."""
    runs = {name: _seed0_run(results_dir, name, protocol) for name in experiments.names()}
    return {name: run for name, run in runs.items() if run is not None}


def protocol_runs(results_dir, experiment: str) -> dict:
    """`{protocol: RunResult}` for the finished seed-0 runs of one experiment, every protocol."""
    runs = {p: _seed0_run(results_dir, experiment, p) for p in experiments.PROTOCOLS}
    return {protocol: run for protocol, run in runs.items() if run is not None}


def _seed0_run(results_dir, experiment: str, protocol: str):
    """The finished seed-0 run of `experiment` under `protocol`, or None."""
    run_dir = run_dir_for(experiments.get(experiment).with_protocol(protocol), results_dir)
    return load_run(run_dir) if (run_dir / "metrics.json").exists() else None


def seed_runs(results_dir, experiment: str, protocol: str = "paper") -> dict:
    """`{seed: RunResult}` for the finished runs of one experiment and protocol, every seed.

    Seed 0 lives in `<run>`, other seeds in `<run>_seed<k>` (`run_experiment(seed=k)`).
    """
    base = run_name(experiments.get(experiment).with_protocol(protocol))
    pattern = re.compile(rf"{re.escape(base)}(?:_seed(\d+))?")
    runs = {}
    for metrics_file in pathlib.Path(results_dir).glob(f"{base}*/metrics.json"):
        match = pattern.fullmatch(metrics_file.parent.name)
        if match:
            runs[int(match.group(1) or 0)] = load_run(metrics_file.parent)
    return dict(sorted(runs.items()))


def table1(results_dir) -> pd.DataFrame:
    """The report's Table 1 beside this project's measured runs.

    One `<protocol> top-1` column for each protocol other than `paper`
    (`tuned top-1`, ...); epochs, seconds per epoch, hardware and data are
    those of the `paper` run (seed 0). Where `paper` runs with other seeds
    exist, `seeds`, `paper mean` and `paper sd` (sample standard deviation)
    summarise all of them.
    """
    results_dir = pathlib.Path(results_dir)
    paper = load_runs(results_dir, "paper")
    others = [name for name in experiments.PROTOCOLS if name != "paper"]
    other_runs = {protocol: load_runs(results_dir, protocol) for protocol in others}
    rows = []
    for name in experiments.names():
        config = experiments.get(name)
        run = paper.get(name)
        m = run.metrics if run else {}
        row = {
            "run": name,
            "change": config.description,
            "dataset": config.dataset,
            "report top-1": config.report_top1,
            "paper top-1": m.get("top1"),
            "difference": round(m["top1"] - config.report_top1, 2) if m else None,
        }
        top1s = [r.metrics["top1"] for r in seed_runs(results_dir, name).values()]
        row.update({
            "seeds": len(top1s) or None,
            "paper mean": round(statistics.mean(top1s), 2) if top1s else None,
            "paper sd": round(statistics.stdev(top1s), 2) if len(top1s) > 1 else None,
        })
        for protocol, runs in other_runs.items():
            row[f"{protocol} top-1"] = runs[name].metrics["top1"] if name in runs else None
        row.update({
            "report params": config.report_params,
            "params": config.build_model().count_params(),
            "epochs": m.get("epochs"),
            "s/epoch": m.get("seconds_per_epoch"),
            "hardware": m.get("hardware"),
            "data": m.get("data_source"),
        })
        rows.append(row)
    df = pd.DataFrame(rows)
    for col in ("paper top-1", "difference", "paper mean", "paper sd",
                *(f"{p} top-1" for p in others), "s/epoch"):
        df[col] = df[col].astype("Float64")
    for col in ("seeds", "report params", "params", "epochs"):
        df[col] = df[col].astype("Int64")
    return df


def best_run(results_dir, dataset: str = "cifar10") -> pathlib.Path:
    """The run folder with the highest top-1 on `dataset`, over every protocol.

    Raises:
        FileNotFoundError: no finished run of `dataset` in `results_dir`.
    """
    runs = []
    for metrics_file in pathlib.Path(results_dir).glob("*/metrics.json"):
        run = load_run(metrics_file.parent)
        if experiments.get(run.metrics["experiment"]).dataset == dataset:
            runs.append((run.metrics["top1"], metrics_file.parent))
    if not runs:
        raise FileNotFoundError(f"No finished {dataset} run in {results_dir}.")
    return max(runs)[1]
