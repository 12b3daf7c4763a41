"""What the notebooks share: their parameters turned into run settings, and the committed runs shown.

With their default parameters the notebooks train nothing: they show the
committed record of the study from `../results`. `TRAIN = True` trains a run
of the user's own into `../runs` (never into `results/` unless asked for
explicitly, as `squeeze_keras.study` does). Smoke mode (`SMOKE = True`, or
the environment variable `SQUEEZE_KERAS_SMOKE=1` that the test suite sets)
trains one epoch on a few batches of synthetic data in a temporary folder,
never in the runs, results or figures folders.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile

import pandas as pd

from squeeze_keras import experiments, results
from squeeze_keras.data import NAMED_SOURCES, check_holdout, holdout_label
from squeeze_keras.devices import hardware
from squeeze_keras.runs import RunResult, run_dir_for, run_name
from squeeze_keras.train import run_experiment

__all__ = [
    "Settings", "committed_runs", "committed_summary", "hardware", "histories_by_protocol",
    "holdout_beside", "not_run_note",
    "result_line", "runs_table", "settings", "smoke_requested",
]

SMOKE_ENV = "SQUEEZE_KERAS_SMOKE"
SMOKE_LIMIT = 64


def smoke_requested(smoke: bool = False) -> bool:
    """True for `SMOKE = True` or when the environment sets `SQUEEZE_KERAS_SMOKE=1`."""
    return bool(smoke) or os.environ.get(SMOKE_ENV, "") == "1"


def scratch_dir() -> pathlib.Path:
    """A new temporary folder for smoke runs and their figures."""
    return pathlib.Path(tempfile.mkdtemp(prefix="squeeze_keras_smoke_"))


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved settings of one experiment notebook run."""

    config: experiments.ExperimentConfig
    train: bool
    epochs: int
    data: str
    seed: int
    smoke: bool
    limit: int | None
    runs_dir: pathlib.Path
    figures_dir: pathlib.Path | None
    holdout: int | float | None = None
    holdout_seed: int = 0

    @property
    def run_dir(self) -> pathlib.Path:
        return run_dir_for(self.config, self.runs_dir, self.seed, self.holdout)

    @property
    def figure_path(self) -> pathlib.Path | None:
        """Where the trained run's curves are saved (`None`: shown only)."""
        if self.figures_dir is None:
            return None
        return self.figures_dir / f"{run_name(self.config, self.seed, self.holdout)}_accuracy.png"

    @property
    def evaluation(self) -> str:
        """The split the run is evaluated on: `"test"` or `"train hold-out, N/class"`."""
        if self.holdout is None:
            return "test"
        return f"train hold-out, {holdout_label(self.holdout)}"

    def run(self, verbose=2) -> RunResult:
        """Trains (or resumes, or reloads the same finished run) through `run_experiment`."""
        if not self.train:
            raise RuntimeError("TRAIN = False: set TRAIN = True to train a run.")
        return run_experiment(
            self.config, epochs=self.epochs, data=self.data, out_dir=self.runs_dir,
            seed=self.seed, limit=self.limit, verbose=verbose, holdout=self.holdout,
            holdout_seed=self.holdout_seed,
        )

    def how_to_train(self) -> str:
        held = "" if self.holdout is None else f" --holdout {self.holdout}"
        return (f"TRAIN = False: nothing trained. Set TRAIN = True to train {self.config.name} "
                f"({self.config.protocol.name} protocol, seed {self.seed}) into "
                f"{self.run_dir.as_posix()}, or run `python -m squeeze_keras train "
                f"{self.config.name} --protocol {self.config.protocol.name} --seed {self.seed}"
                f"{held}`.")

    def __str__(self):
        held = "" if self.holdout is None else f", evaluated on the {self.evaluation}"
        name = (f"{self.config.name} ({self.config.protocol.name} protocol, seed {self.seed}"
                f"{held})")
        if self.smoke:
            return (f"{name}: SMOKE, 1 epoch on {self.limit} synthetic examples in a "
                    "temporary folder (a check that everything runs, not a result)")
        if not self.train:
            return f"{name}: TRAIN = False, showing the committed runs; nothing is trained"
        source = self.data if self.data in NAMED_SOURCES else "an image folder"
        return (f"{name}: TRAIN = True, {self.epochs} epochs on {self.config.dataset} from "
                f"{source} into {self.run_dir.as_posix()}")


