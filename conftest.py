"""Test-suite set-up shared by the unit tests and the nbval notebook run."""

import os

# Notebooks executed by nbval (their kernels inherit this environment) run in
# smoke mode (`squeeze_keras.notebook.smoke_requested`): synthetic data, a few
# batches, one epoch, a temporary folder. tests/test_notebooks.py removes it
# where it executes a notebook with a new user's defaults.
os.environ["SQUEEZE_KERAS_SMOKE"] = "1"
# Before TensorFlow is imported: its C++ log lines stay out of the test output.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

# A notebook that `study` is executing lives beside the others as `.<stem>.running.ipynb`
# (git-ignored) until it is renamed into place: it is not a committed notebook.
collect_ignore_glob = ["notebooks/.*.ipynb"]
