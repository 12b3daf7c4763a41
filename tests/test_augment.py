"""On-device augmentation: exactly the pipelines' crops, flips and normalisation, and training.

Every augmented image is checked against all 81 crop offsets x 2 flips of
its zero-padded source; the offsets and flips of many images are checked for
uniformity; the training wrapper owns exactly the inner model's weights and
learns. The same exactness runs under Keras's JAX backend where JAX is
installed.
"""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

from squeeze_keras import augment, data

PAD = data.CROP_PADDING


def noise_images(n, seed=0):
    """Random uint8 images: no two crops or flips of one of them are alike."""
    return np.random.default_rng(seed).integers(0, 256, (n, *data.IMAGE_SHAPE), dtype=np.uint8)


def candidates(image, preprocessing="cifar"):
    """Every normalised crop of the zero-padded image, `{(dy, dx, flipped): crop}`."""
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))
    found = {}
    for dy in range(2 * PAD + 1):
        for dx in range(2 * PAD + 1):
            crop = padded[dy:dy + 32, dx:dx + 32]
            found[dy, dx, False] = data.normalize(crop, preprocessing)
            found[dy, dx, True] = data.normalize(crop[:, ::-1], preprocessing)
    return found


def matching_crops(output, image, preprocessing="cifar"):
    """The `(dy, dx, flipped)` whose crop the output equals (float32 rounding allowed)."""
    return [key for key, crop in candidates(image, preprocessing).items()
            if np.abs(crop - output).max() <= 1e-5]


def as_numpy(x):
    return keras.ops.convert_to_numpy(x)


@pytest.mark.parametrize("preprocessing", ["imagenet", "cifar"])
def test_inference_is_the_pipelines_normalisation(preprocessing):
    images = noise_images(6)
    layer = augment.CifarAugment(preprocessing, seed=0)
    expected = data.normalize(images, preprocessing)
    np.testing.assert_allclose(as_numpy(layer(images, training=False)), expected, rtol=0, atol=1e-6)
    np.testing.assert_allclose(as_numpy(layer(images)), expected, rtol=0, atol=1e-6)
    # Float pixel values normalise the same; without augmentation training changes nothing.
    plain = augment.CifarAugment(preprocessing, augment=False, seed=0)
    np.testing.assert_allclose(as_numpy(plain(images.astype("float32"), training=True)),
                               expected, rtol=0, atol=1e-6)
    assert layer(images).dtype == "float32"


def test_training_output_is_a_crop_of_the_padded_image_maybe_flipped():
    images = noise_images(8)
    out = as_numpy(augment.CifarAugment("cifar", seed=3)(images, training=True))
    found = [matching_crops(o, image) for o, image in zip(out, images)]
    assert all(len(f) == 1 for f in found), found
    assert len({f[0] for f in found}) > 1  # not one offset for the whole batch


def test_exact_inside_a_traced_function_with_an_unknown_batch_size():
    """How `fit` runs it under TensorFlow: in a graph, the batch dimension unknown."""
    if keras.backend.backend() != "tensorflow":
        pytest.skip("a TensorFlow graph")
    import tensorflow as tf

    layer = augment.CifarAugment("imagenet", seed=5)
    step = tf.function(lambda x: layer(x, training=True),
                       input_signature=[tf.TensorSpec((None, 32, 32, 3), tf.uint8)])
    images = noise_images(5, seed=1)
    out = step(images).numpy()
    assert all(len(matching_crops(o, image, "imagenet")) == 1 for o, image in zip(out, images))
    assert not np.array_equal(out, step(images).numpy())  # the seed state advances per call


