"""Data pipelines: shapes, value ranges, augmentation only on train, seeds, sources, errors.

The pipeline tests run on both implementations: tf.data (TensorFlow backend)
and `ArrayBatches` (NumPy, used under the JAX and PyTorch backends).
"""

import re
import shutil
import sys
import types

import keras
import numpy as np
import pytest
from PIL import Image

from squeeze_keras import data, sources


def first_batch(ds):
    """Images and labels of the first batch (weights checked in the padding tests)."""
    if isinstance(ds, data.ArrayBatches):
        return ds[0][:2]
    x, y, _ = next(iter(ds))
    return x.numpy(), y.numpy()


def all_batches(ds):
    """Every batch of one pass, as NumPy `(images, labels, weights)` triples."""
    if isinstance(ds, data.ArrayBatches):
        return [ds[i] for i in range(len(ds))]
    return [tuple(t.numpy() for t in batch) for batch in ds]


def next_epoch(ds):
    """What Keras does between two epochs (a tf.data pipeline needs nothing)."""
    if isinstance(ds, data.ArrayBatches):
        ds.on_epoch_end()


@pytest.fixture(params=["tf.data", "numpy"])
def make(request):
    return data.make_pipeline if request.param == "tf.data" else data.ArrayBatches


@pytest.fixture(scope="module")
def arrays():
    return data.synthetic_arrays(classes=10, train_size=256, test_size=128, seed=3)


def test_synthetic_arrays_are_deterministic_and_cifar_shaped(arrays):
    (x, y), (xt, yt) = arrays
    assert x.shape == (256, 32, 32, 3) and x.dtype == np.uint8 and y.dtype == np.int64
    assert xt.shape == (128, 32, 32, 3)
    assert set(np.unique(y)) == set(range(10))
    (x2, y2), _ = data.synthetic_arrays(classes=10, train_size=256, test_size=128, seed=3)
    np.testing.assert_array_equal(x, x2)
    (x3, _), _ = data.synthetic_arrays(classes=10, train_size=256, test_size=128, seed=4)
    assert not np.array_equal(x, x3)


def test_synthetic_classes_are_separable_by_their_means(arrays):
    # Nearest class mean on train separates test far above chance: there is signal.
    (x, y), (xt, yt) = arrays
    means = np.stack([x[y == c].reshape((y == c).sum(), -1).mean(0) for c in range(10)])
    d = ((xt.reshape(len(xt), 1, -1) - means[None]) ** 2).sum(-1)
    assert (d.argmin(1) == yt).mean() > 0.5


@pytest.mark.parametrize("mode,mean,std", [
    ("imagenet", data.IMAGENET_MEAN, data.IMAGENET_STD),
    ("cifar", data.CIFAR_MEAN, data.CIFAR_STD),
])
def test_test_split_is_exactly_normalised_and_never_augmented(make, arrays, mode, mean, std):
    _, (xt, yt) = arrays
    ds = make(xt, yt, preprocessing=mode, training=False, batch_size=32)
    x, y = first_batch(ds)
    assert x.dtype == np.float32 and x.shape == (32, 32, 32, 3)
    want = (xt[:32] / 255.0 - np.array(mean)) / np.array(std)
    np.testing.assert_allclose(x, want, atol=1e-5)
    np.testing.assert_array_equal(y, yt[:32])
    lo = (0 - np.array(mean)) / np.array(std)
    hi = (1 - np.array(mean)) / np.array(std)
    assert (x >= lo - 1e-5).all() and (x <= hi + 1e-5).all()
    np.testing.assert_array_equal(first_batch(ds)[0], x)  # same every pass


def test_cifar_train_augmentation_is_a_padded_crop_or_its_flip(make, arrays):
    (x, y), _ = arrays
    ds = make(x[:8], y[:8], preprocessing="cifar", training=True, batch_size=8, seed=1)
    out, labels = first_batch(ds)
    raw = (x[:8] / 255.0 - np.array(data.CIFAR_MEAN)) / np.array(data.CIFAR_STD)
    pad_value = -np.array(data.CIFAR_MEAN) / np.array(data.CIFAR_STD)  # a zero pixel, normalised
    changed = 0
    for img, label in zip(out, labels):
        src = raw[np.flatnonzero(y[:8] == label)]
        padded = np.broadcast_to(pad_value, (len(src), 40, 40, 3)).copy()
        padded[:, 4:36, 4:36] = src
        candidates = [c[:, i:i + 32, j:j + 32] for c in (padded, padded[:, :, ::-1])
                      for i in range(9) for j in range(9)]
        assert any(np.allclose(img, cand[k], atol=1e-5) for cand in candidates for k in range(len(src)))
        changed += not any(np.allclose(img, s, atol=1e-5) for s in src)
    assert changed >= 4  # most images were actually moved or flipped


