"""Augmentation and normalisation as a Keras layer, so that they run inside the compiled step.

The input pipelines (`squeeze_keras.data`) augment and normalise on the host.
Under Keras's JAX backend that host work, and the float32 batches it ships,
sit between the device and its next step. `CifarAugment` does the same work
on the device, in the compiled training step, with `keras.ops` and
`keras.random` only, so it runs under the JAX, TensorFlow and PyTorch backends
alike: when training, a uniformly random 32x32 crop of the image zero-padded
by `data.CROP_PADDING` (4) pixels (offsets 0..8 on each axis, independently per
image) and a horizontal flip with probability 0.5 per image, then the
preprocessing's normalisation (`data.normalize`); at inference the
normalisation only. A crop is a gather of whole pixels, never an
interpolation: the same images, with the same distribution, as today's
pipelines make.

`training_model(model, preprocessing)` puts the layer in front of a model;
the wrapper takes uint8 images and owns exactly the model's weights, in the
same order, so the model trained through it is saved as it is
(`runs.save_model`). `data.ArrayBatches(..., raw=True)` feeds it: uint8 batches, shuffled and
padded like `data.ArrayBatches`, four times smaller than float32 ones.
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

from squeeze_keras import data as data_lib

_HEIGHT, _WIDTH, _CHANNELS = data_lib.IMAGE_SHAPE
_PADDED = (_HEIGHT + 2 * data_lib.CROP_PADDING, _WIDTH + 2 * data_lib.CROP_PADDING)


@keras.saving.register_keras_serializable(package="squeeze_keras")
class CifarAugment(keras.layers.Layer):
    """Random padded crop and horizontal flip (when training), then normalisation.

    Exactly the augmentation of `squeeze_keras.data` for `"cifar"`
    preprocessing, done on the batch inside the compiled step: each image
    is zero-padded by 4 pixels, cropped back to 32x32 at offsets drawn
    uniformly from 0..8 on each axis, and flipped left-right with
    probability 0.5; offsets and flips are independent across images and
    axes. Then `(x / 255 - mean) / std` with the preprocessing's constants
    (`data.normalize`). With `training=False`, or `augment=False`, only the
    normalisation. The output is float32.

    Args:
        preprocessing: `"imagenet"` or `"cifar"`: which mean and std
            normalise. Defaults to `"cifar"`.
        augment: crop and flip when training. Defaults to `True`.
        seed: seed of the crops and flips (a `keras.random.SeedGenerator`),
            or `None` for one drawn from Keras's global seed
            (`keras.utils.set_random_seed`). Defaults to `None`.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).
    """

    def __init__(self, preprocessing="cifar", augment=True, seed=None, **kwargs):
        kwargs.setdefault("dtype", "float32")  # exact normalisation under mixed policies too
        super().__init__(**kwargs)
        if not isinstance(augment, bool):
            raise ValueError(f"`augment` must be True or False. Received: augment={augment!r}")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise ValueError(
                f"`seed` must be a non-negative integer or None. Received: seed={seed!r}")
        # One home for the constants: the pipelines' own (raises for an unknown mode).
        self._scale, self._shift = data_lib._scale_shift(preprocessing)
        self.preprocessing, self.augment, self.seed = preprocessing, augment, seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.built = True

    def call(self, inputs, training=None):
        images = inputs
        if training and self.augment:
            images = self._crop_and_flip(images)
        return keras.ops.cast(images, "float32") * self._scale + self._shift

    def _crop_and_flip(self, images):
        """Gathers each image's crop of its padded copy, columns reversed where flipped."""
        ops, pad = keras.ops, data_lib.CROP_PADDING
        batch = ops.shape(images)[0]
        offsets = keras.random.randint((batch, 2), 0, 2 * pad + 1, seed=self.seed_generator)
        flips = keras.random.randint((batch, 1), 0, 2, seed=self.seed_generator)
        rows = offsets[:, :1] + ops.arange(_HEIGHT, dtype="int32")[None, :]  # (batch, 32)
        steps = ops.arange(_WIDTH, dtype="int32")[None, :]
        cols = offsets[:, 1:] + ops.where(flips == 1, _WIDTH - 1 - steps, steps)  # (batch, 32)
        # One gather from the flattened padded image: index = row * padded width + column.
        index = rows[:, :, None] * _PADDED[1] + cols[:, None, :]  # (batch, 32, 32)
        padded = ops.pad(images, [[0, 0], [pad, pad], [pad, pad], [0, 0]])
        flat = ops.reshape(padded, (-1, _PADDED[0] * _PADDED[1], _CHANNELS))
        index = ops.reshape(index, (-1, _HEIGHT * _WIDTH, 1))
        crops = ops.take_along_axis(flat, index, axis=1)
        return ops.reshape(crops, (-1, _HEIGHT, _WIDTH, _CHANNELS))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def compute_output_spec(self, inputs, training=None):
        return keras.KerasTensor(inputs.shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "preprocessing": self.preprocessing,
                "augment": self.augment, "seed": self.seed}


def training_model(model, preprocessing, augment=None, seed=None) -> keras.Model:
    """`model` behind a `CifarAugment`: a model of uint8 images to train on the device.

    The wrapper shares `model`'s variables: its `weights` are the model's, in
    the same order, and it adds none (the layer's seed state is not a
    weight), so training the wrapper trains `model`, and `model` (or the
    wrapper's `get_weights()`) is what a run saves.

    Args:
        model: a Keras model of normalised float images, `(batch, 32, 32, 3)`.
        preprocessing: `"imagenet"` or `"cifar"`, the experiment's.
        augment: crop and flip when training, or `None` for the pipelines'
            rule: only with `"cifar"` preprocessing. Defaults to `None`.
        seed: seed of the augmentation; `None` draws it from Keras's global
            seed. Defaults to `None`.

    Returns:
        A functional `keras.Model` from uint8 images to `model`'s outputs.
    """
    if augment is None:
        augment = preprocessing == "cifar"
    inputs = keras.Input(shape=data_lib.IMAGE_SHAPE, dtype="uint8", name="images")
    x = CifarAugment(preprocessing, augment=augment, seed=seed, name="augment")(inputs)
    return keras.Model(inputs, model(x), name=f"{model.name}_augmented")


def uint8_splits(splits: data_lib.Splits, batch_size: int, seed: int = 0) -> data_lib.Splits:
    """`splits` with raw uint8 `data.ArrayBatches` (for `training_model`) as its pipelines."""
    if splits.x_train is None or splits.x_test is None:
        raise ValueError("`splits` holds no uint8 arrays (x_train, x_test) to batch.")
    return dataclasses.replace(
        splits,
        train=data_lib.ArrayBatches(splits.x_train, splits.y_train, training=True,
                                    batch_size=batch_size, seed=seed, raw=True),
        test=data_lib.ArrayBatches(splits.x_test, splits.y_test, batch_size=batch_size,
                                   seed=seed, raw=True))
