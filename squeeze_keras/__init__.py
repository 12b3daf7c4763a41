"""squeeze_keras: SqueezeNet 1.0 on CIFAR in Keras 3, reproducing a student report's experiments."""

import os

# TensorFlow's C++ start-up chatter (CUDA probes, CPU flags) is noise in notebooks and logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
# TensorFlow turns its oneDNN CPU kernels on by default only on CPUs with AVX-512-class
# features. On the 2-core AVX2 machine of benchmarks/README.md they train E4 faster
# (2.4 vs 2.9 CPU-seconds per batch of 64), so ask for them unless the user chose.
# Takes effect only if TensorFlow is imported after this package.
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from squeeze_keras.experiments import ExperimentConfig, Protocol, get as get_experiment, names as experiment_names
from squeeze_keras.model import Fire, SqueezeNet, fire_module, format_table2, table2

__version__ = "0.1.0"

__all__ = [
    "ExperimentConfig", "Fire", "Protocol", "SqueezeNet", "experiment_names",
    "fire_module", "format_table2", "get_experiment", "table2",
]
