"""Classifying image files: reading and resizing them, and the three kinds of model that can do it.

What `python -m squeeze_keras predict` does. An image file of any size is
read by the training loader's reader (`sources.read_image`, Pillow: PNG and
JPEG, anything else Pillow reads too): turned as its EXIF orientation says,
made RGB (grayscale replicated to three channels, transparency composited
onto white, 16-bit grayscale scaled to 8 bits; 32-bit integer or float
pixels and images over Pillow's size limit refused), then cropped to its
largest centred square and resized to 32x32 with Pillow's bicubic filter,
which averages over the source pixels when it shrinks (antialiased).
`docs/model.md` gives the rules. The model is one of:

- named weights that ship with the package (`"cifar10"`), with
  `pretrained.preprocess_input`;
- a run folder (`results/e4_tuned2`, `runs/...`), rebuilt from its stored
  config (`runs.load_trained_model`) and normalised as it was trained;
- a `.tflite` file made by `export`, run by the LiteRT interpreter (uint8
  input and output of the full-integer model quantised and dequantised as
  its tensors say). Its preprocessing is that of the run folder it lies in
  (`RUN/litert/int8.tflite`), else that of the `"cifar10"` weights.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import pathlib
import sys
from typing import Callable

import keras
import numpy as np

from squeeze_keras import classes as classes_lib
from squeeze_keras import data as data_lib
from squeeze_keras import pretrained, runs, sources
from squeeze_keras.model import SqueezeNet
from squeeze_keras.sources import ImageError

IMAGE_SIZE = 32
RESIZE_METHOD = ("centre-cropped to a square, then resized to 32x32 with Pillow's bicubic "
                 "filter (antialiased); grayscale made RGB, transparency composited onto white")


def read_image(path) -> np.ndarray:
    """An image file as a 32x32 RGB uint8 array (see the module doc for how it is resized).

    Read by the training loader's reader (`sources.read_image`: EXIF
    orientation, transparency, 16-bit and 32-bit images alike), then cropped
    and resized.

    Raises:
        ImageError: the file does not exist, is a folder, is not an image, or
            is one `sources.read_image` refuses (32-bit pixels, over Pillow's
            size limit).
    """
    from PIL import Image

    image = Image.fromarray(sources.read_image(path))
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    image = image.crop((left, top, left + side, top + side))
    image = image.resize((IMAGE_SIZE, IMAGE_SIZE), Image.Resampling.BICUBIC)
    return np.asarray(image, np.uint8)


@contextlib.contextmanager
def native_output_silenced():
    """Sends file descriptors 1 and 2 to /dev/null while the block runs.

    For the lines that TensorFlow's converter and the LiteRT interpreter print
    from C++ ("fully_quantize: 0, ...", "Created TensorFlow Lite XNNPACK
    delegate for CPU"), which no log level reaches.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 1)
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        for fd, copy in zip((1, 2), saved):
            os.dup2(copy, fd)
            os.close(copy)


def _predict(model, images, batch_size=256) -> np.ndarray:
    # Eager calls: no tf.function is traced for a few images, nor retraced for each new model.
    return np.concatenate([keras.ops.convert_to_numpy(model(images[i:i + batch_size], training=False))
                           for i in range(0, len(images), batch_size)])


@dataclasses.dataclass
class Classifier:
    """Turns uint8 RGB images `(n, 32, 32, 3)` into class probabilities `(n, classes)`."""

    predict: Callable[[np.ndarray], np.ndarray]
    class_names: tuple[str, ...]
    description: str


def _from_named(name: str) -> Classifier:
    info = pretrained.weights_info(name)
    model = SqueezeNet(weights=name, classes=info.get("classes", 10))

    def predict(images):
        return _predict(model, pretrained.preprocess_input(images, name))

    return Classifier(predict, classes_lib.class_names(info["dataset"]),
                      f"weights={name!r} ({info['run']}, top-1 {info['top1']:.2f} % on the "
                      f"{info.get('evaluation', 'test')} split)")


def _from_run(run_dir: pathlib.Path) -> Classifier:
    config, model = runs.load_trained_model(run_dir)

    def predict(images):
        return _predict(model, data_lib.normalize(images, config.preprocessing))

    return Classifier(predict, classes_lib.class_names(config.dataset),
                      f"run folder {run_dir} ({config.name}, {config.protocol.name})")


def _from_tflite(path: pathlib.Path) -> Classifier:
    from squeeze_keras import export  # TensorFlow and LiteRT: only for .tflite files

    content = path.read_bytes()
    # RUN/litert/<form>.tflite (or RUN/pruned60/litert/...): the run folder says how it was trained.
    run_dir = next((p for p in (path.parent, path.parent.parent) if (p / "config.json").is_file()),
                   None)
    if run_dir is not None:
        config = runs.stored_config(run_dir)  # a config.json it cannot read is named
        preprocessing, dataset, origin = config.preprocessing, config.dataset, f"run {run_dir.name}"
    else:
        info = pretrained.weights_info("cifar10")
        preprocessing, dataset = info["preprocessing"]["name"], info["dataset"]
        origin = "preprocessing of the cifar10 weights"

    def predict(images):
        with native_output_silenced():
            return export.predict(content, data_lib.normalize(images, preprocessing),
                                  batch_size=min(len(images), 250))

    return Classifier(predict, classes_lib.class_names(dataset), f"LiteRT model {path} ({origin})")


def load_classifier(weights="cifar10") -> Classifier:
    """A classifier from named weights, a run folder or a `.tflite` file.

    Raises:
        ValueError: `weights` is none of these.
        FileNotFoundError: a run folder without a finished model.
    """
    if isinstance(weights, str) and weights in pretrained.names():
        return _from_named(weights)
    path = pathlib.Path(weights)
    if path.is_dir():
        return _from_run(path)
    if path.suffix == ".tflite" and path.is_file():
        return _from_tflite(path)
    raise ValueError(
        f"`--weights` must be one of {pretrained.available()} (weights that ship with the "
        "package), a run folder (e.g. results/e4_tuned2) or a .tflite file made by `export`. "
        f"Received: {weights}")


def classify_files(paths, classifier: Classifier, top: int = 5) -> list[dict]:
    """Classifies image files; one result per path, in order.

    Returns:
        Dicts `{"image": path, "predictions": [(class_name, probability), ...]}`
        (most probable first) or `{"image": path, "error": message}` for a
        file that could not be read; the others are still classified.
    """
    results, images, readable = [], [], []
    for path in paths:
        try:
            images.append(read_image(path))
            readable.append(len(results))
            results.append({"image": str(path)})
        except ImageError as err:
            results.append({"image": str(path), "error": err.reason})
    if images:
        probabilities = classifier.predict(np.stack(images))
        for index, decoded in zip(readable, pretrained.decode_predictions(probabilities, top)):
            results[index]["predictions"] = decoded
    return results


def format_result(result: dict) -> str:
    """One line: `path: cat 0.812, dog 0.102, ...`, or `path: error: ...`."""
    if "error" in result:
        return f"{result['image']}: error: {result['error']}"
    return f"{result['image']}: " + ", ".join(
        f"{name} {probability:.3f}" for name, probability in result["predictions"])
