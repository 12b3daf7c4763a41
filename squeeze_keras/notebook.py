"""What the experiment notebooks share: turning their parameters cell into run settings.

Smoke mode (`SMOKE = True`, or the environment variable
`SQUEEZE_KERAS_SMOKE=1` that the test suite sets) trains one epoch on a few
batches of synthetic data and writes into a temporary folder, never into the
results or figures folders.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import tempfile

from squeeze_keras import experiments
from squeeze_keras.train import hardware, run_experiment, run_name

__all__ = ["Settings", "hardware", "settings"]

SMOKE_ENV = "SQUEEZE_KERAS_SMOKE"
SMOKE_LIMIT = 64


@dataclasses.dataclass(frozen=True)
class Settings:
    """Resolved settings of one notebook run."""

    config: experiments.ExperimentConfig
    epochs: int
    data: str
    seed: int
    smoke: bool
    limit: int | None
    results_dir: pathlib.Path
    figures_dir: pathlib.Path

    @property
    def figure_path(self) -> pathlib.Path:
        return self.figures_dir / f"{run_name(self.config, self.seed)}_accuracy.png"

    def run(self, verbose=2):
        """Trains (or resumes, or reloads a finished run) through `run_experiment`."""
        return run_experiment(
            self.config, epochs=self.epochs, data=self.data, out_dir=self.results_dir,
            seed=self.seed, limit=self.limit, verbose=verbose,
        )

    def __str__(self):
        mode = "SMOKE (synthetic data, 1 epoch, temporary folder)" if self.smoke else "full run"
        return (f"{self.config.name} ({self.config.protocol.name} protocol), {mode}: "
                f"{self.epochs} epochs on {self.config.dataset} from "
                f"{self.data if self.data in ('tfds', 'synthetic') else 'an image folder'}")


def settings(experiment, *, epochs=20, data="tfds", smoke=False, seed=0, protocol="paper",
             results_dir="../results", figures_dir="../figures") -> Settings:
    """Settings for a notebook's parameters; smoke mode also when `SQUEEZE_KERAS_SMOKE=1`."""
    config = experiments.get(experiment).with_protocol(protocol)
    smoke = bool(smoke) or os.environ.get(SMOKE_ENV, "") == "1"
    if smoke:
        scratch = pathlib.Path(tempfile.mkdtemp(prefix="squeeze_keras_smoke_"))
        return Settings(config, 1, "synthetic", seed, True, SMOKE_LIMIT,
                        scratch / "results", scratch / "figures")
    return Settings(config, epochs, data, seed, False, None,
                    pathlib.Path(results_dir), pathlib.Path(figures_dir))
