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
``cache -> shuffle -> map(augment, AUTOTUNE) -> pad -> batch -> map(normalise,
AUTOTUNE) -> prefetch``. Under the JAX or PyTorch backends (where TensorFlow
may not be installed) the same steps run in NumPy in an `ArrayBatches`
`keras.utils.PyDataset`: same normalisation, same kind of augmentation, the
same padded batches.

A .tar.gz source is unpacked once into the temp folder (into a temporary
sibling that is renamed into place when complete), and its decoded images are
cached there as an uncompressed `.npz`, written atomically; a corrupt cache is
reported, deleted and rebuilt.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import os
import pathlib
import shutil
import tarfile
import tempfile
import warnings
import zipfile
import zlib

import keras
import numpy as np

from squeeze_keras.experiments import DATASETS, PREPROCESSING
from squeeze_keras.fileio import atomic_path

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CROP_PADDING = 4
IMAGE_SHAPE = (32, 32, 3)
NAMED_SOURCES = ("tfds", "synthetic")
PIPELINES = ("auto", "tf.data", "numpy")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")


class DataError(ValueError):
    """Raised for a dataset that cannot be loaded; says what to do about it."""


@dataclasses.dataclass(frozen=True)
class Splits:
    """Train and test pipelines, the uint8 arrays behind them, and their sizes.

    `train_size`/`test_size` count real examples (padding excluded);
    `x_train`, `y_train`, `x_test`, `y_test` are the raw uint8 images and
    int64 labels the pipelines were built from (after `limit`).
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


# ---------------------------------------------------------------- source names


def _source_kind(source) -> str:
    """`"tfds"`, `"synthetic"` or `"folder"`; refuses anything else."""
    source = os.fspath(source)
    if source in NAMED_SOURCES:
        return source
    if os.sep in source or "/" in source or os.path.exists(source):
        return "folder"
    raise DataError(
        f"Unknown data source {source!r}. Use 'tfds', 'synthetic' or a path to an "
        "image folder (train/<class>/*, test/<class>/*) or its .tar.gz."
    )


def _folder_name(source) -> str:
    return pathlib.Path(os.path.abspath(os.path.expanduser(os.fspath(source)))).name


def source_label(source) -> str:
    """Short label of a data source for metrics: `"tfds"`, `"synthetic"` or `"folder:<name>"`.

    Args:
        source: `"tfds"`, `"synthetic"`, or a path to an image folder or archive.

    Returns:
        The label; for a path, `"folder:"` plus its base name (e.g.
        `"folder:cifar10-jpeg.tar.gz"`).
    """
    kind = _source_kind(source)
    return kind if kind in NAMED_SOURCES else f"folder:{_folder_name(source)}"


def _tree_fingerprint(root: pathlib.Path) -> dict:
    """Number, total bytes and a digest of sorted (relative path, size) of a folder's images.

    One `stat` per file and no reading: about a second for CIFAR's 60,000 files.
    """
    entries, total = [], 0
    stack = [("", os.fspath(root))]
    while stack:
        prefix, folder = stack.pop()
        with os.scandir(folder) as it:
            for entry in it:
                if entry.name.startswith("."):
                    continue
                if entry.is_dir():
                    stack.append((f"{prefix}{entry.name}/", entry.path))
                elif os.path.splitext(entry.name)[1].lower() in IMAGE_SUFFIXES:
                    size = entry.stat().st_size
                    entries.append(f"{prefix}{entry.name}\t{size}\n")
                    total += size
    entries.sort()
    digest = hashlib.sha256("".join(entries).encode()).hexdigest()
    return {"files": len(entries), "bytes": total, "digest": digest[:16]}


def source_identity(source, data_dir=None) -> dict:
    """What identifies a data source, so that a run folder can tell whether its data changed.

    Args:
        source: `"tfds"`, `"synthetic"`, or a path to an image folder or archive.
        data_dir: tfds data folder, recorded for `"tfds"` when given.
            Defaults to `None`.

    Returns:
        `{"source": "tfds"}` (plus `"data_dir"`, resolved, when given),
        `{"source": "synthetic"}`, or for a path `{"source": "folder",
        "name": <base name>, "path": <resolved absolute path>, ...}` with
        `"bytes"` and `"mtime"` (int seconds) for an archive file, or
        `"files"`, `"bytes"` (their total) and `"digest"` (of the sorted
        relative paths and sizes of its images) for a folder.

    Raises:
        DataError: for an unknown name or a path that does not exist.
    """
    kind = _source_kind(source)
    if kind == "tfds":
        identity = {"source": "tfds"}
        if data_dir is not None:
            identity["data_dir"] = str(pathlib.Path(data_dir).expanduser().resolve())
        return identity
    if kind == "synthetic":
        return {"source": "synthetic"}
    path = pathlib.Path(os.fspath(source)).expanduser().resolve()
    if not path.exists():
        raise DataError(f"Data source {os.fspath(source)} does not exist.")
    identity = {"source": "folder", "name": _folder_name(source), "path": str(path)}
    if path.is_dir():
        identity.update(_tree_fingerprint(path))
    else:
        stat = path.stat()
        identity.update(bytes=stat.st_size, mtime=int(stat.st_mtime))
    return identity


# ---------------------------------------------------------------- sources


def synthetic_arrays(classes=10, train_size=2000, test_size=500, seed=0):
    """Deterministic CIFAR-shaped uint8 images with real class signal.

    Each class has its own smooth colour template; an image is its class's
    template, randomly shifted, plus pixel noise. A small CNN separates the
    classes well above chance in a few hundred steps, and nothing is trivial
    (templates overlap, noise is strong).
    """
    rng = np.random.default_rng(seed)
    # Low-frequency templates: 4x4x3 random fields upsampled to 32x32.
    coarse = rng.normal(size=(classes, 4, 4, 3))
    templates = np.kron(coarse, np.ones((1, 8, 8, 1)))

    def make(n, rng):
        labels = rng.integers(0, classes, size=n)
        shifts = rng.integers(-3, 4, size=(n, 2))
        images = np.empty((n, *IMAGE_SHAPE), np.float32)
        for i, (label, (dy, dx)) in enumerate(zip(labels, shifts)):
            images[i] = np.roll(templates[label], (dy, dx), axis=(0, 1))
        images = 128 + 40 * images + 40 * rng.normal(size=images.shape)
        return np.clip(images, 0, 255).astype(np.uint8), labels.astype(np.int64)

    train = make(train_size, np.random.default_rng([seed, 1]))
    test = make(test_size, np.random.default_rng([seed, 2]))
    return train, test


def _read_image(path: pathlib.Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as image:
            array = np.asarray(image.convert("RGB"))
    except Exception as err:  # PIL raises several types for bad files
        raise DataError(f"Cannot read image {path}: {err}") from err
    if array.shape != IMAGE_SHAPE:
        raise DataError(
            f"Image {path} has shape {array.shape}; CIFAR images are {IMAGE_SHAPE}."
        )
    return array


def _extract_archive(archive: pathlib.Path, shown) -> pathlib.Path:
    """Unpacks a .tar.gz image folder once into the temp dir; returns its root.

    The archive goes into a temporary sibling folder that is renamed into
    place only when complete, so an interrupted or failed extraction never
    looks like a finished one. `shown` is the archive as the user named it.
    """
    stat = archive.stat()
    target = pathlib.Path(tempfile.gettempdir()) / (
        f"squeeze_keras_{archive.name.split('.')[0]}_{stat.st_size}_{int(stat.st_mtime)}"
    )
    if target.exists() and not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)  # left by an older, non-atomic version
    if not target.exists():
        partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial",
                                                dir=target.parent))
        try:
            with tarfile.open(archive) as tar:
                tar.extractall(partial, filter="data")
            (partial / ".complete").touch()
            try:
                os.rename(partial, target)
            except OSError:
                if not (target / ".complete").exists():  # not a concurrent loader's copy
                    raise
        except (tarfile.TarError, EOFError, zlib.error, OSError) as err:
            if isinstance(err, OSError) and err.errno is not None:
                raise DataError(
                    f"Cannot unpack {shown} into {target.parent}: {err}") from err
            raise DataError(
                f"Cannot unpack {shown}: the archive is truncated or corrupt "
                f"({type(err).__name__}: {err})."
            ) from err
        finally:
            shutil.rmtree(partial, ignore_errors=True)
    # Accept an archive whose folders sit at the top or one level down.
    if not (target / "train").is_dir():
        subdirs = [p for p in target.iterdir() if (p / "train").is_dir()]
        if len(subdirs) == 1:
            return subdirs[0]
    return target


_CACHE_KEYS = ("x_train", "y_train", "x_test", "y_test", "class_names")


def _read_cache(cache: pathlib.Path, classes: int):
    """The arrays of a decoded-image cache; raises ValueError if it is not a valid one."""
    with np.load(cache, allow_pickle=False) as f:
        missing = [key for key in _CACHE_KEYS if key not in f.files]
        if missing:
            raise ValueError(f"missing arrays {missing}")
        arrays = {key: f[key] for key in _CACHE_KEYS}
    names = tuple(str(n) for n in arrays["class_names"])
    if len(names) != classes:
        raise ValueError(f"{len(names)} class names for {classes} classes")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or y.shape != x.shape[:1]:
            raise ValueError(f"{split} arrays have shapes {x.shape} {x.dtype} and {y.shape}")
        if y.dtype != np.int64 or (len(y) and (y.min() < 0 or y.max() >= classes)):
            raise ValueError(f"{split} labels are not int64 in [0, {classes})")
    return ((arrays["x_train"], arrays["y_train"]), (arrays["x_test"], arrays["y_test"]), names)


def _cached_folder_arrays(root: pathlib.Path, classes: int, shown):
    """`folder_arrays` of an unpacked archive, through an `.npz` cache beside it."""
    # Decoding 60,000 JPEGs takes most of a minute; loading the uncompressed cache, a fraction
    # of a second.
    cache = root / f".arrays_{classes}.npz"
    if cache.exists():
        try:
            return _read_cache(cache, classes)
        except (zipfile.BadZipFile, ValueError, EOFError, KeyError, OSError) as err:
            warnings.warn(
                f"Decoded-image cache {cache} is unreadable ({type(err).__name__}: {err}); "
                "deleting it and decoding the images again.", stacklevel=3)
            cache.unlink(missing_ok=True)
    train, test, class_names = _folder_arrays(root, classes, shown)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:  # a file object: no ".npz" appended
        np.savez(f, x_train=train[0], y_train=train[1], x_test=test[0], y_test=test[1],
                 class_names=np.array(class_names))
    return train, test, class_names


def folder_arrays(path, classes: int):
    """Reads `train/<class>/*` and `test/<class>/*` (PNG/JPEG) into uint8 arrays.

    `path` is a folder or a .tar.gz/.tgz/.tar of one (unpacked once into the
    temp folder, its decoded arrays cached there). Class ids follow the sorted
    class-folder names (CIFAR's own label order for CIFAR-10). Returns
    `((x_train, y_train), (x_test, y_test), class_names)`.
    """
    root = pathlib.Path(path)
    if root.is_file() and root.name.endswith(ARCHIVE_SUFFIXES):
        return _cached_folder_arrays(_extract_archive(root, path), classes, path)
    if not root.exists():
        raise DataError(
            f"Data folder {root} does not exist. Expected train/<class>/* and "
            "test/<class>/* image folders (or a .tar.gz of them)."
        )
    return _folder_arrays(root, classes, root)


def _folder_arrays(root: pathlib.Path, classes: int, shown):
    """Decodes an image folder; errors name `shown` (the folder or archive the user gave)."""
    kind = "Archive" if shown != root else "Data folder"

    def name(path):  # as the user knows it: inside `shown`, not the temp folder
        relative = path.relative_to(root)
        return f"{shown}" if relative == pathlib.Path() else f"{shown}/{relative.as_posix()}"

    splits, class_names = [], None
    for split in ("train", "test"):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DataError(
                f"{kind} {shown} has no '{split}/' folder. Expected "
                "train/<class>/* and test/<class>/* image folders."
            )
        names = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
        if len(names) != classes:
            raise DataError(
                f"{name(split_dir)} has {len(names)} class folders, but the dataset has "
                f"{classes} classes. Check the folder or the dataset name."
            )
        if class_names is not None and names != class_names:
            raise DataError(f"train/ and test/ of {shown} have different class folders.")
        class_names = names
        paths, labels = [], []
        for label, class_name in enumerate(names):
            files = sorted(
                p for p in (split_dir / class_name).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES
            )
            if not files:
                raise DataError(
                    f"Class folder {name(split_dir / class_name)} holds no PNG or JPEG images.")
            paths.extend(files)
            labels.extend([label] * len(files))
        # Pillow decodes outside the GIL, so threads use every core.
        with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
            images = list(pool.map(_read_image, paths, chunksize=256))
        splits.append((np.stack(images), np.asarray(labels, np.int64)))
    return splits[0], splits[1], tuple(class_names)


def _import_error_in(err: BaseException) -> ImportError | None:
    """The ImportError that `err` is or was raised from, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ImportError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def tfds_arrays(dataset: str, data_dir=None, download=True):
    """Loads a tfds CIFAR dataset into uint8 arrays (what Colab users get).

    A dataset not yet prepared in `data_dir` needs the network; without it this fails at once
    with a one-line `DataError` that says so.
    """
    offline = ("pass an image folder (train/<class>/*, test/<class>/*) or its .tar.gz as "
               "the source, e.g. `python -m squeeze_keras train e4 --data path/to/cifar10`.")
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(
            f"The 'tfds' source needs tensorflow-datasets, but importing it failed: module "
            f"{err.name!r} is missing or broken ({type(err).__name__}: {err}). Install it "
            f"(`pip install tensorflow-datasets`), or {offline}"
        ) from err

    def network_error_in(err):
        # requests and urllib keep the socket's error (no DNS, refused, timed out) in the chain.
        import socket

        seen = set()
        while err is not None and id(err) not in seen:
            if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror)):
                return err
            seen.add(id(err))
            err = err.__cause__ or err.__context__
        return None

    def no_network(reason):
        return DataError(
            f"tfds could not download {dataset!r}: no network ({' '.join(str(reason).split())}). "
            "Run where tfds can download, point `data_dir` (`--data-dir`, or $TFDS_DATA_DIR) at "
            "a prepared tfds folder, or " + offline)

    def load(download):
        return tfds.load(dataset, split=["train", "test"], as_supervised=True,
                         data_dir=data_dir, download=download)

    try:
        try:
            splits = load(download=False)  # prepared before: no network needed
        except Exception as err:
            if not download or _import_error_in(err) is not None:
                raise
            # tfds retries a failed download for minutes; without network, say so at once.
            builder = tfds.builder(dataset, data_dir=data_dir)
            urls = sorted(builder.url_infos or ())
            downloads = os.path.join(os.fspath(builder.data_dir_root), "downloads")
            kept = [name for folder in ("", dataset, "extracted")  # where tfds keeps downloads
                    if os.path.isdir(os.path.join(downloads, folder))
                    for name in os.listdir(os.path.join(downloads, folder))]
            cached = any(u.rsplit("/", 1)[-1].split(".")[0] in name for u in urls for name in kept)
            if urls and not cached:
                import requests

                try:
                    requests.head(urls[0], timeout=10, allow_redirects=True)
                except (requests.ConnectionError, requests.Timeout) as probe:
                    if not isinstance(probe, requests.exceptions.SSLError):
                        host = urls[0].split("/")[2]
                        raise no_network(f"cannot reach {host}: "
                                         f"{network_error_in(probe) or probe}") from probe
            splits = load(download=True)
        # Batches of 10,000: tfds' `batch_size=-1` is one batch of the recorded split size, and
        # without one (a mocked dataset) a batch of sys.maxsize that aborts the process.
        arrays = []
        for split in splits:
            xs, ys = zip(*tfds.as_numpy(split.batch(10_000)))
            arrays.append((np.concatenate(xs), np.concatenate(ys).astype(np.int64)))
    except DataError:
        raise
    except Exception as err:  # tfds wraps network and file errors many ways
        missing = _import_error_in(err)
        if missing is not None:
            raise DataError(
                f"tfds could not load {dataset!r}: it needs module {missing.name!r}, which is "
                f"missing or broken ({type(missing).__name__}: {missing}). Install that module, "
                f"or {offline}"
            ) from err
        network = network_error_in(err)
        if network is not None:
            raise no_network(network) from err
        raise DataError(
            f"tfds could not load {dataset!r} ({type(err).__name__}: "
            f"{' '.join(str(err).split())}). Without internet, point `data_dir` at a prepared "
            "tfds folder, or " + offline
        ) from err
    return arrays[0], arrays[1]


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