def test_imagenet_train_is_shuffled_but_not_augmented(make, arrays):
    (x, y), _ = arrays
    ds = make(x, y, preprocessing="imagenet", training=True, batch_size=256, seed=0)
    out, labels = first_batch(ds)
    raw = (x / 255.0 - np.array(data.IMAGENET_MEAN)) / np.array(data.IMAGENET_STD)
    assert not np.array_equal(labels, y)  # shuffled
    order = [int(np.flatnonzero(np.all(np.isclose(raw, img, atol=1e-5), axis=(1, 2, 3)))[0]) for img in out[:16]]
    np.testing.assert_array_equal(labels[:16], y[order])


def test_same_seed_same_batches_other_seed_other_batches(make, arrays):
    (x, y), _ = arrays

    def batch(seed):
        return first_batch(make(x, y, preprocessing="cifar", training=True,
                                              batch_size=64, seed=seed))

    a = batch(7)
    keras.utils.set_random_seed(99)  # the pipeline's randomness is its own: global seeds move nothing
    b, c = batch(7), batch(8)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_augmentation_differs_between_epochs(make, arrays):
    (x, y), _ = arrays
    ds = make(x[:4], y[:4], preprocessing="cifar", training=True, batch_size=4, seed=0)
    epoch1 = first_batch(ds)
    next_epoch(ds)
    epoch2 = first_batch(ds)
    assert not np.array_equal(np.sort(epoch1[0].ravel()), np.sort(epoch2[0].ravel())) or \
        not np.array_equal(epoch1[1], epoch2[1])


def test_set_epoch_gives_exactly_that_epochs_order_and_augmentation(make, arrays):
    """What a resumed run relies on: a new pipeline set to epoch 2 yields epoch 2's batches."""
    (x, y), _ = arrays

    def pipeline():
        return make(x[:100], y[:100], preprocessing="cifar", training=True, batch_size=32, seed=5)

    ds = pipeline()
    epochs = []
    for _ in range(3):
        epochs.append(all_batches(ds))
        next_epoch(ds)
    assert len(epochs[0]) == 4 and [b[2].sum() for b in epochs[0]] == [32, 32, 32, 4]
    assert not np.array_equal(epochs[1][0][1], epochs[2][0][1])  # each epoch its own order
    resumed = pipeline()
    data.set_epoch(resumed, 2)
    for got, want in zip(all_batches(resumed), epochs[2], strict=True):
        for a, b in zip(got, want):
            np.testing.assert_array_equal(a, b)
    data.set_epoch(resumed, 0)
    np.testing.assert_array_equal(first_batch(resumed)[0], epochs[0][0][0])
    with pytest.raises(ValueError, match="epoch=-1"):
        data.set_epoch(resumed, -1)


def test_tf_data_training_pipeline_has_a_known_length(arrays):
    """Keras reads the number of batches from it (progress bar, steps_per_execution)."""
    (x, y), _ = arrays
    ds = data.make_pipeline(x[:100], y[:100], preprocessing="cifar", training=True, batch_size=32)
    assert int(ds.cardinality()) == 4


def test_numpy_pipeline_shows_every_example_once_per_epoch(arrays):
    (x, y), _ = arrays
    ds = data.ArrayBatches(x[:100], y[:100], preprocessing="cifar", training=True,
                           batch_size=32, seed=0)
    assert len(ds) == 4

    def epoch_labels():
        batches = [ds[i] for i in range(len(ds))]
        assert [len(b[1]) for b in batches] == [32, 32, 32, 32]
        assert [b[2].sum() for b in batches] == [32, 32, 32, 4]
        return np.concatenate([b[1][b[2] > 0] for b in batches])

    first = epoch_labels()
    np.testing.assert_array_equal(np.sort(first), np.sort(y[:100]))
    next_epoch(ds)
    second = epoch_labels()
    np.testing.assert_array_equal(np.sort(second), np.sort(y[:100]))
    assert not np.array_equal(first, second)  # reshuffled
    with pytest.raises(IndexError):
        ds[4]


