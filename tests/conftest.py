"""Fixtures shared by the test modules."""

import pytest

from squeeze_keras import data
from squeeze_keras.train import run_experiment


@pytest.fixture(scope="session")
def learned(tmp_path_factory):
    """E1 (baseline architecture, 2x2 pools) for ~250 steps on synthetic data."""
    out = tmp_path_factory.mktemp("runs")
    splits = data.load("cifar10", "synthetic", preprocessing="cifar", synthetic_sizes=(4000, 1000),
                       batch_size=64)
    result = run_experiment("e1", epochs=4, data=splits, out_dir=out, precision="float32",
                            verbose=0)
    return result
