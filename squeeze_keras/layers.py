"""Layers of the package's own, registered for saving (`model.keras` files name them).

Imported when a model that uses one is built (`model._batch_norm`) and by
`squeeze_keras.runs`, so a run's `model.keras` loads once either is imported;
plain `keras.models.load_model` in a fresh process needs
`import squeeze_keras.layers` first.
"""

from __future__ import annotations

import keras


@keras.saving.register_keras_serializable(package="squeeze_keras")
class FusedBatchNormalization(keras.layers.BatchNormalization):
    """`keras.layers.BatchNormalization`, computed by TensorFlow's fused kernel where it can be.

    Keras 3 normalises with separate ops (moments, then the affine map), and
    under a bfloat16 policy it first casts the whole activation to float32.
    On the CPUs of this study that made E4 with batch norm about four times
    slower to train than E4 in bfloat16 (docs/speed.md). Under the
    TensorFlow backend, for a 4-D channels-last input without a mask,
    this layer calls `tf.compat.v1.nn.fused_batch_norm` instead: one kernel
    (oneDNN's on CPUs) that reads bfloat16 or float32 activations and keeps
    its statistics in float32. Its variables, their names and its config are
    `BatchNormalization`'s, and it normalises with the batch's (biased)
    variance as Keras does; the moving variance is updated with the batch's
    unbiased variance, as torch's `BatchNorm2d` does (Keras uses the biased
    one: the two differ by a factor n / (n - 1), n = batch x height x width).
    Under other backends, or other inputs, it is `BatchNormalization`.
    """

    def _fusable(self, inputs, mask):
        return (keras.backend.backend() == "tensorflow" and mask is None
                and len(inputs.shape) == 4 and self.axis in (-1, 3)
                and not self.renorm and not self.synchronized)

    def call(self, inputs, training=None, mask=None):
        if not self._fusable(inputs, mask):
            return super().call(inputs, training=training, mask=mask)
        import tensorflow as tf

        channels = inputs.shape[-1]
        scale = tf.cast(self.gamma, "float32") if self.scale else tf.ones([channels])
        offset = tf.cast(self.beta, "float32") if self.center else tf.zeros([channels])
        if training and self.trainable:
            outputs, mean, variance = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, epsilon=self.epsilon, is_training=True)[:3]
            momentum = self.momentum
            self.moving_mean.assign(self.moving_mean * momentum + mean * (1.0 - momentum))
            self.moving_variance.assign(
                self.moving_variance * momentum + variance * (1.0 - momentum))
        else:
            outputs = tf.compat.v1.nn.fused_batch_norm(
                inputs, scale, offset, mean=tf.cast(self.moving_mean, "float32"),
                variance=tf.cast(self.moving_variance, "float32"), epsilon=self.epsilon,
                is_training=False)[0]
        return tf.cast(outputs, self.compute_dtype)
