"""SqueezeNet 1.0 for Keras 3, faithful to torchvision's `squeezenet1_0`.

The network is data: a first convolution, a tuple of Fire specs and the names
of the layers that a max-pool follows. The report's experiments change only
that data (see `squeeze_keras.experiments`).

Reference: Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size" (2016); torchvision.models.squeezenet.
"""

from __future__ import annotations

import dataclasses
import math

import keras
from keras import layers


@dataclasses.dataclass(frozen=True)
class Fire:
    """One Fire module: a 1x1 squeeze feeding parallel 1x1 and 3x3 expands."""

    squeeze: int
    expand1x1: int
    expand3x3: int

    @property
    def filters(self) -> int:
        """Output channels (the two expands concatenated)."""
        return self.expand1x1 + self.expand3x3


# torchvision squeezenet1_0, `features` in order (fire2 ... fire9).
SQUEEZENET_1_0_FIRES: tuple[tuple[str, Fire], ...] = (
    ("fire2", Fire(16, 64, 64)),
    ("fire3", Fire(16, 64, 64)),
    ("fire4", Fire(32, 128, 128)),
    ("fire5", Fire(32, 128, 128)),
    ("fire6", Fire(48, 192, 192)),
    ("fire7", Fire(48, 192, 192)),
    ("fire8", Fire(64, 256, 256)),
    ("fire9", Fire(64, 256, 256)),
)
# torchvision: max-pools after conv1 (+ReLU), fire4 and fire8.
SQUEEZENET_1_0_POOLS: tuple[str, ...] = ("conv1", "fire4", "fire8")


def _conv_init():
    # torchvision: init.kaiming_uniform_(w) (a=0, fan_in) -> U(+-sqrt(6 / fan_in)).
    return keras.initializers.HeUniform()


def ceil_pool_padding(size: int, pool_size: int, strides: int) -> int:
    """Extra bottom/right padding that turns floor pooling into torch's ceil mode.

    PyTorch (`ceil_mode=True`, no padding) gives
    `ceil((size - pool_size) / strides) + 1` outputs, dropping the last window
    if it would start outside the input.
    """
    out = math.ceil((size - pool_size) / strides) + 1
    if (out - 1) * strides >= size:
        out -= 1
    return max((out - 1) * strides + pool_size - size, 0)


def fire_module(x, fire: Fire, name: str):
    """Applies a Fire module, naming each layer `{name}_squeeze1x1` etc."""
    x = layers.Conv2D(
        fire.squeeze, 1, activation="relu", kernel_initializer=_conv_init(),
        name=f"{name}_squeeze1x1",
    )(x)
    left = layers.Conv2D(
        fire.expand1x1, 1, activation="relu", kernel_initializer=_conv_init(),
        name=f"{name}_expand1x1",
    )(x)
    right = layers.Conv2D(
        fire.expand3x3, 3, padding="same", activation="relu",
        kernel_initializer=_conv_init(), name=f"{name}_expand3x3",
    )(x)
    return layers.Concatenate(axis=-1, name=f"{name}_concat")([left, right])


def max_pool_ceil(x, pool_size: int, strides: int, name: str):
    """Max-pool with PyTorch `ceil_mode=True` semantics.

    Keras pools floor-wise, so the input is padded on the bottom/right first.
    The pad value is 0: every pool in SqueezeNet follows a ReLU, so inputs are
    >= 0 and a zero never exceeds a window's true maximum, which makes this
    exactly torch's result (and keeps the graph quantization-friendly).
    """
    height, width = x.shape[1], x.shape[2]
    pad_h = ceil_pool_padding(height, pool_size, strides)
    pad_w = ceil_pool_padding(width, pool_size, strides)
    if pad_h or pad_w:
        x = layers.ZeroPadding2D(((0, pad_h), (0, pad_w)), name=f"{name}_pad")(x)
    return layers.MaxPooling2D(pool_size, strides=strides, name=name)(x)