def _scale_shift(preprocessing):
    """`x * scale + shift` == `(x / 255 - mean) / std`, as float32 per-channel constants."""
    _check_preprocessing(preprocessing)
    mean, std = (IMAGENET_MEAN, IMAGENET_STD) if preprocessing == "imagenet" else (CIFAR_MEAN, CIFAR_STD)
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

    `cache -> shuffle -> map(augment, AUTOTUNE) -> pad -> batch -> map(normalise) ->
    prefetch`; shuffling and augmentation only when `training`, both seeded by
    `seed`. Yields `(images, labels, weights)` batches of exactly `batch_size`
    rows; the last is padded with zero images of weight 0.
    """
    import tensorflow as tf

    _check_batch_size(batch_size)
    scale, shift = _scale_shift(preprocessing)
    labels = np.asarray(labels, np.int64)
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels.")
    augment = training and preprocessing == "cifar"
    weights = np.ones(len(labels), np.float32)
    ds = tf.data.Dataset.from_tensor_slices((images, labels, weights)).cache()
    if training:
        ds = ds.shuffle(len(images), seed=seed, reshuffle_each_iteration=True)
    if augment:
        # One stateless seed per element, fresh each epoch, reproducible from `seed`.
        seeds = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True).batch(2)
        ds = tf.data.Dataset.zip((ds, seeds)).map(
            lambda xyw, s: (_augment(xyw[0], s), xyw[1], xyw[2]),
            num_parallel_calls=tf.data.AUTOTUNE, deterministic=True,
        )
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
    return ds.prefetch(tf.data.AUTOTUNE)


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

    def on_epoch_end(self):
        if self.training:
            self.epoch += 1
            self._order = self._shuffled()


def resolve_pipeline(pipeline: str = "auto") -> str:
    """`"tf.data"` under Keras's TensorFlow backend, `"numpy"` under the others."""
    if pipeline not in PIPELINES:
        raise ValueError(f"`pipeline` must be one of {PIPELINES}. Received: pipeline={pipeline!r}")
    if pipeline == "auto":
        return "tf.data" if keras.backend.backend() == "tensorflow" else "numpy"
    return pipeline


