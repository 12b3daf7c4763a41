"""squeeze_keras: SqueezeNet 1.0 on CIFAR in Keras 3, reproducing a student report's experiments.

The names below are imported on first use, so that `import squeeze_keras`
(and the command line) can set up the environment before Keras and its
backend load.
"""

import importlib

__version__ = "0.1.0"

_EXPORTS = {
    "ExperimentConfig": ("experiments", "ExperimentConfig"),
    "Protocol": ("experiments", "Protocol"),
    "get_experiment": ("experiments", "get"),
    "experiment_names": ("experiments", "names"),
    "Fire": ("model", "Fire"),
    "ModelConfig": ("model", "ModelConfig"),
    "fire_family": ("model", "fire_family"),
    "SqueezeNet": ("model", "SqueezeNet"),
    "fire_module": ("model", "fire_module"),
    "format_table2": ("model", "format_table2"),
    "table2": ("model", "table2"),
    "preprocess_input": ("pretrained", "preprocess_input"),
    "decode_predictions": ("pretrained", "decode_predictions"),
    "weights_info": ("pretrained", "weights_info"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'squeeze_keras' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    return getattr(importlib.import_module(f"squeeze_keras.{module}"), attr)


def __dir__():
    return sorted([*globals(), *_EXPORTS])
