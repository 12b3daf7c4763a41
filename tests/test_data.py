"""Data pipelines: shapes, value ranges, augmentation only on train, seeds, sources, errors.

The pipeline tests run on both implementations: tf.data (TensorFlow backend)
and `ArrayBatches` (NumPy, used under the JAX and PyTorch backends).
"""

import numpy as np
import pytest
from PIL import Image

from squeeze_keras import data


def first_batch(ds):
    if isinstance(ds, data.ArrayBatches):
        return ds[0]
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


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

    a, b, c = batch(7), batch(7), batch(8)
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


def test_numpy_pipeline_shows_every_example_once_per_epoch(arrays):
    (x, y), _ = arrays
    ds = data.ArrayBatches(x[:100], y[:100], preprocessing="cifar", training=True,
                           batch_size=32, seed=0)
    assert len(ds) == 4

    def epoch_labels():
        batches = [ds[i] for i in range(len(ds))]
        assert [len(b[1]) for b in batches] == [32, 32, 32, 4]
        return np.concatenate([b[1] for b in batches])

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


def test_image_folder_archive(tmp_path):
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