def load(dataset="cifar10", source="tfds", *, preprocessing="imagenet", batch_size=64,
         seed=0, limit=None, data_dir=None, download=True, synthetic_sizes=(2000, 500),
         pipeline="auto"):
    """Train and test pipelines of CIFAR-10/100 from a named source.

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

    Returns:
        A `Splits` with the `train` and `test` pipelines (batches of
        `(images, labels, weights)`), the real sizes and the uint8 arrays.
    """
    if dataset not in DATASETS:
        raise DataError(f"Unknown dataset {dataset!r}. Known datasets: {sorted(DATASETS)}")
    if limit is not None and (not isinstance(limit, int) or limit < 1):
        raise ValueError(f"`limit` must be a positive integer or None. Received: limit={limit!r}")
    _check_batch_size(batch_size)
    pipeline = resolve_pipeline(pipeline)
    classes = DATASETS[dataset]
    kind = _source_kind(source)
    if kind == "synthetic":
        (x_train, y_train), (x_test, y_test) = synthetic_arrays(
            classes, *synthetic_sizes, seed=seed)
    elif kind == "tfds":
        (x_train, y_train), (x_test, y_test) = tfds_arrays(dataset, data_dir, download)
    else:
        (x_train, y_train), (x_test, y_test), _ = folder_arrays(os.fspath(source), classes)
    if limit is not None:
        # A seeded subset, so a small slice still holds every class.
        rng = np.random.default_rng(seed)
        train_idx = np.sort(rng.permutation(len(x_train))[:limit])
        test_idx = np.sort(rng.permutation(len(x_test))[:limit])
        x_train, y_train = x_train[train_idx], y_train[train_idx]
        x_test, y_test = x_test[test_idx], y_test[test_idx]
    kwargs = dict(preprocessing=preprocessing, batch_size=batch_size, seed=seed)
    make = make_pipeline if pipeline == "tf.data" else ArrayBatches
    return Splits(
        train=make(x_train, y_train, training=True, **kwargs),
        test=make(x_test, y_test, training=False, **kwargs),
        dataset=dataset, source=kind, classes=classes,
        train_size=len(x_train), test_size=len(x_test),
        x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test,
    )
