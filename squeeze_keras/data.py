"""Loads CIFAR-10/100 (tfds, an image folder or .tar.gz, or synthetic) into fixed-size batches.

Every batch of both splits has exactly `batch_size` rows and is a triple
``(images, labels, sample_weights)``: float32 normalised images of shape
``(batch_size, 32, 32, 3)``, int64 labels and float32 weights, 1 for a real
example and 0 for padding. Only the last batch of a split holds padding
(all-zero images, label 0), so a compiled train or test step sees one shape
and is traced once; Keras `fit`/`evaluate` weight the padding out of the
metrics. Each epoch shows every training image once, and a pass over the test
split evaluates every test image once. `Splits` also keeps the raw uint8
arrays, and `normalize` is the pipelines' normalisation in NumPy.

Preprocessing modes (chosen by the experiment):

- ``"imagenet"`` (baseline): scale to [0, 1], then normalise with the ImageNet
  mean (0.485, 0.456, 0.406) and std (0.229, 0.224, 0.225) that torchvision's
  SqueezeNet examples use. No augmentation.
- ``"cifar"`` (E1 on): scale to [0, 1], normalise with the CIFAR-10 training
  set's per-channel mean (0.4914, 0.4822, 0.4465) and std (0.2470, 0.2435,
  0.2616); on the train split only, a random 32x32 crop of the image padded by
  4 zero pixels, and a random horizontal flip. (The widely copied std
  (0.2023, 0.1994, 0.2010) is a miscomputed value; we use the true one and
  the same constants for CIFAR-100.)

Under Keras's TensorFlow backend every split is a tf.data pipeline,
``shuffle -> map(augment, AUTOTUNE) -> pad -> batch -> map(normalise,
AUTOTUNE) -> prefetch`` (an evaluation split is cached, not shuffled). Under
the JAX or PyTorch backends (where TensorFlow may not be installed) the same
steps run in NumPy in an `ArrayBatches` `keras.utils.PyDataset`: same
normalisation, same kind of augmentation, the same padded batches. Either way
a training epoch's order and augmentation depend only on the seed and the
epoch's number, which `set_epoch` sets: a resumed run goes on with the epoch
it resumes at.

Where the arrays come from (image folders and archives, synthetic data,
hold-out splits) is `squeeze_keras.sources`, and tfds is
`squeeze_keras.tfds_source`; their public names are re-exported here, with
`train_listing`, the names a hold-out digest is made of.
"""

from __future__ import annotations

import dataclasses
import os

import keras
import numpy as np