def coordinate_image():
    """Channel 0 holds row + 1, channel 1 column + 1: a crop tells its offsets and flip."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    return np.stack([rows + 1, cols + 1, np.zeros_like(rows)], -1).astype(np.uint8)


def offsets_and_flips(out):
    """Recovers `(dy, dx, flipped)` of each augmented coordinate image."""
    scale, shift = data._scale_shift("cifar")
    raw = np.rint((out - shift) / scale).astype(int)
    # Output pixel (i, j) shows source row dy - 4 + i and source column dx - 4 + j, or
    # dx - 4 + 31 - j when flipped; the centre pixels are never padding.
    flipped = raw[:, 16, 16, 1] < raw[:, 16, 15, 1]
    dy = raw[:, 16, 16, 0] - 1 + PAD - 16
    dx = raw[:, 16, 16, 1] - 1 + PAD - np.where(flipped, 15, 16)
    return dy, dx, flipped


def test_offsets_and_flips_are_uniform_and_independent_per_image():
    n = 4500
    images = np.broadcast_to(coordinate_image(), (n, 32, 32, 3))
    out = as_numpy(augment.CifarAugment("cifar", seed=7)(images, training=True))
    dy, dx, flipped = offsets_and_flips(out)
    # The recovered parameters reproduce the outputs exactly (checks the decoding itself).
    for k in range(0, n, 900):
        assert matching_crops(out[k], images[k]) == [(dy[k], dx[k], bool(flipped[k]))]
    for offsets in (dy, dx):
        counts = np.bincount(offsets, minlength=9)
        assert len(counts) == 9 and counts.min() > 0.8 * n / 9 and counts.max() < 1.2 * n / 9
    assert 0.45 < flipped.mean() < 0.55
    # Independent axes: the 81 pairs all occur, none far from n / 81.
    pairs = np.bincount(dy * 9 + dx, minlength=81)
    assert pairs.min() > 0.4 * n / 81 and pairs.max() < 1.6 * n / 81


def test_seeded_layers_repeat_and_calls_draw_afresh():
    images = noise_images(16)
    first = as_numpy(augment.CifarAugment(seed=11)(images, training=True))
    layer = augment.CifarAugment(seed=11)
    np.testing.assert_array_equal(as_numpy(layer(images, training=True)), first)
    assert not np.array_equal(as_numpy(layer(images, training=True)), first)


def test_config_round_trip_and_argument_errors():
    layer = augment.CifarAugment("imagenet", augment=False, seed=4, name="aug")
    clone = augment.CifarAugment.from_config(layer.get_config())
    assert (clone.preprocessing, clone.augment, clone.seed, clone.name) == ("imagenet", False, 4, "aug")
    with pytest.raises(ValueError, match="preprocessing='tf'"):
        augment.CifarAugment("tf")
    with pytest.raises(ValueError, match="augment='yes'"):
        augment.CifarAugment(augment="yes")
    with pytest.raises(ValueError, match="seed=-1"):
        augment.CifarAugment(seed=-1)


def test_uint8_batches_shuffle_and_pad_like_array_batches():
    (x, y), _ = data.synthetic_arrays(10, 150, 1, seed=0)
    raw = data.ArrayBatches(x, y, training=True, batch_size=64, seed=3, raw=True)
    ref = data.ArrayBatches(x, y, preprocessing="imagenet", training=True, batch_size=64, seed=3)
    for _ in range(2):  # two epochs: the same order as the NumPy pipeline's
        assert len(raw) == len(ref) == 3
        for i in range(len(raw)):
            images, labels, weights = raw[i]
            ref_images, ref_labels, ref_weights = ref[i]
            assert images.dtype == np.uint8 and images.shape == (64, 32, 32, 3)
            np.testing.assert_allclose(data.normalize(images, "imagenet"), ref_images, atol=1e-6)
            np.testing.assert_array_equal(labels, ref_labels)
            np.testing.assert_array_equal(weights, ref_weights)
        raw.on_epoch_end()
        ref.on_epoch_end()
    assert raw[2][2].sum() == 150 - 128 and not raw[2][0][150 - 128:].any()
    test = data.ArrayBatches(x, y, batch_size=64, raw=True)
    np.testing.assert_array_equal(np.concatenate([test[i][1] for i in range(3)])[:150], y)


def tiny_model():
    layers = keras.layers
    return keras.Sequential([
        keras.Input(data.IMAGE_SHAPE), layers.Conv2D(16, 3, strides=2, activation="relu"),
        layers.Conv2D(32, 3, strides=2, activation="relu"), layers.GlobalAveragePooling2D(),
        layers.Dense(10, activation="softmax")], name="tiny")


def test_training_model_owns_exactly_the_inner_weights_and_learns(tmp_path):
    keras.utils.set_random_seed(0)
    model = tiny_model()
    wrapper = augment.training_model(model, "cifar", seed=0)
    assert [id(v) for v in wrapper.weights] == [id(v) for v in model.weights]
    assert wrapper.count_params() == model.count_params()
    before = [w.copy() for w in model.get_weights()]
    (x, y), (x_test, y_test) = data.synthetic_arrays(10, 1000, 200, seed=0)
    splits = augment.uint8_splits(
        data.Splits(train=None, test=None, dataset="cifar10", source="synthetic", classes=10,
                    train_size=1000, test_size=200, x_train=x, y_train=y, x_test=x_test,
                    y_test=y_test), batch_size=50)
    wrapper.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                    weighted_metrics=[keras.metrics.SparseCategoricalAccuracy(name="accuracy")])
    history = wrapper.fit(splits.train, validation_data=splits.test, epochs=2, shuffle=False,
                          verbose=0).history
    assert history["val_accuracy"][-1] > 0.3, history  # chance is 0.1
    # The wrapper trained the inner model, whose own predictions are the wrapper's at inference.
    assert not any(np.array_equal(a, b) for a, b in zip(before, model.get_weights()))
    np.testing.assert_allclose(as_numpy(model(data.normalize(x_test[:8], "cifar"))),
                               as_numpy(wrapper(x_test[:8])), rtol=1e-5, atol=1e-6)
    # `fit`'s checkpoints save the wrapper: it loads back as the same function.
    wrapper.save(tmp_path / "wrapper.keras")
    loaded = keras.saving.load_model(tmp_path / "wrapper.keras", compile=False)
    np.testing.assert_allclose(as_numpy(loaded(x_test[:8])), as_numpy(wrapper(x_test[:8])),
                               rtol=1e-5, atol=1e-6)


def test_training_model_follows_the_pipelines_augmentation_rule():
    assert augment.training_model(tiny_model(), "imagenet").get_layer("augment").augment is False
    assert augment.training_model(tiny_model(), "cifar").get_layer("augment").augment is True


JAX_SCRIPT = """
import json, sys
sys.modules["tensorflow"] = None  # as on the GPU machines: no TensorFlow
import jax, keras, numpy as np
from squeeze_keras import augment, data
sys.path.insert(0, sys.argv[1])
from test_augment import matching_crops, noise_images, tiny_model

