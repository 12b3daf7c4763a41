"""Trained weights that ship inside the package, their preprocessing and their class names.

`squeeze_keras/weights/weights.json` is the registry of named weights: for
each name (`"cifar10"`, `"cifar100"`), the `.weights.h5` file beside it
and its SHA-256, the run it was extracted from (folder, protocol, top-1, data,
epochs, hardware), the architecture it fits and the preprocessing it was
trained with. `tools/package_weights.py` adds named weights from a finished run. An entry
with `"available": false` names weights that do not exist yet, and says why.

Nothing here needs Keras: `SqueezeNet(weights=...)` (`squeeze_keras.model`)
builds the model from the registry's architecture and loads the file that
`weights_file` has checked; `preprocess_input` and `decode_predictions` are
NumPy.
"""

from __future__ import annotations

import copy
import functools
import hashlib
import json
import pathlib

import numpy as np

from squeeze_keras import classes as classes_lib

WEIGHTS_DIR = pathlib.Path(__file__).resolve().parent / "weights"
REGISTRY_FILE = WEIGHTS_DIR / "weights.json"


@functools.cache
def _registry() -> dict:
    return json.loads(REGISTRY_FILE.read_text())


def names() -> list[str]:
    """Names of the registered weights, available or not (e.g. `["cifar10", "cifar100"]`)."""
    return list(_registry())


def available() -> list[str]:
    """Names of the weights that ship with this version of the package."""
    return [name for name, entry in _registry().items() if entry["available"]]


def weights_info(name: str = "cifar10") -> dict:
    """What named weights are: the run they come from, its top-1, protocol, data and hardware.

    Args:
        name: a registered name, e.g. `"cifar10"`. Defaults to `"cifar10"`.

    Returns:
        A copy of the registry entry: `available`, `dataset`, `classes`,
        `experiment` (the architecture, a registered experiment), and for
        available weights `run` (the run folder in the repository),
        `protocol`, `seed`, `epochs`, `top1`, `top5` (%, on `evaluated_on`),
        `params`, `top1_flip_tta` (with test-time flip, for runs that
        recorded it), `data`, `precision`, `hardware`, `preprocessing` (name,
        mean, std), `architecture`, `file`, `sha256`, and `path` (where the
        file is on this machine). Weights not available yet have a `note`
        saying why.

    Raises:
        ValueError: an unknown name.
    """
    if not isinstance(name, str) or name not in _registry():
        raise ValueError(f"`name` must be one of {names()}. Received: name={name!r}")
    info = copy.deepcopy(_registry()[name])
    info["name"] = name
    if info["available"]:
        info["path"] = str(WEIGHTS_DIR / info["file"])
    return info


def _sha256(path: pathlib.Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def weights_file(name: str) -> pathlib.Path:
    """The checked `.weights.h5` file of named weights.

    Raises:
        ValueError: an unknown name, weights not available yet (with the
            reason), a missing file, or a file whose SHA-256 is not the
            registered one (damaged or replaced).
    """
    if name not in _registry():
        raise ValueError(
            "The `weights` argument should be either `None` (random initialization), one of "
            f"{available()} (named weights that ship with squeeze_keras), or the path of a "
            f".weights.h5 file. Received: weights={name!r}")
    entry = _registry()[name]
    if not entry["available"]:
        raise ValueError(
            f"weights={name!r} are not available yet: {entry['note']}. "
            f"Available weights: {available()}.")
    path = WEIGHTS_DIR / entry["file"]
    if not path.is_file():
        raise ValueError(
            f"The file of weights={name!r} is missing ({path}): reinstall squeeze-keras.")
    digest = _sha256(path)
    if digest != entry["sha256"]:
        raise ValueError(
            f"The file of weights={name!r} ({path}) has SHA-256 {digest}, not the registered "
            f"{entry['sha256']}: it is damaged or was replaced. Reinstall squeeze-keras.")
    return path


def _preprocessing(weights: str) -> tuple[np.ndarray, np.ndarray]:
    """`x * scale + shift` == `(x / 255 - mean) / std` as float32, as `data.normalize` computes it."""
    info = weights_info(weights)
    if "preprocessing" not in info:
        raise ValueError(f"weights={weights!r} are not available yet: {info['note']}.")
    mean = np.asarray(info["preprocessing"]["mean"])
    std = np.asarray(info["preprocessing"]["std"])
    return (1 / (255 * std)).astype(np.float32), (-mean / std).astype(np.float32)


def preprocess_input(images, weights: str = "cifar10") -> np.ndarray:
    """Normalises RGB images exactly as the named weights were trained: `(x / 255 - mean) / std`.

    For `"cifar10"` the mean is CIFAR-10's per-channel (0.4914, 0.4822,
    0.4465) and the std (0.2470, 0.2435, 0.2616) (`squeeze_keras.data`'s
    `"cifar"` preprocessing), computed in float32 as training computed it.

    Args:
        images: uint8 or float RGB values in [0, 255], any shape whose last
            axis is the 3 channels: one image `(32, 32, 3)`, a batch
            `(n, 32, 32, 3)`, or any leading batch axes.
        weights: the named weights whose preprocessing to apply. Defaults to
            `"cifar10"`.

    Returns:
        A float32 array of the same shape.
    """
    x = np.asarray(images)
    if x.ndim < 1 or x.shape[-1] != 3:
        raise ValueError(
            "`images` must be RGB, with 3 channels on the last axis. "
            f"Received: images with shape {x.shape}")
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise ValueError(f"`images` must be integers or floats in [0, 255]. Received dtype {x.dtype}")
    scale, shift = _preprocessing(weights)
    return x.astype(np.float32) * scale + shift


def decode_predictions(preds, top: int = 5) -> list[list[tuple[str, float]]]:
    """The `top` most probable classes of each image, as `(class_name, probability)` pairs.

    The class names are CIFAR-10's for 10 columns, CIFAR-100's fine classes
    for 100. Ties keep the classes' label order.

    Args:
        preds: probabilities (the output of a model with named weights),
            shape `(samples, 10)` or `(samples, 100)`.
        top: how many classes per image, from 1 to the number of classes.
            Defaults to `5`.

    Returns:
        One list per image, most probable first.
    """
    preds = np.asarray(preds)
    by_width = {10: classes_lib.class_names("cifar10"), 100: classes_lib.class_names("cifar100")}
    if preds.ndim != 2 or preds.shape[1] not in by_width:
        raise ValueError(
            "`decode_predictions` expects a batch of predictions (a 2D array of shape "
            f"(samples, 10) or (samples, 100)). Received: preds with shape {preds.shape}")
    class_names = by_width[preds.shape[1]]
    if isinstance(top, bool) or not isinstance(top, (int, np.integer)) or not \
            1 <= top <= len(class_names):
        raise ValueError(f"`top` must be an integer in [1, {len(class_names)}]. Received: top={top!r}")
    order = np.argsort(-preds, axis=1, kind="stable")[:, :top]
    return [[(class_names[i], float(p[i])) for i in row] for p, row in zip(preds, order)]
