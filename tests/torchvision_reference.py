"""Seeded weights and inputs shared by tools/torchvision_fixtures.py and test_torchvision.py.

The torchvision fixtures store logits, not weights (E4's weights alone are
2.9 MB): both sides regenerate the same weights from a seed with NumPy, the
tool to load them into torchvision's SqueezeNet, the test into the Keras
model. NumPy only, so that the torch tool and the TensorFlow test can both
import it.
"""

from __future__ import annotations

import numpy as np

SEED = 20_161_024  # SqueezeNet v1 on arXiv (February 2016), any fixed number would do
BATCH = 4
# The `ModelConfig` fields that tools/torchvision_fixtures.py turns into changes of
# torchvision's SqueezeNet.
TORCHVISION_FIELDS = ("conv1_filters", "conv1_kernel", "conv1_strides", "conv1_padding",
                      "pool_size", "pool_strides", "pool_after", "fires", "dropout")


def reference_weights(names_shapes, seed: int = SEED) -> dict[str, np.ndarray]:
    """Deterministic float32 tensors for `(name, shape)` pairs, in the order given.

    Use torchvision's `state_dict()` order so that both sides draw the same
    numbers. Weights of rank >= 2 (convolutions, OIHW) are He-normal
    (std `sqrt(2 / fan_in)`), which keeps activations of order one through
    the ReLUs; biases are drawn from U(0, 0.2), slightly positive so that few
    units are dead and the averaged ReLU(conv10) logits differ between images.

    Args:
        names_shapes: iterable of `(name, shape)`.
        seed: seed of `np.random.default_rng`. Defaults to `SEED`.

    Returns:
        `{name: np.ndarray}` (float32), in the order given.
    """
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape in names_shapes:
        shape = tuple(int(d) for d in shape)
        if len(shape) >= 2:
            fan_in = int(np.prod(shape[1:]))
            value = rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)
        else:
            value = rng.uniform(0.0, 0.2, size=shape)
        out[name] = value.astype(np.float32)
    return out


def reference_inputs(shape_nchw, seed: int = SEED) -> np.ndarray:
    """A standard-normal float32 batch in torch's NCHW layout (a different stream from the weights)."""
    rng = np.random.default_rng([seed, 1])
    return rng.standard_normal(tuple(shape_nchw)).astype(np.float32)


def checksum(arrays) -> list[float]:
    """Sum and sum of squares (float64) of each array: a cheap fingerprint of the generated numbers.

    Stored in each fixture, so that a change in NumPy's random streams is
    reported as such rather than as a model mismatch.
    """
    return [float(v) for a in arrays for v in (np.sum(a, dtype=np.float64),
                                                np.sum(np.square(a, dtype=np.float64)))]


def model_spec(model_config) -> dict:
    """A `ModelConfig` as plain JSON data (Fire specs as `[name, [squeeze, expand1x1, expand3x3]]`).

    Holds the fields of `TORCHVISION_FIELDS` and any other field whose value
    is not its default (such as `batch_norm=True`, which the torch side then
    refuses), so that a field added later at its default changes nothing.
    The tool hands this to the torch side; the test compares it with the one
    stored in a fixture to catch a fixture made from an older config.
    """
    import dataclasses

    defaults = type(model_config)()
    spec = {}
    for field in dataclasses.fields(model_config):
        value = getattr(model_config, field.name)
        if field.name not in TORCHVISION_FIELDS and value == getattr(defaults, field.name):
            continue
        if field.name == "fires":
            value = [[n, [f.squeeze, f.expand1x1, f.expand3x3]] for n, f in value]
        elif dataclasses.is_dataclass(value):
            value = dataclasses.asdict(value)
        elif isinstance(value, tuple):
            value = list(value)
        spec[field.name] = value
    return spec