def _check_positive(**kwargs):
    for key, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{key}` must be a positive integer. Received: {key}={value!r}"
            )


def SqueezeNet(
    include_top=True,
    input_shape=None,
    classes=10,
    pooling=None,
    classifier_activation="softmax",
    name="squeezenet",
    *,
    conv1_filters=96,
    conv1_kernel=7,
    conv1_strides=2,
    conv1_padding=0,
    pool_size=3,
    pool_strides=2,
    pool_after=SQUEEZENET_1_0_POOLS,
    fires=SQUEEZENET_1_0_FIRES,
    dropout=0.5,
):
    """Instantiates SqueezeNet 1.0 (torchvision layout) with CIFAR-sized inputs.

    Args:
        include_top: whether to include the classifier (dropout, conv10 1x1,
            ReLU, global average pooling). Defaults to `True`.
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        classes: number of classes of the classifier. Defaults to `10`.
        pooling: with `include_top=False`, `None` (4D feature map), `"avg"` or
            `"max"` (global pooling to 2D). Defaults to `None`.
        classifier_activation: activation of the top layer, a string, callable
            or `None` (logits). Defaults to `"softmax"`.
        name: model name. Defaults to `"squeezenet"`.
        conv1_filters: filters of conv1. Defaults to `96`.
        conv1_kernel: conv1 kernel size. Defaults to `7`.
        conv1_strides: conv1 stride. Defaults to `2`.
        conv1_padding: symmetric zero padding before conv1 (torch `padding`).
            Defaults to `0`.
        pool_size: max-pool kernel size; every pool uses ceil mode.
            Defaults to `3`.
        pool_strides: max-pool stride. Defaults to `2`.
        pool_after: names of the layers ("conv1" or a Fire name) that a
            max-pool follows. Defaults to torchvision's `("conv1", "fire4", "fire8")`.
        fires: ordered `(name, Fire)` pairs. Defaults to SqueezeNet 1.0's eight.
        dropout: dropout rate before conv10. Defaults to `0.5`.

    Returns:
        A `keras.Model`.
    """
    if input_shape is None:
        input_shape = (32, 32, 3)
    input_shape = tuple(input_shape)
    if len(input_shape) != 3 or any(
        not isinstance(d, int) or d < 1 for d in input_shape
    ):
        raise ValueError(
            "`input_shape` must be (height, width, channels) of positive "
            f"integers. Received: input_shape={input_shape!r}"
        )
    if include_top:
        _check_positive(classes=classes)
    elif pooling not in (None, "avg", "max"):
        raise ValueError(
            f"`pooling` must be None, 'avg' or 'max'. Received: pooling={pooling!r}"
        )
    _check_positive(
        conv1_filters=conv1_filters, conv1_kernel=conv1_kernel,
        conv1_strides=conv1_strides, pool_size=pool_size, pool_strides=pool_strides,
    )
    if not isinstance(conv1_padding, int) or conv1_padding < 0:
        raise ValueError(
            "`conv1_padding` must be a non-negative integer. "
            f"Received: conv1_padding={conv1_padding!r}"
        )
    if not (isinstance(dropout, (int, float)) and 0 <= dropout < 1):
        raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={dropout!r}")
    fires = tuple(fires)
    if not fires:
        raise ValueError(f"`fires` must name at least one Fire module. Received: fires={fires!r}")
    names = [fire_name for fire_name, _ in fires]
    if len(set(names)) != len(names):
        raise ValueError(f"`fires` names must be unique. Received: {names!r}")
    unknown = sorted(set(pool_after) - {"conv1", *names})
    if unknown:
        raise ValueError(
            "`pool_after` must name conv1 or a Fire module of `fires`. "
            f"Received: pool_after={tuple(pool_after)!r} (unknown: {unknown})"
        )

    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if conv1_padding:
        x = layers.ZeroPadding2D(conv1_padding, name="conv1_pad")(x)
    if x.shape[1] < conv1_kernel or x.shape[2] < conv1_kernel:
        raise ValueError(
            f"`input_shape` {input_shape} is too small for a {conv1_kernel}x"
            f"{conv1_kernel} conv1 with padding {conv1_padding}."
        )
    x = layers.Conv2D(
        conv1_filters, conv1_kernel, strides=conv1_strides, activation="relu",
        kernel_initializer=_conv_init(), name="conv1",
    )(x)
    if "conv1" in pool_after:
        x = max_pool_ceil(x, pool_size, pool_strides, name="pool1")
    for fire_name, fire in fires:
        x = fire_module(x, fire, fire_name)
        if fire_name in pool_after:
            x = max_pool_ceil(
                x, pool_size, pool_strides, name=f"pool{fire_name.removeprefix('fire')}"
            )

    if include_top:
        x = layers.Dropout(dropout, name="dropout")(x)
        # torchvision: final_conv init normal(0, 0.01), ReLU after it.
        x = layers.Conv2D(
            classes, 1, activation="relu",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="conv10",
        )(x)
        x = layers.GlobalAveragePooling2D(name="avgpool10")(x)
        # float32 output keeps the loss stable under mixed precision.
        x = layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    elif pooling == "avg":
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def table2(model: keras.Model):
    """The report's Table 2 for any `SqueezeNet` model, as a pandas DataFrame.

    One row per stage: layer, output shape (HxWxC), filter/stride/pad,
    s1x1, e1x1, e3x3 and parameters (weights and biases).
    """
    import pandas as pd

    def shape(layer):
        h, w, c = layer.output.shape[1:]
        return f"{h}x{w}x{c}"

    rows = []
    h, w, c = model.input_shape[1:]
    rows.append({"layer": "input", "output": f"{h}x{w}x{c}", "filter/stride/pad": ""})
    by_name = {layer.name: layer for layer in model.layers}
    for layer in model.layers:
        if layer.name in ("conv1", "conv10"):
            k = layer.kernel_size[0]
            pad = by_name["conv1_pad"].padding[0][0] if (
                layer.name == "conv1" and "conv1_pad" in by_name) else 0
            rows.append({
                "layer": layer.name, "output": shape(layer),
                "filter/stride/pad": f"{k}x{k}/{layer.strides[0]}/{pad}",
                "parameters": layer.count_params(),
            })
        elif isinstance(layer, layers.MaxPooling2D):
            k = layer.pool_size[0]
            pad = by_name.get(f"{layer.name}_pad")
            ceil_pad = pad.padding[0][1] if pad is not None else 0
            rows.append({
                "layer": layer.name, "output": shape(layer),
                "filter/stride/pad": f"{k}x{k}/{layer.strides[0]}/0"
                + (" (ceil)" if ceil_pad else ""),
            })
        elif layer.name.endswith("_concat"):
            fire = layer.name.removesuffix("_concat")
            parts = [by_name[f"{fire}_{p}"] for p in ("squeeze1x1", "expand1x1", "expand3x3")]
            rows.append({
                "layer": fire, "output": shape(layer), "filter/stride/pad": "",
                "s1x1": parts[0].filters, "e1x1": parts[1].filters, "e3x3": parts[2].filters,
                "parameters": sum(p.count_params() for p in parts),
            })
        elif isinstance(layer, (layers.GlobalAveragePooling2D, layers.GlobalMaxPooling2D)):
            rows.append({"layer": layer.name, "output": f"1x1x{layer.output.shape[-1]}",
                         "filter/stride/pad": "global"})
    df = pd.DataFrame(rows, columns=[
        "layer", "output", "filter/stride/pad", "s1x1", "e1x1", "e3x3", "parameters"])
    for col in ("s1x1", "e1x1", "e3x3", "parameters"):
        df[col] = df[col].astype("Int64")
    return df


def format_table2(df) -> str:
    """`table2(...)` as plain text, with empty cells blank (not `<NA>`)."""
    return df.astype(object).where(df.notna(), "").to_string(index=False)