def settings(experiment, *, train=False, epochs=20, data="tfds", smoke=False, seed=0,
             protocol="paper", runs_dir="../runs", figures_dir=None, holdout=None,
             holdout_seed=0) -> Settings:
    """Settings for an experiment notebook's parameters.

    Args:
        experiment: a registered experiment name.
        train: train a run (else the notebook only shows committed runs).
            Defaults to `False`.
        epochs, data, seed, protocol: of the run to train.
        smoke: smoke mode (also when `SQUEEZE_KERAS_SMOKE=1`): trains one
            epoch on synthetic data in a temporary folder. Defaults to `False`.
        runs_dir: folder of the run folders to train into. Defaults to
            `"../runs"` (the study passes `"../results"`).
        figures_dir: folder to save the trained run's curves into; `None`
            shows them only. Defaults to `None`.
        holdout, holdout_seed: evaluate on a hold-out of the training images
            (`run_experiment`). Defaults to `None` (the test split).
    """
    config = experiments.get(experiment).with_protocol(protocol)
    if holdout is not None:
        holdout = check_holdout(holdout)
    if smoke_requested(smoke):
        scratch = scratch_dir()
        smoke_holdout = None if holdout is None else 1  # a few synthetic images per class
        return Settings(config, True, 1, "synthetic", seed, True, SMOKE_LIMIT,
                        scratch / "runs", scratch / "figures", smoke_holdout, holdout_seed)
    return Settings(config, bool(train), epochs, data, seed, False, None,
                    pathlib.Path(runs_dir),
                    None if figures_dir is None else pathlib.Path(figures_dir),
                    holdout, holdout_seed)


# ---------------------------------------------------------------- committed runs


def _group(metrics: dict) -> str:
    """A run's protocol, and its evaluation split when that is not the test split."""
    evaluation = metrics.get("evaluation", "test")
    return metrics["protocol"] + ("" if evaluation == "test" else f", {evaluation}")


def _label(metrics: dict) -> str:
    seed = metrics.get("seed") or 0
    return _group(metrics) + (f" seed {seed}" if seed else "")


def committed_runs(experiment: str, results_dir) -> dict[str, RunResult]:
    """`{label: RunResult}` for every finished run of `experiment` in `results_dir`.

    Every protocol, evaluation split and seed (`paper`, `tuned2`, `paper seed 1`,
    `paper, train hold-out, 100/class`...), in the order of
    `experiments.PROTOCOLS`, official-split runs before hold-out ones, then seed.
    """
    found = []
    for protocol in experiments.PROTOCOLS:
        found.extend(results.seed_runs(results_dir, experiment, protocol).values())
        for seeds in results.holdout_runs(results_dir, experiment, protocol).values():
            found.extend(seeds.values())
    return {_label(run.metrics): run for run in found}


def histories_by_protocol(runs: dict[str, RunResult]) -> dict:
    """`{protocol[, evaluation split]: {seed: history}}` of runs, for `plot_validation_curves`.

    Runs evaluated on different splits are never averaged together.
    """
    grouped = {}
    for run in runs.values():
        grouped.setdefault(_group(run.metrics), {})[run.metrics.get("seed") or 0] = run.history
    return grouped


def runs_table(runs: dict[str, RunResult]) -> pd.DataFrame:
    """One row per run: top-1, top-5, epochs, seconds per epoch and where it ran.

    Hold-out runs add their top-1 on the official test split where the source
    had one, and CIFAR-100 runs their coarse (20-superclass) top-1; those
    columns appear only when some run has them.
    """
    rows = []
    for label, run in runs.items():
        m = run.metrics
        rows.append({
            "run": label, "folder": run.run_dir.name, "evaluated on": m.get("evaluation", "test"),
            "top-1": m["top1"], "top-5": m["top5"],
            "coarse top-1": m.get("coarse_top1"),
            "official test top-1": m.get("official_test", {}).get("top1"),
            "best epoch top-1": m.get("best_val_top1"), "report top-1": m.get("report_top1"),
            "epochs": m["epochs"], "s/epoch": m["seconds_per_epoch"],
            "precision": m["precision"], "hardware": m["hardware"], "data": m["data_source"],
        })
    columns = ["run", "folder", "evaluated on", "top-1", "top-5", "coarse top-1",
               "official test top-1", "best epoch top-1", "report top-1", "epochs", "s/epoch",
               "precision", "hardware", "data"]
    table = pd.DataFrame(rows, columns=columns)
    optional = [c for c in ("coarse top-1", "official test top-1") if table[c].isna().all()]
    return table.drop(columns=optional)


