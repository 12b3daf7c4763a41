"""Where the images come from: an image folder or archive, or synthetic data (tfds:
`squeeze_keras.tfds_source`).

A source gives uint8 arrays (`N x 32 x 32 x 3`) and int64 labels;
`squeeze_keras.data` turns them into pipelines. This module also says what a
source is (`source_identity`, `source_label`), and holds the hold-out split
(`holdout_split`): a stratified, seeded part of the training images used as
the evaluation split, for sources without a test split (CIFAR-100's training
images) or by choice.

An image folder has `train/<class>/*` and, optionally, `test/<class>/*` (PNG
or JPEG); class ids follow the sorted class-folder names, and files are read in
sorted order, so a folder always gives the same arrays in the same order.
Nothing beside `train/` and `test/` is read. An archive (`.tar.gz`, `.tgz`,
`.tar`) is unpacked once into the temp folder, into a folder named by the
SHA-256 of its content (so two archives never share one), through a temporary
sibling renamed into place when complete; its decoded images are cached there
as an uncompressed `.npz`, written atomically. A corrupt cache is reported,
deleted and rebuilt; the leftovers of a process killed while unpacking or
writing a cache are removed by the next load.
"""

from __future__ import annotations

import concurrent.futures
import functools
import hashlib
import os
import pathlib
import shutil
import sys
import tarfile
import tempfile
import time
import warnings
import zipfile
import zlib

import numpy as np

from squeeze_keras.fileio import atomic_path

IMAGE_SHAPE = (32, 32, 3)
NAMED_SOURCES = ("tfds", "synthetic")
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Decoding more images than this takes over ~10 s on a 2-core CPU: show progress.
PROGRESS_ABOVE = 5000


class DataError(ValueError):
    """Raised for a dataset that cannot be loaded; says what to do about it."""


# ---------------------------------------------------------------- source names


def source_kind(source) -> str:
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
    kind = source_kind(source)
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
    kind = source_kind(source)
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


def file_digest(path) -> str:
    """The first 16 hex digits of a file's SHA-256, cached per path and file state.

    The state is the size, modification and change times (ns), device and
    inode: a file replaced at the same path (a new inode) or rewritten in place
    (a new change time, which no user can set back) is read again even when its
    size and modification time are the old ones.
    """
    stat = os.stat(path)
    return _file_digest(os.fspath(path), (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns,
                                          stat.st_dev, stat.st_ino))


@functools.cache
def _file_digest(path: str, state: tuple) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


# ---------------------------------------------------------------- synthetic


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


# ---------------------------------------------------------------- image folders


class ImageError(DataError):
    """An image file that cannot be read; `reason` says why without naming the file."""

    def __init__(self, path, reason: str):
        super().__init__(f"Image {path}: {reason}")
        self.path, self.reason = pathlib.Path(path), reason