def test_pipeline_choice_follows_the_backend_and_refuses_unknown_names():
    import keras

    want = "tf.data" if keras.backend.backend() == "tensorflow" else "numpy"
    assert data.resolve_pipeline("auto") == want
    splits = data.load("cifar10", "synthetic", batch_size=16, limit=40, pipeline="numpy",
                       synthetic_sizes=(200, 100))
    assert isinstance(splits.train, data.ArrayBatches) and len(splits.train) == 3
    with pytest.raises(ValueError, match="pipeline='torch.data'"):
        data.load("cifar10", "synthetic", pipeline="torch.data")
    with pytest.raises(ValueError, match="batch_size=0"):
        data.ArrayBatches(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), batch_size=0)
    with pytest.raises(ValueError, match="preprocessing='none'"):
        data.ArrayBatches(np.zeros((4, 32, 32, 3), np.uint8), np.zeros(4), preprocessing="none")


def test_load_synthetic_with_limit_and_cifar100():
    splits = data.load("cifar100", "synthetic", batch_size=16, limit=40, synthetic_sizes=(200, 100))
    assert (splits.classes, splits.train_size, splits.test_size) == (100, 40, 40)
    x, y = first_batch(splits.train)
    assert x.shape == (16, 32, 32, 3) and y.max() < 100