def holdout_beside(runs: dict[str, RunResult], results_dir="../results") -> pd.DataFrame | None:
    """For an experiment with a hold-out run: E5's figures and the calibration, else nothing.

    Prints `results.holdout_lines` and returns `results.calibration` (E4 on
    CIFAR-10: the official-split run beside the run trained by the hold-out
    rule) when one of `runs` was evaluated on a hold-out of its training
    images; returns None, printing nothing, otherwise.
    """
    if all(run.metrics.get("evaluation", "test") == "test" for run in runs.values()):
        return None
    print("\n".join(results.holdout_lines(results_dir)))
    return results.calibration(results_dir)


def not_run_note(config: experiments.ExperimentConfig, results_dir="../results") -> str:
    """Why an experiment has no committed run, and how to make one."""
    how = (f"To make one: TRAIN = True in this notebook, or `python -m squeeze_keras train "
           f"{config.name} --data tfds`")
    if config.dataset == "cifar100":
        return (f"Not run yet: no committed {config.name} run in {results_dir}. " + how +
                " where tfds can download (e.g. Colab), or with an image folder of CIFAR-100's "
                "training images and `--holdout 100` (HOLDOUT = 100), evaluated on a hold-out of "
                "them.")
    return f"Not run yet: no committed {config.name} run in {results_dir}. " + how + "."


def committed_summary(config: experiments.ExperimentConfig, runs: dict[str, RunResult],
                      results_dir="../results") -> str:
    """One line: each committed run's top-1 beside the report's, or why there is none."""
    if not runs:
        return not_run_note(config, results_dir)
    each = ", ".join(f"{label} {run.metrics['top1']:.2f} %" for label, run in runs.items())
    report = f" (report: {config.report_top1:.2f} %)" if config.report_top1 is not None else ""
    return f"{len(runs)} committed run(s) of {config.name}: {each}{report}"


def result_line(metrics: dict) -> str:
    """A run's result, on which split, and where it was made, in two or three lines.

    A run trained in sittings on several machines gives each machine's epochs
    and median seconds per epoch, not one median over all of them.
    """
    report = metrics.get("report_top1")
    beside = f" (report: {report:.2f} %)" if report is not None else ""
    coarse = (f", coarse (20 superclasses) top-1 {metrics['coarse_top1']:.2f} %"
              if "coarse_top1" in metrics else "")
    lines = [f"top-1 {metrics['top1']:.2f} %{beside}, top-5 {metrics['top5']:.2f} %{coarse} "
             f"on the {metrics.get('evaluation', 'test')} ({metrics['test_size']:,} images)"]
    if "official_test" in metrics:
        official = metrics["official_test"]
        lines.append(f"official test split ({official['images']:,} images, not used in "
                     f"training): top-1 {official['top1']:.2f} %, top-5 {official['top5']:.2f} %")
    sittings = metrics.get("sittings")
    if sittings and len({sitting["hardware"] for sitting in sittings}) > 1:
        # One median over machines that differ tells nothing: each machine with its own.
        where = "; ".join(f"epochs {s['epochs']} at {s['seconds_per_epoch']} s/epoch on "
                          f"{s['hardware']}" for s in sittings)
        lines.append(f"{metrics['epochs']} epochs, {metrics['precision']}: {where}; "
                     f"data: {metrics['data_source']}")
    else:
        lines.append(f"{metrics['epochs']} epochs, {metrics['seconds_per_epoch']} s/epoch, "
                     f"{metrics['precision']}, {metrics['hardware']}; data: "
                     f"{metrics['data_source']}")
    return "\n".join(lines)