def read_image(path) -> np.ndarray:
    """One image file as a uint8 RGB array of its own size: the reader of training and `predict`.

    The EXIF orientation is applied (the image as a viewer shows it); palette,
    grayscale and CMYK images become RGB; transparency is composited onto
    white; 16-bit grayscale is scaled to 8 bits (0..65535 -> 0..255), not
    clipped. PIL's 32-bit integer and float modes are refused by name: their
    value range is not knowable from the file. So is an image over Pillow's
    size limit (`PIL.Image.MAX_IMAGE_PIXELS` twice over: a possible
    decompression bomb).

    Raises:
        ImageError: the file is missing, a folder, not an image, or one of the above.
    """
    from PIL import Image, ImageOps

    path = pathlib.Path(path)
    if path.is_dir():
        raise ImageError(path, "a directory, not an image file")
    if not path.exists():
        raise ImageError(path, "no such file")
    try:
        with Image.open(path) as image:
            image = ImageOps.exif_transpose(image)
            if image.mode.startswith("I;16"):
                wide = np.asarray(image).astype(np.uint32)
                gray = ((wide * 255 + 32767) // 65535).astype(np.uint8)  # 0..65535 -> 0..255
                return np.repeat(gray[..., None], 3, axis=-1)
            if image.mode in ("I", "F"):
                kind = "integer" if image.mode == "I" else "float"
                raise ImageError(
                    path, f"32-bit {kind} pixels (PIL mode {image.mode!r}), whose range the file "
                    "does not say; convert it to 8- or 16-bit RGB or grayscale PNG/JPEG.")
            if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
                rgba = image.convert("RGBA")
                image = Image.alpha_composite(Image.new("RGBA", rgba.size, "white"), rgba)
            return np.asarray(image.convert("RGB"))
    except ImageError:
        raise
    except Image.DecompressionBombError as err:
        raise ImageError(path, f"over Pillow's size limit ({err}); scale it down first, e.g. "
                               "to at most 4,000 pixels a side.") from None
    except Exception as err:  # PIL raises several types for bad files
        raise ImageError(path, f"not an image that Pillow can read ({err})") from None


def _read_cifar_image(path: pathlib.Path) -> np.ndarray:
    array = read_image(path)
    if array.shape != IMAGE_SHAPE:
        raise DataError(
            f"Image {path} has shape {array.shape}; CIFAR images are {IMAGE_SHAPE}."
        )
    return array


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _sweep_extraction_leftovers(folder: pathlib.Path) -> None:
    """Removes partial extractions whose process is gone (`.<name>.<pid>.<random>.partial`)."""
    for partial in folder.glob(".squeeze_keras_*.partial"):
        parts = partial.name.split(".")
        pid = int(parts[2]) if len(parts) > 3 and parts[2].isdigit() else None
        if pid is None or not _alive(pid):
            shutil.rmtree(partial, ignore_errors=True)


def _sweep_cache_leftovers(root: pathlib.Path) -> None:
    """Removes temporary cache files (`.arrays_*.npz.*.tmp`) left by a killed writer.

    A writer renames its file within seconds; one older than a minute is a leftover.
    """
    for tmp in root.glob(".arrays_*.npz.*.tmp"):
        try:
            if time.time() - tmp.stat().st_mtime > 60:
                tmp.unlink()
        except OSError:
            pass


def _extract_archive(archive: pathlib.Path, shown) -> pathlib.Path:
    """Unpacks an archive of an image folder once into the temp dir; returns its root.

    The folder is named by the archive's content digest, so two archives with
    the same name, size and time never share one. The archive goes into a
    temporary sibling folder that is renamed into place only when complete,
    so an interrupted or failed extraction never looks like a finished one.
    `shown` is the archive as the user named it.
    """
    parent = pathlib.Path(tempfile.gettempdir())
    target = parent / f"squeeze_keras_{file_digest(archive)}"
    _sweep_extraction_leftovers(parent)
    if target.exists() and not (target / ".complete").exists():
        shutil.rmtree(target, ignore_errors=True)  # left by an older, non-atomic version
    if not target.exists():
        partial = pathlib.Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}.",
                                                suffix=".partial", dir=parent))
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


def _is_archive(path: pathlib.Path) -> bool:
    return path.is_file() and path.name.endswith(ARCHIVE_SUFFIXES)


def folder_root(path) -> tuple[pathlib.Path, str]:
    """The image folder of a source path (an archive unpacked) and how errors name it."""
    root = pathlib.Path(path)
    if _is_archive(root):
        return _extract_archive(root, path), f"Archive {path}"
    if not root.exists():
        raise DataError(
            f"Data folder {root} does not exist. Expected train/<class>/* (and test/<class>/*) "
            "image folders, or a .tar.gz of them."
        )
    return root, f"Data folder {root}"


