"""The set-up cells every notebook starts with (inserted where a source says `# %% [setup]`).

This file is the one home of the repository URL and of the Colab set-up.
"""

# %% [markdown]
# ## Set-up
#
# In Colab this clones the project (once) and installs only what Colab lacks; in a checkout it
# puts the repository on `sys.path`, so `pip install -e .` is not needed. Either way
# `squeeze_keras` imports in this kernel without a restart, and running the cell again is
# harmless. TensorFlow's start-up log lines (CUDA probes, CPU features) are kept out of the
# notebook: they say nothing about the results.

# %%
import importlib.util
import os
import pathlib
import subprocess
import sys

REPOSITORY = "https://github.com/squeeze-keras/squeeze-keras"

# Read by TensorFlow when it is imported: C++ log lines below FATAL stay out of the outputs,
# and its oneDNN CPU kernels, on by default only on AVX-512-class CPUs, also train faster on
# AVX2 ones (benchmarks/README.md).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

if "google.colab" in sys.modules:
    # An absolute folder, so a second run (now inside notebooks/) finds the first clone.
    root = pathlib.Path(os.environ.get("SQUEEZE_KERAS_HOME", "/content/squeeze-keras"))
    if not (root / "squeeze_keras").is_dir():
        source = os.environ.get("SQUEEZE_KERAS_REPO", REPOSITORY)  # tests: a local checkout
        subprocess.run(["git", "clone", "-q", source, str(root)], check=True)
    # Colab ships TensorFlow, Keras, pandas, matplotlib and Pillow: keep those, add what is
    # missing (tfds needs importlib_resources on every Python but declares it only for old ones).
    needed = {"tensorflow_datasets": "tensorflow-datasets", "importlib_resources": "importlib_resources",
              "ai_edge_litert": "ai-edge-litert"}
    missing = [pip for module, pip in needed.items() if importlib.util.find_spec(module) is None]
    if missing:
        subprocess.run([sys.executable, "-m", "pip", "install", "-q", *missing], check=True)
    os.chdir(root / "notebooks")
else:
    # A checkout: the nearest folder above that holds the package.
    here = pathlib.Path.cwd()
    root = next((p for p in (here, *here.parents) if (p / "squeeze_keras" / "__init__.py").is_file()),
                None)
if root is not None and str(root) not in sys.path:
    sys.path.insert(0, str(root))

if "tensorflow" not in sys.modules and importlib.util.find_spec("tensorflow") is not None:
    # TensorFlow writes a few lines from C++ while its libraries load, before any log level
    # applies ("Could not find cuda drivers" on a machine without a GPU). They go to /dev/null.
    saved_stderr = os.dup(2)
    with open(os.devnull, "w") as devnull:
        os.dup2(devnull.fileno(), 2)
    try:
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved_stderr, 2)
        os.close(saved_stderr)
