"""Test-suite set-up shared by the unit tests and the nbval notebook run."""

import os

# Notebooks executed by nbval (their kernels inherit this environment) run in
# smoke mode: synthetic data, a few batches, one epoch, a temporary folder.
os.environ["SQUEEZE_KERAS_SMOKE"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