from squeeze_keras.experiments import DATASETS, PREPROCESSING
from squeeze_keras.sources import (  # noqa: F401  (re-exported: the data API in one place)
    ARCHIVE_SUFFIXES, IMAGE_SHAPE, IMAGE_SUFFIXES, NAMED_SOURCES, DataError, check_holdout,
    folder_arrays, folder_root, folder_source, holdout_identity, holdout_label, holdout_split,
    list_split, source_identity, source_kind, source_label, synthetic_arrays,
)
from squeeze_keras.tfds_source import tfds_arrays

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CROP_PADDING = 4
PIPELINES = ("auto", "tf.data", "numpy")
TEST = "test"


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train and evaluation pipelines, the uint8 arrays behind them, and their sizes.

    `train_size`/`test_size` count real examples (padding excluded);
    `x_train`, `y_train`, `x_test`, `y_test` are the raw uint8 images and
    int64 labels the pipelines were built from (after `limit`). `test` is the
    evaluation split: the source's test split, or, with a hold-out, the
    held-out training images; `evaluation` names which (`"test"` or
    `"train hold-out, 100/class"`), and `holdout` is the split's identity
    (`sources.holdout_identity`). With a hold-out from a source that also has
    a test split, `x_official_test`, `y_official_test` are that split's arrays
    (else `None`), for a separate evaluation after training.
    """

    train: "tf.data.Dataset | ArrayBatches"
    test: "tf.data.Dataset | ArrayBatches"
    dataset: str
    source: str
    classes: int
    train_size: int
    test_size: int
    x_train: np.ndarray | None = None
    y_train: np.ndarray | None = None
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    evaluation: str = TEST
    holdout: dict | None = None
    x_official_test: np.ndarray | None = None
    y_official_test: np.ndarray | None = None


def train_listing(source, classes: int, *, seed=0, data_dir=None):
    """`(names, labels)` of a source's training split, in the order its arrays come in.

    For an image folder or archive the names are relative file names (listed,
    not decoded); for tfds and synthetic data, example indices. The hold-out
    digest (`holdout_identity`) is made of these names.
    """
    kind = source_kind(source)
    if kind == "folder":
        root, shown = folder_root(os.fspath(source))
        if not (root / "train").is_dir():
            raise DataError(f"{shown} has no 'train/' folder. Expected train/<class>/* (and "
                            "test/<class>/*) image folders.")
        files, labels, _ = list_split(root, "train", classes, shown)
        return files, labels
    if kind == "synthetic":
        (_, labels), _ = synthetic_arrays(classes, seed=seed)
    else:
        (_, labels), _ = tfds_arrays(f"cifar{classes}", data_dir)
    return [str(i) for i in range(len(labels))], labels


# ---------------------------------------------------------------- pipelines


def _check_preprocessing(preprocessing):
    if preprocessing not in PREPROCESSING:
        raise ValueError(
            f"`preprocessing` must be one of {PREPROCESSING}. Received: preprocessing={preprocessing!r}"
        )


def _check_batch_size(batch_size):
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) \
            or batch_size < 1:
        raise ValueError(
            f"`batch_size` must be a positive integer. Received: batch_size={batch_size!r}")


def mean_std(preprocessing) -> tuple[tuple, tuple]:
    """The per-channel mean and std (of 0-1 pixels) that `preprocessing` normalises with."""
    _check_preprocessing(preprocessing)
    return (IMAGENET_MEAN, IMAGENET_STD) if preprocessing == "imagenet" else (CIFAR_MEAN, CIFAR_STD)


def _scale_shift(preprocessing):
    """`x * scale + shift` == `(x / 255 - mean) / std`, as float32 per-channel constants."""
    mean, std = mean_std(preprocessing)
    scale = (1 / (255 * np.asarray(std))).astype(np.float32)
    shift = (-np.asarray(mean) / np.asarray(std)).astype(np.float32)
    return scale, shift


def normalize(images, preprocessing) -> np.ndarray:
    """Normalises uint8 images as the pipelines do, in NumPy.

    Args:
        images: uint8 array of shape `(..., 32, 32, 3)`.
        preprocessing: `"imagenet"` or `"cifar"` (see module doc).

    Returns:
        A float32 array of the same shape, `(images / 255 - mean) / std`.
    """
    scale, shift = _scale_shift(preprocessing)
    return np.asarray(images).astype(np.float32) * scale + shift


def _augment(image, seed):
    """Random crop (4-pixel zero padding) and horizontal flip, stateless."""
    import tensorflow as tf

    seeds = tf.random.experimental.stateless_split(seed, 2)
    padded = tf.pad(image, [[CROP_PADDING] * 2, [CROP_PADDING] * 2, [0, 0]])
    image = tf.image.stateless_random_crop(padded, IMAGE_SHAPE, seed=seeds[0])
    return tf.image.stateless_random_flip_left_right(image, seed=seeds[1])


def make_pipeline(images, labels, *, preprocessing="imagenet", training=False,
                  batch_size=64, seed=0):
    """Turns uint8 images and int labels into a batched, normalised tf.data pipeline.

    Evaluation: `cache -> pad -> batch -> map(normalise, AUTOTUNE) -> prefetch`.
    Training: `shuffle -> map(augment, AUTOTUNE) -> pad -> batch -> map(normalise,
    AUTOTUNE) -> prefetch`, augmentation only for `"cifar"` preprocessing. Yields
    `(images, labels, weights)` batches of exactly `batch_size` rows; the last
    is padded with zero images of weight 0.

    A training pipeline's randomness depends on `(seed, epoch)` alone, never on
    TensorFlow's global seed: each pass draws its order, and one crop-and-flip
    key per image, from the stateless key `(seed, epoch)`. `epoch` counts the
    passes (0 first) unless `set_epoch` names the epoch that comes next, as
    `train.fit` does before every epoch: a resumed run then sees the epochs it
    resumes at, not epoch 0's again.
    """
    import tensorflow as tf

    _check_batch_size(batch_size)
    scale, shift = _scale_shift(preprocessing)
    labels = np.asarray(labels, np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    epoch = None
    if training:
        epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="pipeline_epoch")
        images_t, labels_t = tf.constant(images), tf.constant(labels)

        def one_epoch(_):
            # Runs when a pass starts (tf.data iterators start lazily, so an iterator
            # Keras makes and drops never gets here); the next pass is the next epoch.
            key = tf.stack([tf.constant(seed, tf.int64), epoch.assign_add(1) - 1])
            order_key, crop_key = tf.unstack(tf.random.experimental.stateless_split(key, 2))
            order = tf.argsort(tf.random.stateless_uniform([len(labels)], seed=order_key))
            crop_keys = tf.random.stateless_uniform([len(labels), 2], seed=crop_key,
                                                    minval=None, maxval=None, dtype=tf.int64)
            return tf.data.Dataset.from_tensor_slices((
                tf.gather(images_t, order), tf.gather(labels_t, order),
                tf.ones(len(labels)), crop_keys))

        ds = tf.data.Dataset.range(1).flat_map(one_epoch)
        # flat_map hides the size, and Keras needs it (progress bar, steps_per_execution).
        ds = ds.apply(tf.data.experimental.assert_cardinality(len(labels)))
        augment = _augment if preprocessing == "cifar" else lambda image, key: image
        ds = ds.map(lambda x, y, w, key: (augment(x, key), y, w),
                    num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
    else:
        weights = np.ones(len(labels), np.float32)
        ds = tf.data.Dataset.from_tensor_slices((images, labels, weights)).cache()
    # Padding after the shuffle: it always lands in the last batch, never augmented.
    pad = -len(images) % batch_size
    if pad:
        ds = ds.concatenate(tf.data.Dataset.from_tensor_slices((
            np.zeros((pad, *IMAGE_SHAPE), np.uint8), np.zeros(pad, np.int64),
            np.zeros(pad, np.float32))))
    # Normalising whole batches is one vectorised op instead of one per image
    # (measured: the per-image map cost the baseline ~25 % of its training speed).
    ds = ds.batch(batch_size, drop_remainder=True)
    scale, shift = tf.constant(scale), tf.constant(shift)
    ds = ds.map(lambda x, y, w: (tf.cast(x, tf.float32) * scale + shift, y, w),
                num_parallel_calls=tf.data.AUTOTUNE)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.epoch = epoch  # for `set_epoch`; None for an evaluation pipeline
    return ds


class ArrayBatches(keras.utils.PyDataset):
    """The same pipeline as `make_pipeline`, in NumPy, for any Keras backend.

    Batches are `(images, labels, weights)`: normalised float32 images, int
    labels and float32 weights, exactly `batch_size` rows each; the last is
    padded with zero images of weight 0. When `training`, the order is
    reshuffled every epoch and, for `"cifar"` preprocessing, each image gets
    a random crop of its 4-pixel zero-padded copy and a random horizontal
    flip. All randomness comes from `(seed, epoch, batch)`, so a run is
    reproducible and two batches never share a random stream.

    With `raw=True` the images stay uint8, neither augmented nor normalised:
    the model does both on the device (`squeeze_keras.augment`).
    """

    def __init__(self, images, labels, *, preprocessing="imagenet", training=False,
                 batch_size=64, seed=0, raw=False, **kwargs):
        super().__init__(**kwargs)
        _check_batch_size(batch_size)
        self._scale, self._shift = _scale_shift(preprocessing)
        self.images = np.asarray(images, np.uint8)
        self.labels = np.asarray(labels, np.int64)
        if len(self.images) != len(self.labels):
            raise ValueError(f"{len(self.images)} images but {len(self.labels)} labels.")
        self.training, self.batch_size, self.seed = training, int(batch_size), seed
        self.raw = raw
        self.augment = training and preprocessing == "cifar" and not raw
        if self.augment:
            pad = CROP_PADDING
            self._padded = np.pad(self.images, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
        self.epoch = 0
        self._order = self._shuffled()

    def _shuffled(self):
        if not self.training:
            return np.arange(len(self.images))
        return np.random.default_rng([self.seed, self.epoch]).permutation(len(self.images))

    def __len__(self):
        return -(-len(self.images) // self.batch_size)

    def __getitem__(self, index):
        if not 0 <= index < len(self):
            raise IndexError(f"Batch {index} of a dataset with {len(self)} batches.")
        idx = self._order[index * self.batch_size:(index + 1) * self.batch_size]
        n = len(idx)
        images = np.zeros((self.batch_size, *IMAGE_SHAPE), np.uint8)
        if self.augment:
            rng = np.random.default_rng([self.seed, self.epoch, index])
            offsets = rng.integers(0, 2 * CROP_PADDING + 1, size=(n, 2))
            flips = rng.random(n) < 0.5
            height, width = IMAGE_SHAPE[:2]
            for k, (i, (dy, dx), flip) in enumerate(zip(idx, offsets, flips)):
                crop = self._padded[i, dy:dy + height, dx:dx + width]
                images[k] = crop[:, ::-1] if flip else crop
        else:
            images[:n] = self.images[idx]
        labels = np.zeros(self.batch_size, np.int64)
        labels[:n] = self.labels[idx]
        weights = np.zeros(self.batch_size, np.float32)
        weights[:n] = 1
        if self.raw:
            return images, labels, weights
        return images.astype(np.float32) * self._scale + self._shift, labels, weights

    def set_epoch(self, epoch: int) -> None:
        """Makes the coming pass epoch `epoch` (0-based): its order and augmentation."""
        self.epoch = int(epoch)
        self._order = self._shuffled()

    def on_epoch_end(self):
        if self.training:
            self.set_epoch(self.epoch + 1)


def set_epoch(pipeline, epoch: int) -> None:
    """Makes a training pipeline's next pass epoch `epoch` (0-based).

    Its order and augmentation are then those an uninterrupted run sees in
    that epoch. `train.fit` calls this before every epoch, so a run resumed at
    epoch 11 trains on epoch 11's data, not on epoch 1's again. An evaluation
    pipeline is left as it is: it has no randomness.
    """
    if isinstance(epoch, bool) or not isinstance(epoch, (int, np.integer)) or epoch < 0:
        raise ValueError(f"`epoch` must be a non-negative integer. Received: epoch={epoch!r}")
    if isinstance(pipeline, ArrayBatches):
        pipeline.set_epoch(epoch)  # an evaluation one keeps its order: it has no shuffle
    elif getattr(pipeline, "epoch", None) is not None:
        pipeline.epoch.assign(int(epoch))


def resolve_pipeline(pipeline: str = "auto") -> str:
    """`"tf.data"` under Keras's TensorFlow backend, `"numpy"` under the others."""
    if pipeline not in PIPELINES:
        raise ValueError(f"`pipeline` must be one of {PIPELINES}. Received: pipeline={pipeline!r}")
    if pipeline == "auto":
        return "tf.data" if keras.backend.backend() == "tensorflow" else "numpy"
    return pipeline