images = noise_images(8)
layer = augment.CifarAugment("cifar", seed=3)
np.testing.assert_allclose(np.asarray(layer(images)), data.normalize(images, "cifar"), atol=1e-6)
# Compiled, as in Keras's JAX train step: a pure function of the seed state.
@jax.jit
def augmented(state, x):
    out, state = layer.stateless_call([], state, x, training=True)
    return out, state
state = [v.value for v in layer.non_trainable_variables]
out, state = augmented(state, images)
again, _ = augmented(state, images)
found = [matching_crops(np.asarray(o), image) for o, image in zip(out, images)]
assert all(len(f) == 1 for f in found), found
assert not np.array_equal(np.asarray(out), np.asarray(again))
# One epoch of `fit` through the wrapper (the layer inside the compiled train step).
keras.utils.set_random_seed(0)
wrapper = augment.training_model(tiny_model(), "cifar", seed=0)
wrapper.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
(x, y), _ = data.synthetic_arrays(10, 128, 1, seed=0)
wrapper.fit(data.ArrayBatches(x, y, training=True, batch_size=64, raw=True), epochs=1, verbose=0)
print(json.dumps({"backend": keras.backend.backend(), "found": [f[0] for f in found]}))
"""


def test_exact_under_the_jax_backend():
    """Skipped where JAX is not installed (CI); GPU machines train under JAX."""
    try:
        import jax  # noqa: F401
    except ImportError:
        pytest.skip("JAX is not installed")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, os.path.dirname(__file__)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["backend"] == "jax" and len(result["found"]) == 8