def write_folder(root, classes, per_class=3, size=(32, 32), suffix=".png"):
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in range(classes):
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((*size, 3), 20 * c, np.uint8) + rng.integers(0, 5, (*size, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}{suffix}")
    return root


def test_image_folder_source(tmp_path):
    root = write_folder(tmp_path / "cifar", 10)
    (x, y), (xt, yt), names = data.folder_arrays(root, 10)
    assert x.shape == (30, 32, 32, 3) and xt.shape == (30, 32, 32, 3)
    assert names[0] == "class_00" and list(y[:3]) == [0, 0, 0] and y[-1] == 9
    assert abs(int(x[y == 4].mean()) - 82) <= 3  # class 4's pixels: 80 + noise
    splits = data.load("cifar10", str(root), batch_size=8, preprocessing="cifar")
    assert splits.source == "folder" and splits.train_size == 30


def test_image_folder_archive(tmp_path, temp_dir):
    import tarfile

    root = write_folder(tmp_path / "src", 10, per_class=1, suffix=".jpg")
    archive = tmp_path / "mini.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname="mini")
    (x, y), _, _ = data.folder_arrays(archive, 10)
    assert x.shape == (10, 32, 32, 3)
    (x2, _), _, _ = data.folder_arrays(archive, 10)  # second read: from the array cache
    np.testing.assert_array_equal(x, x2)


def test_errors_are_clear(tmp_path):
    with pytest.raises(data.DataError, match="Unknown dataset 'mnist'"):
        data.load("mnist", "synthetic")
    with pytest.raises(data.DataError, match="Unknown data source 'kaggle'"):
        data.load("cifar10", "kaggle")
    with pytest.raises(data.DataError, match="does not exist"):
        data.load("cifar10", str(tmp_path / "nowhere"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(data.DataError, match="no 'train/' folder"):
        data.load("cifar10", str(tmp_path / "empty"))
    root = write_folder(tmp_path / "three", 3, per_class=1)
    with pytest.raises(data.DataError, match="3 class folders, but the dataset has 10"):
        data.load("cifar10", str(root))
    with pytest.raises(ValueError, match="limit=0"):
        data.load("cifar10", "synthetic", limit=0)


def test_unreadable_and_wrong_size_images_are_named(tmp_path):
    root = write_folder(tmp_path / "bad", 10, per_class=1)
    broken = root / "train" / "class_03" / "broken.png"
    broken.write_bytes(b"not a png")
    with pytest.raises(data.DataError, match="broken.png"):
        data.load("cifar10", str(root))
    broken.unlink()
    Image.fromarray(np.zeros((28, 28, 3), np.uint8)).save(root / "test" / "class_05" / "small.png")
    with pytest.raises(data.DataError, match=r"small.png has shape \(28, 28, 3\)"):
        data.load("cifar10", str(root))


def test_tfds_without_download_says_how_to_use_a_local_copy(tmp_path):
    with pytest.raises(data.DataError, match="image folder"):
        data.load("cifar10", "tfds", data_dir=str(tmp_path), download=False)


# ---------------------------------------------------------------- padded, weighted batches


@pytest.mark.parametrize("training,mode", [(False, "imagenet"), (True, "imagenet"), (True, "cifar")])
@pytest.mark.parametrize("size,batch", [(100, 32), (64, 32), (5, 32)])
def test_every_batch_is_full_and_the_padding_is_masked(make, arrays, training, mode, size, batch):
    (x, y), _ = arrays
    x, y = x[:size], y[:size]
    batches = all_batches(make(x, y, preprocessing=mode, training=training, batch_size=batch,
                               seed=2))
    assert len(batches) == -(-size // batch)
    for images, labels, weights in batches:
        assert images.shape == (batch, 32, 32, 3) and images.dtype == np.float32
        assert labels.shape == (batch,) and weights.shape == (batch,)
        assert weights.dtype == np.float32 and set(np.unique(weights)) <= {0.0, 1.0}
    images, labels, weights = (np.concatenate(parts) for parts in zip(*batches))
    assert weights.sum() == size  # every example once per pass
    real = weights == 1
    # Padding is only at the end of the last batch: zero images, label 0, weight 0.
    np.testing.assert_array_equal(weights, np.arange(len(weights)) < size)
    np.testing.assert_allclose(images[~real], data.normalize(np.zeros_like(x[:1]), mode)
                               .repeat((~real).sum(), 0), atol=1e-5)
    assert (labels[~real] == 0).all()
    # Real rows: image and label still belong together.
    np.testing.assert_array_equal(np.sort(labels[real]), np.sort(y))
    if mode == "imagenet":  # not augmented: invert the normalisation to find the source image
        scale, shift = data._scale_shift(mode)
        raw = np.rint((images[real] - shift) / scale).astype(np.uint8)
        source = {xi.tobytes(): yi for xi, yi in zip(x, y)}
        assert sorted(source) == sorted(r.tobytes() for r in raw)
        assert all(source[r.tobytes()] == label for r, label in zip(raw, labels[real]))
        if not training:
            np.testing.assert_array_equal(raw, x)
            np.testing.assert_array_equal(labels[real], y)


@pytest.mark.parametrize("mode", ["imagenet", "cifar"])
def test_normalize_is_the_pipelines_normalisation(make, arrays, mode):
    _, (xt, yt) = arrays
    x, _ = first_batch(make(xt, yt, preprocessing=mode, batch_size=32))
    out = data.normalize(xt[:32], mode)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, x, rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="preprocessing='none'"):
        data.normalize(xt, "none")


def test_splits_keep_the_raw_arrays_and_the_real_sizes():
    splits = data.load("cifar10", "synthetic", batch_size=16, limit=40, pipeline="numpy",
                       synthetic_sizes=(200, 100), seed=5)
    assert (splits.train_size, splits.test_size) == (40, 40)
    assert splits.x_train.shape == (40, 32, 32, 3) and splits.x_train.dtype == np.uint8
    (x, y), (xt, yt) = data.synthetic_arrays(10, 200, 100, seed=5)
    rng = np.random.default_rng(5)  # the seeded subset, in original order
    train_idx = np.sort(rng.permutation(200)[:40])
    test_idx = np.sort(rng.permutation(100)[:40])
    np.testing.assert_array_equal(splits.x_train, x[train_idx])
    np.testing.assert_array_equal(splits.y_test, yt[test_idx])
    images, labels, weights = (np.concatenate(p) for p in zip(*all_batches(splits.test)))
    np.testing.assert_array_equal(images[weights == 1],
                                  data.normalize(splits.x_test, "imagenet"))
    np.testing.assert_array_equal(labels[weights == 1], splits.y_test)


def _tiny_model():
    import keras

    model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.AveragePooling2D(4),
                              keras.layers.Flatten(), keras.layers.Dense(10, activation="softmax")])
    model.build((None, 32, 32, 3))
    model.set_weights([np.random.default_rng(0).normal(0, 0.5, w.shape) for w in model.get_weights()])
    return model


def _compile(model, reduction="sum_over_batch_size", weighted=True):
    import keras

    metrics = [keras.metrics.SparseCategoricalAccuracy(name="accuracy"),
               keras.metrics.SparseTopKCategoricalAccuracy(k=5, name="top5"),
               keras.metrics.MeanMetricWrapper(keras.losses.sparse_categorical_crossentropy,
                                               name="xent")]
    model.compile(loss=keras.losses.SparseCategoricalCrossentropy(reduction=reduction),
                  **{"weighted_metrics" if weighted else "metrics": metrics})
    return model


def test_evaluate_on_padded_batches_is_exact_with_weighted_metrics(make, arrays):
    """What Keras 3 makes of the padding (the findings the training code relies on)."""
    # 100 test images in batches of 32: the last batch holds 4 real rows and 28 of padding.
    _, (xt, yt) = arrays
    xt, yt, size, batch = xt[:100], yt[:100], 100, 32
    want = _compile(_tiny_model()).evaluate(data.normalize(xt, "imagenet"), yt,
                                            batch_size=batch, return_dict=True, verbose=0)
    assert 0.05 < want["accuracy"] < want["top5"] < 1  # a model neither right nor wrong
    padded = make(xt, yt, preprocessing="imagenet", batch_size=batch)
    got = _compile(_tiny_model()).evaluate(padded, return_dict=True, verbose=0)
    # Metrics given as `weighted_metrics` weigh the padding out: exact.
    assert (got["accuracy"], got["top5"]) == (want["accuracy"], want["top5"])
    np.testing.assert_allclose(got["xent"], want["xent"], rtol=1e-6)
    # Metrics given as `metrics` ignore sample weights: padding counts as wrong answers.
    unweighted = _compile(_tiny_model(), weighted=False).evaluate(padded, return_dict=True,
                                                                  verbose=0)
    np.testing.assert_allclose(unweighted["accuracy"], want["accuracy"] * size / 128, rtol=1e-6)
    # The default "sum_over_batch_size" loss divides each batch's weighted sum by all its
    # rows, padding included, and Keras averages batches by rows: diluted by size / padded size.
    padded_size = -(-size // batch) * batch
    np.testing.assert_allclose(got["loss"], want["loss"] * size / padded_size, rtol=1e-5)
    # "mean_with_sample_weight" is exact within a batch, but batches are still averaged by
    # rows, so the 4-row batch counts as much as a 32-row one: not exact either.
    model = _compile(_tiny_model(), "mean_with_sample_weight")
    other = model.evaluate(padded, return_dict=True, verbose=0)
    batch_means = [model.evaluate(data.normalize(xt[i:i + batch], "imagenet"), yt[i:i + batch],
                                  batch_size=batch, verbose=0)[0] for i in range(0, size, batch)]
    np.testing.assert_allclose(other["loss"], np.mean(batch_means), rtol=1e-5)
    assert abs(other["loss"] - want["loss"]) > 1e-3


# ---------------------------------------------------------------- archives and their caches


@pytest.fixture
def temp_dir(tmp_path, monkeypatch):
    """Where archives are unpacked (instead of the shared /tmp)."""
    import tempfile

    folder = tmp_path / "unpacked"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def write_archive(tmp_path, name="mini.tar.gz", splits=("train", "test")):
    import tarfile

    root = write_folder(tmp_path / f"src_{name}", 10, per_class=1, suffix=".jpg")
    archive = tmp_path / name
    with tarfile.open(archive, "w:gz") as tar:
        for split in splits:
            tar.add(root / split, arcname=f"mini/{split}")
    return archive


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_archive_is_named_and_leaves_nothing_behind(tmp_path, temp_dir, damage):
    good = write_archive(tmp_path).read_bytes()
    archive = tmp_path / "cifar10.tar.gz"
    archive.write_bytes(good[:len(good) // 2] if damage == "truncated" else b"\x1f\x8b" + bytes(500))
    with pytest.raises(data.DataError, match=rf"Cannot unpack {re.escape(str(archive))}: "
                                             "the archive is truncated or corrupt"):
        data.load("cifar10", str(archive))
    assert list(temp_dir.iterdir()) == []  # no partial extraction


def test_an_interrupted_extraction_leaves_nothing_behind(tmp_path, temp_dir, monkeypatch):
    import errno
    import tarfile

    archive = write_archive(tmp_path)
    real_extractall = tarfile.TarFile.extractall

    def fail(error):
        def extractall(self, path, **kwargs):
            real_extractall(self, path, **kwargs)
            raise error
        return extractall

    monkeypatch.setattr(tarfile.TarFile, "extractall", fail(KeyboardInterrupt()))
    with pytest.raises(KeyboardInterrupt):
        data.folder_arrays(archive, 10)
    assert list(temp_dir.iterdir()) == []
    monkeypatch.setattr(tarfile.TarFile, "extractall",
                        fail(OSError(errno.ENOSPC, "No space left on device")))
    with pytest.raises(data.DataError, match="Cannot unpack .*mini.tar.gz into .*No space left"):
        data.folder_arrays(archive, 10)
    assert list(temp_dir.iterdir()) == []
    monkeypatch.setattr(tarfile.TarFile, "extractall", real_extractall)
    (x, _), _, _ = data.folder_arrays(archive, 10)
    assert x.shape == (10, 32, 32, 3)


def test_an_unfinished_extraction_of_an_older_version_is_redone(tmp_path, temp_dir):
    archive = write_archive(tmp_path)
    data.folder_arrays(archive, 10)
    (target,) = temp_dir.iterdir()
    (target / ".complete").unlink()
    shutil.rmtree(target / "mini" / "test")  # as an interrupted old-style extraction left it
    (_, _), (xt, _), _ = data.folder_arrays(archive, 10)
    assert xt.shape == (10, 32, 32, 3)


def test_an_archive_without_train_is_named_not_its_temp_folder(tmp_path, temp_dir):
    archive = write_archive(tmp_path, "testonly.tar.gz", splits=("test",))
    with pytest.raises(data.DataError, match=rf"Archive {re.escape(str(archive))} has no "
                                             r"'train/' folder") as err:
        data.load("cifar10", str(archive))
    assert str(temp_dir) not in str(err.value)


def cache_of(temp_dir):
    (cache,) = temp_dir.glob("*/*/.arrays_10.npz")
    return cache


def test_the_array_cache_is_written_atomically(tmp_path, temp_dir, monkeypatch):
    archive = write_archive(tmp_path)
    real_savez = np.savez

    def savez_then_crash(file, **arrays):
        real_savez(file, **arrays)
        file.truncate(100)
        raise KeyboardInterrupt  # killed mid-write

    monkeypatch.setattr(np, "savez", savez_then_crash)
    with pytest.raises(KeyboardInterrupt):
        data.folder_arrays(archive, 10)
    (unpacked,) = temp_dir.glob("*/mini")
    assert [p.name for p in unpacked.iterdir() if p.is_file()] == []  # no cache, no temp file
    monkeypatch.setattr(np, "savez", real_savez)
    first = data.folder_arrays(archive, 10)
    assert sorted(p.name for p in unpacked.iterdir() if p.is_file()) == [".arrays_10.npz"]
    np.testing.assert_array_equal(data.folder_arrays(archive, 10)[0][0], first[0][0])


@pytest.mark.parametrize("damage", ["truncated", "garbage", "missing key", "wrong shape",
                                    "wrong classes"])
def test_a_corrupt_array_cache_is_reported_deleted_and_rebuilt(tmp_path, temp_dir, damage):
    archive = write_archive(tmp_path)
    (x, y), (xt, yt), names = data.folder_arrays(archive, 10)
    cache = cache_of(temp_dir)
    good = dict(x_train=x, y_train=y, x_test=xt, y_test=yt, class_names=np.array(names))
    if damage == "truncated":
        cache.write_bytes(cache.read_bytes()[:5000])
    elif damage == "garbage":
        cache.write_bytes(b"\x00" * 100)
    else:
        bad = dict(good)
        if damage == "missing key":
            del bad["y_test"]
        elif damage == "wrong shape":
            bad["x_train"] = x[:, :16]
        else:
            bad["class_names"] = np.array(names[:3])
        with open(cache, "wb") as f:
            np.savez(f, **bad)
    with pytest.warns(UserWarning, match=rf"cache {re.escape(str(cache))} is unreadable"):
        (x2, y2), (xt2, _), names2 = data.folder_arrays(archive, 10)
    np.testing.assert_array_equal(x2, x)
    np.testing.assert_array_equal(xt2, xt)
    assert names2 == names
    with np.load(cache) as f:  # rebuilt
        np.testing.assert_array_equal(f["y_train"], y)


# ---------------------------------------------------------------- source names


def test_source_identity_and_label_of_named_sources(tmp_path):
    assert data.NAMED_SOURCES == ("tfds", "synthetic")
    assert data.source_identity("synthetic") == {"source": "synthetic"}
    assert data.source_identity("tfds") == {"source": "tfds"}
    assert data.source_identity("tfds", data_dir=tmp_path) == {
        "source": "tfds", "data_dir": str(tmp_path.resolve())}
    assert (data.source_label("tfds"), data.source_label("synthetic")) == ("tfds", "synthetic")
    with pytest.raises(data.DataError, match="Unknown data source 'kaggle'"):
        data.source_identity("kaggle")
    with pytest.raises(data.DataError, match="Unknown data source 'kaggle'"):
        data.source_label("kaggle")
    with pytest.raises(data.DataError, match="nowhere does not exist"):
        data.source_identity(tmp_path / "nowhere")


def test_source_identity_tells_folders_apart(tmp_path):
    one = write_folder(tmp_path / "a" / "cifar", 2, per_class=2)
    two = write_folder(tmp_path / "b" / "cifar", 2, per_class=3)
    ids = data.source_identity(one), data.source_identity(str(two))
    assert data.source_label(one) == data.source_label(str(two)) == "folder:cifar"
    assert ids[0] != ids[1]
    assert ids[0]["source"] == "folder" and ids[0]["name"] == "cifar"
    assert ids[0]["path"] == str(one.resolve()) and ids[0]["files"] == 8
    assert ids[0]["bytes"] == sum(p.stat().st_size for p in one.rglob("*.png"))
    assert data.source_identity(one) == ids[0]  # stable
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(one / "train" / "class_00" / "9.png")
    changed = data.source_identity(one)
    assert changed["files"] == 9 and changed["digest"] != ids[0]["digest"]
    # Same content elsewhere: same fingerprint, other path.
    shutil.copytree(one, tmp_path / "c" / "cifar")
    copy = data.source_identity(tmp_path / "c" / "cifar")
    assert copy["digest"] == changed["digest"] and copy["path"] != changed["path"]


def test_source_identity_of_an_archive(tmp_path):
    archive = write_archive(tmp_path, "cifar10.tar.gz")
    ident = data.source_identity(archive)
    stat = archive.stat()
    assert ident == {"source": "folder", "name": "cifar10.tar.gz", "path": str(archive.resolve()),
                     "bytes": stat.st_size, "mtime": int(stat.st_mtime)}
    assert data.source_label(str(archive)) == "folder:cifar10.tar.gz"


# ---------------------------------------------------------------- tfds without its modules


def test_tfds_not_installed_is_named(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)
    with pytest.raises(data.DataError, match="needs tensorflow-datasets.*'tensorflow_datasets'"):
        data.load("cifar10", "tfds")


def test_a_module_missing_inside_tfds_is_not_called_a_network_problem(monkeypatch):
    def load(*args, **kwargs):
        try:
            raise ModuleNotFoundError("No module named 'apache_beam'", name="apache_beam")
        except ImportError as err:
            raise RuntimeError("Failed to construct dataset cifar10") from err

    monkeypatch.setitem(sys.modules, "tensorflow_datasets", types.SimpleNamespace(load=load))
    with pytest.raises(data.DataError, match="needs module 'apache_beam'") as err:
        data.load("cifar10", "tfds")
    assert "internet" not in str(err.value)


def test_twin_archives_with_the_same_name_size_and_time_never_share_an_extraction(tmp_path,
                                                                                   temp_dir):
    import os
    import tarfile

    archives = []
    for k in (1, 2):  # uncompressed: tar pads both to the same size
        root = tmp_path / f"src{k}"
        for split in ("train", "test"):
            for c in range(10):
                folder = root / split / f"c{c}"
                folder.mkdir(parents=True)
                Image.fromarray(np.full((32, 32, 3), 10 * c + k, np.uint8)).save(folder / "0.png")
        archive = tmp_path / f"twin{k}" / "cifar.tar"
        archive.parent.mkdir()
        with tarfile.open(archive, "w") as tar:
            for split in ("train", "test"):
                tar.add(root / split, arcname=split)
        os.utime(archive, (1_000_000_000, 1_000_000_000))
        archives.append(archive)
    assert archives[0].stat().st_size == archives[1].stat().st_size
    first, second = (data.folder_arrays(a, 10)[0][0] for a in archives)
    assert first[0, 0, 0, 0] == 1 and second[0, 0, 0, 0] == 2  # each its own images
    assert len(list(temp_dir.glob("squeeze_keras_*"))) == 2


def test_leftovers_of_a_killed_first_load_are_swept(tmp_path, temp_dir):
    import os
    import time

    archive = write_archive(tmp_path)
    dead = temp_dir / ".squeeze_keras_0123456789abcdef.999999999.x1.partial"
    (dead / "mini").mkdir(parents=True)
    alive = temp_dir / f".squeeze_keras_0123456789abcdef.{os.getpid()}.x2.partial"
    alive.mkdir()
    data.folder_arrays(archive, 10)
    assert not dead.exists() and alive.exists()  # a running loader's folder is left alone
    (unpacked,) = temp_dir.glob("squeeze_keras_*/mini")
    stale = unpacked / ".arrays_10.npz.abc.tmp"
    stale.write_bytes(b"half a cache")
    os.utime(stale, (time.time() - 3600,) * 2)
    fresh = unpacked / ".arrays_10.npz.def.tmp"
    fresh.write_bytes(b"being written")
    data.folder_arrays(archive, 10)
    assert not stale.exists() and fresh.exists()


@pytest.mark.parametrize("mode", ["I;16", "L", "LA", "RGBA"])
def test_other_image_modes_are_converted_with_their_range(tmp_path, mode):
    path = tmp_path / "image.png"
    if mode == "I;16":
        Image.fromarray(np.full((32, 32), 65535 // 2, np.uint16)).save(path)
        assert Image.open(path).mode == "I;16"
        want = 128  # half of 16-bit full scale, not clipped to 255
    else:
        Image.fromarray(np.full((32, 32, 3), 77, np.uint8)).convert(mode).save(path)
        want = 77
    assert sources.read_image(path).shape == (32, 32, 3)
    assert abs(int(sources.read_image(path)[0, 0, 0]) - want) <= 1


def test_a_32_bit_image_is_refused_by_name(tmp_path):
    path = tmp_path / "wide.png"  # a TIFF under a PNG name: Pillow goes by content
    Image.fromarray(np.full((32, 32), 7, np.int32)).save(path, format="TIFF")
    with pytest.raises(data.DataError, match=r"wide.png: 32-bit integer pixels \(PIL mode 'I'\)"):
        sources.read_image(path)


def test_an_archive_replaced_with_the_same_size_and_time_is_new_data_in_one_process(
        tmp_path, temp_dir):
    """Issue #36, case 8: in one process (a notebook), a replaced archive is read again."""
    import os
    import tarfile

    from squeeze_keras import runs

    def archive(seed):  # uncompressed PNGs in an uncompressed tar: the size is the same for any seed
        root = tmp_path / f"src{seed}"
        rng = np.random.default_rng(seed)
        for split in ("train", "test"):
            for label in range(10):
                (root / split / f"c{label}").mkdir(parents=True)
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / split / f"c{label}" / "0.png", compress_level=0)
        with tarfile.open(tmp_path / f"{seed}.tar", "w") as tar:
            tar.add(root, arcname="mini")
        return (tmp_path / f"{seed}.tar").read_bytes()

    first, second = archive(0), archive(1)
    assert len(first) == len(second) and first != second
    path = tmp_path / "cifar.tar"
    path.write_bytes(first)
    old_images = data.load("cifar10", str(path), batch_size=8).x_train
    old_digest = runs.data_identity(str(path))["digest"]  # what config.json records
    before = path.stat()
    path.write_bytes(second)
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert (path.stat().st_size, path.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    assert runs.data_identity(str(path))["digest"] != old_digest
    new_images = data.load("cifar10", str(path), batch_size=8).x_train
    assert not np.array_equal(new_images, old_images)
    first_image = np.asarray(Image.open(tmp_path / "src1" / "train" / "c0" / "0.png"))
    np.testing.assert_array_equal(new_images[0], first_image)