def load(dataset="cifar10", source="tfds", *, preprocessing="imagenet", batch_size=64,
         seed=0, limit=None, data_dir=None, download=True, synthetic_sizes=(2000, 500),
         pipeline="auto", holdout=None, holdout_seed=0, log=print):
    """Train and evaluation pipelines of CIFAR-10/100 from a named source.

    Args:
        dataset: `"cifar10"` or `"cifar100"`. Defaults to `"cifar10"`.
        source: `"tfds"`, `"synthetic"`, or a path to an image folder with
            `train/<class>/*` and `test/<class>/*` (or a .tar.gz of one).
            Defaults to `"tfds"`.
        preprocessing: `"imagenet"` or `"cifar"` (see module doc).
            Defaults to `"imagenet"`.
        batch_size: rows of every batch of both splits (the last one padded).
            Defaults to `64`.
        seed: seed of shuffling, augmentation, synthetic data and the `limit`
            subset. Defaults to `0`.
        limit: keep a random subset of `limit` examples of each split, drawn
            with `seed` and kept in their original order (smoke runs), or
            `None` for all. Defaults to `None`.
        data_dir: tfds data folder. Defaults to tfds' own.
        download: let tfds download. Defaults to `True`.
        synthetic_sizes: `(train, test)` sizes of the synthetic source.
        pipeline: `"tf.data"`, `"numpy"` (an `ArrayBatches`), or `"auto"`:
            tf.data under Keras's TensorFlow backend, NumPy under the others.
            Defaults to `"auto"`.
        holdout: evaluate on a stratified hold-out of the training images
            instead of the test split: images per class (an integer) or a
            fraction of each class (a float in (0, 1)). Required for a folder
            without `test/`. Defaults to `None` (the test split).
        holdout_seed: seed of the hold-out choice, independent of `seed`, so
            every run sees the same split. Defaults to `0`.
        log: where a note goes when a hold-out replaces an existing test split.

    Returns:
        A `Splits` with the `train` and `test` (evaluation) pipelines (batches
        of `(images, labels, weights)`), the real sizes and the uint8 arrays.
    """
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}. Known datasets: {sorted(DATASETS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None. Received: limit={limit!r}")
    _check_batch_size(batch_size)
    pipeline = resolve_pipeline(pipeline)
    classes = DATASETS[dataset]
    kind = source_kind(source)
    names = None
    if kind == "synthetic":
        (x_train, y_train), (x_test, y_test) = synthetic_arrays(
            classes, *synthetic_sizes, seed=seed)
    elif kind == "tfds":
        (x_train, y_train), (x_test, y_test) = tfds_arrays(dataset, data_dir, download)
    else:
        arrays = folder_source(os.fspath(source), classes)
        x_train, y_train, names = arrays["x_train"], arrays["y_train"], arrays["train_files"]
        if bool(arrays["has_test"]):
            x_test, y_test = arrays["x_test"], arrays["y_test"]
        elif holdout is None:
            raise DataError(
                f"{os.fspath(source)} has no 'test/' folder, so there is nothing to evaluate on: "
                "hold out part of train/ with --holdout N (images per class, e.g. --holdout 100; "
                "Python: holdout=100), or add test/<class>/* images.")
        else:
            x_test = y_test = None
    evaluation, identity, official = TEST, None, None
    if holdout is not None:
        if names is None:
            names = [str(i) for i in range(len(y_train))]
        identity = holdout_identity(names, y_train, holdout, holdout_seed)
        if x_test is not None:
            log(f"--holdout {holdout}: evaluating on {identity['held_out']:,} held-out training "
                f"images; the source's test split ({len(x_test):,} images) is evaluated "
                "separately at the end, not used during training.")
            official = (x_test, y_test)
        train_idx, held_idx = holdout_split(y_train, holdout, holdout_seed)
        x_test, y_test = x_train[held_idx], y_train[held_idx]
        x_train, y_train = x_train[train_idx], y_train[train_idx]
        evaluation = f"train hold-out, {holdout_label(holdout)}"
    if limit is not None:
        # A seeded subset, so a small slice still holds every class.
        rng = np.random.default_rng(seed)
        train_idx = np.sort(rng.permutation(len(x_train))[:limit])
        test_idx = np.sort(rng.permutation(len(x_test))[:limit])
        x_train, y_train = x_train[train_idx], y_train[train_idx]
        x_test, y_test = x_test[test_idx], y_test[test_idx]
        if official is not None:
            keep = np.sort(rng.permutation(len(official[0]))[:limit])
            official = (official[0][keep], official[1][keep])
    kwargs = dict(preprocessing=preprocessing, batch_size=batch_size, seed=seed)
    make = make_pipeline if pipeline == "tf.data" else ArrayBatches
    return Splits(
        train=make(x_train, y_train, training=True, **kwargs),
        test=make(x_test, y_test, training=False, **kwargs),
        dataset=dataset, source=kind, classes=classes,
        train_size=len(x_train), test_size=len(x_test),
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
        evaluation=evaluation, holdout=identity,
        x_official_test=None if official is None else official[0],
        y_official_test=None if official is None else official[1],
    )