def list_split(root: pathlib.Path, split: str, classes: int, shown: str):
    """`(relative file names, labels, class names)` of `root/<split>/<class>/*`, sorted.

    Raises:
        DataError: the split has another number of class folders, or an empty class.
    """
    split_dir = root / split
    names = sorted(p.name for p in split_dir.iterdir() if p.is_dir())
    where = f"{shown.split(' ', 1)[1]}/{split}"
    if len(names) != classes:
        raise DataError(
            f"{where} has {len(names)} class folders, but the dataset has {classes} classes "
            f"(a CIFAR-{'100' if len(names) == 100 else '10'}-like source given to a "
            f"{classes}-class experiment?). Check the folder or the experiment."
        )
    files, labels = [], []
    for label, class_name in enumerate(names):
        found = sorted(p.name for p in (split_dir / class_name).iterdir()
                       if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise DataError(f"Class folder {where}/{class_name} holds no PNG or JPEG images.")
        files.extend(f"{split}/{class_name}/{name}" for name in found)
        labels.extend([label] * len(found))
    return files, np.asarray(labels, np.int64), tuple(names)


def _in_notebook() -> bool:
    """Whether this runs in a Jupyter kernel (a terminal IPython has no kernel)."""
    if "ipykernel" not in sys.modules or "IPython" not in sys.modules:
        return False
    return getattr(sys.modules["IPython"].get_ipython(), "kernel", None) is not None


class _ProgressLine:
    """One line of progress redrawn in place, as Keras's `Progbar` and `tqdm.auto` do.

    On a terminal each update rewrites the line on stderr after a carriage return; in a
    notebook the line is one output updated by its display id, so the live cell shows one
    line and a stored notebook keeps the last one, not a line per update.
    """

    def __init__(self):
        self._notebook = _in_notebook()
        self._handle = None

    def show(self, line: str, last: bool = False) -> None:
        """Shows `line` in place of the previous one; `last` ends the line on a terminal."""
        if not self._notebook:
            print(f"\r{line}", end="\n" if last else "", file=sys.stderr, flush=True)
            return
        import IPython.display  # loaded already: a kernel runs this

        if self._handle is None:
            self._handle = IPython.display.display({"text/plain": line}, raw=True, display_id=True)
        else:
            self._handle.update({"text/plain": line}, raw=True)


def _decode(root: pathlib.Path, files: list[str], what: str) -> np.ndarray:
    """Decodes images in parallel (Pillow decodes outside the GIL), with progress for many."""
    if not files:
        return np.zeros((0, *IMAGE_SHAPE), np.uint8)
    paths = [root / f for f in files]
    show = len(paths) > PROGRESS_ABOVE
    bar = _ProgressLine() if show else None
    images, start, shown_at = [], time.perf_counter(), 0.0
    with concurrent.futures.ThreadPoolExecutor(min(16, os.cpu_count() or 1)) as pool:
        for i, image in enumerate(pool.map(_read_cifar_image, paths, chunksize=256), 1):
            images.append(image)
            now = time.perf_counter() - start
            if show and (now - shown_at > 1 or i == len(paths)):
                shown_at = now
                done = i * 30 // len(paths)
                bar.show(f"decoding {what}: [{'=' * done}{'.' * (30 - done)}] {i:,}/{len(paths):,} "
                         f"images, {now:.0f} s", last=i == len(paths))
    return np.stack(images)


def _folder_arrays(root: pathlib.Path, classes: int, shown: str) -> dict:
    """Decodes `train/` and, where present, `test/` of an image folder."""
    if not (root / "train").is_dir():
        raise DataError(
            f"{shown} has no 'train/' folder. Expected train/<class>/* (and test/<class>/*) "
            "image folders.")
    arrays = {}
    train_files, arrays["y_train"], class_names = list_split(root, "train", classes, shown)
    arrays["x_train"] = _decode(root, train_files, f"train/ of {shown.split(' ', 1)[1]}")
    test_files = []
    if (root / "test").is_dir():
        test_files, arrays["y_test"], test_names = list_split(root, "test", classes, shown)
        if test_names != class_names:
            raise DataError(f"train/ and test/ of {shown.split(' ', 1)[1]} have different "
                            "class folders.")
        arrays["x_test"] = _decode(root, test_files, f"test/ of {shown.split(' ', 1)[1]}")
    arrays.update(class_names=np.array(class_names), train_files=np.array(train_files),
                  test_files=np.array(test_files, dtype=str), has_test=np.array(bool(test_files)))
    return arrays


_CACHE_KEYS = ("x_train", "y_train", "class_names", "train_files", "test_files", "has_test")


def _read_cache(cache: pathlib.Path, classes: int) -> dict:
    """The arrays of a decoded-image cache; raises ValueError if it is not a valid one."""
    with np.load(cache, allow_pickle=False) as f:
        missing = [key for key in _CACHE_KEYS if key not in f.files]
        if missing:
            raise ValueError(f"missing arrays {missing}")
        arrays = {key: f[key] for key in f.files}
    if len(arrays["class_names"]) != classes:
        raise ValueError(f"{len(arrays['class_names'])} class names for {classes} classes")
    splits = ("train", "test") if bool(arrays["has_test"]) else ("train",)
    for split in splits:
        x, y = arrays.get(f"x_{split}"), arrays.get(f"y_{split}")
        if x is None or y is None:
            raise ValueError(f"missing {split} arrays")
        if x.dtype != np.uint8 or x.shape[1:] != IMAGE_SHAPE or y.shape != x.shape[:1] \
                or len(arrays[f"{split}_files"]) != len(y):
            raise ValueError(f"{split} arrays have shapes {x.shape} {x.dtype} and {y.shape}")
        if y.dtype != np.int64 or (len(y) and (y.min() < 0 or y.max() >= classes)):
            raise ValueError(f"{split} labels are not int64 in [0, {classes})")
    return arrays


def _cached_folder_arrays(root: pathlib.Path, classes: int, shown: str) -> dict:
    """`_folder_arrays` of an unpacked archive, through an `.npz` cache beside it."""
    # Decoding 60,000 JPEGs takes most of a minute; loading the uncompressed cache, a fraction
    # of a second.
    cache = root / f".arrays_{classes}.npz"
    _sweep_cache_leftovers(root)
    if cache.exists():
        try:
            return _read_cache(cache, classes)
        except (zipfile.BadZipFile, ValueError, EOFError, KeyError, OSError) as err:
            warnings.warn(
                f"Decoded-image cache {cache} is unreadable ({type(err).__name__}: {err}); "
                "deleting it and decoding the images again.", stacklevel=3)
            cache.unlink(missing_ok=True)
    arrays = _folder_arrays(root, classes, shown)
    with atomic_path(cache) as tmp, open(tmp, "wb") as f:  # a file object: no ".npz" appended
        np.savez(f, **arrays)
    return arrays


def folder_source(path, classes: int) -> dict:
    """Every array of an image folder or archive, as a dict.

    Keys: `x_train`, `y_train`, `train_files` (relative names such as
    `train/cat/0001.png`), `class_names`, `has_test`, and, when the folder has
    a `test/` split, `x_test`, `y_test`, `test_files`.
    """
    root, shown = folder_root(path)
    if _is_archive(pathlib.Path(path)):
        return _cached_folder_arrays(root, classes, shown)
    return _folder_arrays(root, classes, shown)


def folder_arrays(path, classes: int):
    """Reads `train/<class>/*` and `test/<class>/*` (PNG/JPEG) into uint8 arrays.

    `path` is a folder or a .tar.gz/.tgz/.tar of one (unpacked once into the
    temp folder, its decoded arrays cached there). Class ids follow the sorted
    class-folder names (CIFAR's own label order). Returns
    `((x_train, y_train), (x_test, y_test), class_names)`; a folder without
    `test/` gives empty test arrays.
    """
    arrays = folder_source(path, classes)
    empty = (np.zeros((0, *IMAGE_SHAPE), np.uint8), np.zeros(0, np.int64))
    test = (arrays["x_test"], arrays["y_test"]) if bool(arrays["has_test"]) else empty
    return ((arrays["x_train"], arrays["y_train"]), test,
            tuple(str(n) for n in arrays["class_names"]))


# ---------------------------------------------------------------- hold-out splits


def check_holdout(holdout):
    """Refuses a hold-out that is neither a positive count nor a fraction in (0, 1)."""
    if holdout is None:
        return None
    if isinstance(holdout, bool) or not isinstance(holdout, (int, float, np.integer, np.floating)):
        raise ValueError(f"`holdout` must be images per class (a positive integer) or a fraction "
                         f"in (0, 1). Received: holdout={holdout!r}")
    if isinstance(holdout, (int, np.integer)) or float(holdout).is_integer() and holdout >= 1:
        if holdout < 1:
            raise ValueError(f"`holdout` must hold out at least one image per class. "
                             f"Received: holdout={holdout!r}")
        return int(holdout)
    if not 0 < holdout < 1:
        raise ValueError(f"`holdout` must be images per class (a positive integer) or a fraction "
                         f"in (0, 1). Received: holdout={holdout!r}")
    return float(holdout)


def holdout_label(holdout) -> str:
    """`100/class` or `20 %`: the hold-out as tables name it."""
    holdout = check_holdout(holdout)
    return f"{holdout}/class" if isinstance(holdout, int) else f"{holdout:.0%}"


def holdout_split(labels, holdout, seed: int = 0):
    """Stratified hold-out: `(train indices, held-out indices)`, each sorted.

    From every class, `holdout` images (an integer) or that fraction of them
    (rounded) are held out, chosen by `seed` alone: the same labels, hold-out
    and seed always give the same split, whatever the run's own seed.

    Raises:
        ValueError: `holdout` is not a positive count or a fraction in (0, 1),
            or it would leave a class with no training image (or hold none out).
    """
    holdout = check_holdout(holdout)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"`holdout_seed` must be a non-negative integer. Received: "
                         f"holdout_seed={seed!r}")
    labels = np.asarray(labels)
    held = []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        n = holdout if isinstance(holdout, int) else int(round(holdout * len(members)))
        if n >= len(members) or n < 1:
            raise ValueError(
                f"`holdout`={holdout} holds out {n} of the {len(members)} training images of "
                f"class {label}: at least one must be held out and one left to train on.")
        order = np.random.default_rng([seed, int(label)]).permutation(len(members))
        held.append(members[order[:n]])
    held = np.sort(np.concatenate(held))
    keep = np.ones(len(labels), bool)
    keep[held] = False
    return np.flatnonzero(keep), held


def holdout_identity(names, labels, holdout, seed: int = 0) -> dict:
    """What identifies a hold-out split in a run's `config.json`.

    `{"per_class": N}` or `{"fraction": f}`, plus `"seed"`, the number of
    `"held_out"` and `"train"` images, and `"digest"`: the first 16 hex digits
    of the SHA-256 of the held-out names (file names of an image folder), one
    per line.
    """
    holdout = check_holdout(holdout)
    train, held = holdout_split(labels, holdout, seed)
    digest = hashlib.sha256("\n".join(str(names[i]) for i in held).encode()).hexdigest()[:16]
    size = {"per_class": holdout} if isinstance(holdout, int) else {"fraction": holdout}
    return {**size, "seed": int(seed), "held_out": int(len(held)), "train": int(len(train)),
            "digest": digest}
