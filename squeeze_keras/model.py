"""SqueezeNet for Keras 3: the architecture as data and the one factory that builds it.

The network is data (`ModelConfig`): a first convolution, a tuple of Fire
specs, the names of the layers that a max-pool follows, and the design-space
switches of the SqueezeNet paper (bypass connections, batch normalisation).
Its defaults are torchvision's `squeezenet1_0`. The report's experiments and
the design-space variants change only that data (see `squeeze_keras.experiments`).

Reference: Iandola et al., "SqueezeNet: AlexNet-level accuracy with 50x fewer
parameters and <0.5MB model size" (2016); torchvision.models.squeezenet.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math

import os

from squeeze_keras import pretrained



class _Keras:
    """`keras`, imported when first used.

    `experiments` (and so the command line's `list`) reads `ModelConfig` and
    the registry without loading Keras and its backend: importing TensorFlow
    takes seconds and prints C++ log lines.
    """

    def __getattr__(self, name):
        import keras

        return getattr(keras, name)


keras = _Keras()

BYPASS_TYPES = ("simple", "complex")


@contextlib.contextmanager
def channels_last():
    """Keras's image data format set to `channels_last` for a block (or a decorated function).

    A user's `~/.keras/keras.json` may say `channels_first`, which every
    Conv2D, pooling and padding layer would otherwise follow: the package's
    models, pipelines and weights are NHWC, whatever that file says.
    """
    previous = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_last")
    try:
        yield
    finally:
        keras.config.set_image_data_format(previous)


def _check_positive(**kwargs):
    for key, value in kwargs.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(
                f"`{key}` must be a positive integer. Received: {key}={value!r}"
            )


@dataclasses.dataclass(frozen=True)
class Fire:
    """One Fire module: a 1x1 squeeze feeding parallel 1x1 and 3x3 expands."""

    squeeze: int
    expand1x1: int
    expand3x3: int

    def __post_init__(self):
        _check_positive(
            squeeze=self.squeeze, expand1x1=self.expand1x1, expand3x3=self.expand3x3
        )


# torchvision squeezenet1_0 and squeezenet1_1, `features` in order (fire2 ... fire9);
# both versions have these widths.
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
# torchvision: max-pools after conv1 (+ReLU), fire4 and fire8 (1.0) ...
SQUEEZENET_1_0_POOLS: tuple[str, ...] = ("conv1", "fire4", "fire8")
# ... and after conv1, fire3 and fire5 (1.1).
SQUEEZENET_1_1_POOLS: tuple[str, ...] = ("conv1", "fire3", "fire5")
FIRE_NAMES: tuple[str, ...] = tuple(name for name, _ in SQUEEZENET_1_0_FIRES)


def _round_width(x: float) -> int:
    # Round half up (not Python's round-half-to-even), at least one channel.
    return max(1, math.floor(x + 0.5))


def fire_family(base_e=128, incr_e=128, freq=2, sr=0.125, pct3x3=0.5, names=FIRE_NAMES):
    """Fire widths from the SqueezeNet paper's metaparameters (Iandola et al., section 5).

    Fire module `i` (0 for the first of `names`) expands to
    `e_i = base_e + incr_e * floor(i / freq)` channels, of which
    `e3x3_i = pct3x3 * e_i` are 3x3 and `e1x1_i = e_i - e3x3_i` are 1x1, and
    squeezes to `s_i = sr * e_i`. Fractional widths round to the nearest
    integer, halves up, with at least one channel; `e3x3_i` is then kept in
    `[1, e_i - 1]` so that both expands exist. The defaults give SqueezeNet
    1.0's (and 1.1's) Fire modules exactly.

    Args:
        base_e: expand channels of the first Fire module. Defaults to `128`.
        incr_e: expand channels added every `freq` modules. Defaults to `128`.
        freq: number of Fire modules between increments. Defaults to `2`.
        sr: squeeze ratio, squeeze channels over expand channels. Defaults to `0.125`.
        pct3x3: share of 3x3 filters among the expand filters, in (0, 1).
            Defaults to `0.5`.
        names: names of the Fire modules, in order. Defaults to `fire2` ... `fire9`.

    Returns:
        A tuple of `(name, Fire)` pairs, the `fires` of `ModelConfig`.
    """
    if not isinstance(base_e, int) or isinstance(base_e, bool) or base_e < 2:
        raise ValueError(f"`base_e` must be an integer >= 2. Received: base_e={base_e!r}")
    if not isinstance(incr_e, int) or isinstance(incr_e, bool) or incr_e < 0:
        raise ValueError(f"`incr_e` must be a non-negative integer. Received: incr_e={incr_e!r}")
    _check_positive(freq=freq)
    if isinstance(sr, bool) or not isinstance(sr, (int, float)) or not sr > 0:
        raise ValueError(f"`sr` must be a positive number. Received: sr={sr!r}")
    if isinstance(pct3x3, bool) or not isinstance(pct3x3, (int, float)) or not 0 < pct3x3 < 1:
        raise ValueError(f"`pct3x3` must be in (0, 1). Received: pct3x3={pct3x3!r}")
    names = tuple(names)
    if not names:
        raise ValueError(f"`names` must name at least one Fire module. Received: names={names!r}")
    fires = []
    for i, name in enumerate(names):
        e = base_e + incr_e * (i // freq)
        e3x3 = min(max(_round_width(pct3x3 * e), 1), e - 1)
        fires.append((name, Fire(_round_width(sr * e), e - e3x3, e3x3)))
    return tuple(fires)


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """The architecture of a `SqueezeNet`; the defaults are torchvision's `squeezenet1_0`.

    Sequences are stored as tuples. Every field is checked on construction and
    an invalid one raises a `ValueError` naming it.

    Attributes:
        conv1_filters: filters of conv1.
        conv1_kernel: conv1 kernel size.
        conv1_strides: conv1 stride.
        conv1_padding: symmetric zero padding before conv1 (torch `padding`).
        pool_size: max-pool kernel size; every pool uses torch's ceil mode.
        pool_strides: max-pool stride.
        pool_after: names of the layers ("conv1" or a Fire name) that a
            max-pool follows.
        fires: ordered `(name, Fire)` pairs.
        dropout: dropout rate before conv10, in [0, 1).
        bypass: names of the Fire modules that get a shortcut: the module's
            input is added to its output (paper, section 6).
        bypass_type: `"simple"`: identity shortcuts only, so every module in
            `bypass` must keep its channel count (no extra parameters).
            `"complex"`: a 1x1 convolution projects the shortcut where the
            channel counts differ, identity where they match.
        batch_norm: batch normalisation after every convolution but conv10.
    """

    conv1_filters: int = 96
    conv1_kernel: int = 7
    conv1_strides: int = 2
    conv1_padding: int = 0
    pool_size: int = 3
    pool_strides: int = 2
    pool_after: tuple[str, ...] = SQUEEZENET_1_0_POOLS
    fires: tuple[tuple[str, Fire], ...] = SQUEEZENET_1_0_FIRES
    dropout: float = 0.5
    bypass: tuple[str, ...] = ()
    bypass_type: str = "simple"
    batch_norm: bool = False

    def __post_init__(self):
        _check_positive(
            conv1_filters=self.conv1_filters, conv1_kernel=self.conv1_kernel,
            conv1_strides=self.conv1_strides, pool_size=self.pool_size,
            pool_strides=self.pool_strides,
        )
        if (not isinstance(self.conv1_padding, int) or isinstance(self.conv1_padding, bool)
                or self.conv1_padding < 0):
            raise ValueError(
                "`conv1_padding` must be a non-negative integer. "
                f"Received: conv1_padding={self.conv1_padding!r}"
            )
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float))
                or not 0 <= self.dropout < 1):
            raise ValueError(f"`dropout` must be in [0, 1). Received: dropout={self.dropout!r}")
        for key in ("pool_after", "fires", "bypass"):
            value = getattr(self, key)
            if isinstance(value, str):
                raise ValueError(
                    f"`{key}` must be a sequence, not a string. Received: {key}={value!r}"
                )
            object.__setattr__(self, key, tuple(
                tuple(item) if key == "fires" else item for item in value))
        if not self.fires:
            raise ValueError(
                f"`fires` must name at least one Fire module. Received: fires={self.fires!r}"
            )
        for item in self.fires:
            if len(item) != 2 or not isinstance(item[0], str) or not isinstance(item[1], Fire):
                raise ValueError(
                    f"`fires` must hold (name, Fire) pairs. Received: {item!r} in fires"
                )
        names = [name for name, _ in self.fires]
        if len(set(names)) != len(names):
            raise ValueError(f"`fires` names must be unique. Received: {names!r}")
        unknown = sorted(set(self.pool_after) - {"conv1", *names})
        if unknown:
            raise ValueError(
                "`pool_after` must name conv1 or a Fire module of `fires`. "
                f"Received: pool_after={self.pool_after!r} (unknown: {unknown})"
            )
        unknown = sorted(set(self.bypass) - set(names))
        if unknown or len(set(self.bypass)) != len(self.bypass):
            raise ValueError(
                "`bypass` must name distinct Fire modules of `fires`. "
                f"Received: bypass={self.bypass!r}"
                + (f" (unknown: {unknown})" if unknown else "")
            )
        if self.bypass_type not in BYPASS_TYPES:
            raise ValueError(
                f"`bypass_type` must be one of {BYPASS_TYPES}. "
                f"Received: bypass_type={self.bypass_type!r}"
            )
        if self.bypass_type == "simple":
            mismatched = [
                f"{name} ({c_in} -> {c_out})"
                for name, c_in, c_out in self.fire_channels() if name in self.bypass
                and c_in != c_out
            ]
            if mismatched:
                raise ValueError(
                    "A simple bypass needs a Fire module whose input and output "
                    f"channels match; use bypass_type='complex' for {mismatched}. "
                    f"Received: bypass={self.bypass!r}"
                )
        if not isinstance(self.batch_norm, bool):
            raise ValueError(
                f"`batch_norm` must be True or False. Received: batch_norm={self.batch_norm!r}"
            )

    def fire_channels(self) -> list[tuple[str, int, int]]:
        """`(name, input channels, output channels)` of each Fire module, in order."""
        out, channels = [], self.conv1_filters  # pools keep the channel count
        for name, fire in self.fires:
            out.append((name, channels, fire.expand1x1 + fire.expand3x3))
            channels = out[-1][2]
        return out


def _conv_init():
    # torchvision: init.kaiming_uniform_(w) (a=0, fan_in) -> U(+-sqrt(6 / fan_in)).
    return keras.initializers.HeUniform()


def _batch_norm(name):
    """Batch norm with torch's `BatchNorm2d` defaults (see `_conv_relu`), by the fused kernel."""
    from squeeze_keras.layers import FusedBatchNormalization  # imports Keras: only when built

    return FusedBatchNormalization(momentum=0.9, epsilon=1e-5, name=name)


def _conv_relu(x, filters, kernel, name, batch_norm, **conv_kwargs):
    """Conv2D + ReLU, or with `batch_norm` Conv2D (no bias) -> BN -> ReLU.

    A bias before BN is redundant (BN subtracts the batch mean, then adds its
    own beta), so it is dropped. BN uses torch's BatchNorm2d defaults
    (momentum 0.1, i.e. Keras `momentum=0.9`; epsilon 1e-5): faithful to the
    torch lineage, and the moving statistics settle within short runs.
    """
    if not batch_norm:
        return keras.layers.Conv2D(
            filters, kernel, activation="relu", kernel_initializer=_conv_init(),
            name=name, **conv_kwargs,
        )(x)
    x = keras.layers.Conv2D(
        filters, kernel, use_bias=False, kernel_initializer=_conv_init(), name=name,
        **conv_kwargs,
    )(x)
    x = _batch_norm(f"{name}_bn")(x)
    return keras.layers.ReLU(name=f"{name}_relu")(x)


@channels_last()
def fire_module(x, fire: Fire, name: str, *, batch_norm=False, bypass=None):
    """Applies a Fire module, naming each layer `{name}_squeeze1x1` etc.

    Args:
        x: input tensor (NHWC).
        fire: the module's widths.
        name: prefix of every layer name, e.g. `"fire3"`.
        batch_norm: conv -> BN -> ReLU instead of conv -> ReLU. Defaults to `False`.
        bypass: `None`, `"simple"` (identity shortcut; the input must have the
            module's output channels) or `"complex"` (identity where the
            channels match, else a linear 1x1 convolution, with BN under
            `batch_norm`). The shortcut is added to the concatenated expands
            (`{name}_bypass`), as in the paper's Figure 2. Defaults to `None`.

    Returns:
        The output tensor.
    """
    if bypass not in (None, *BYPASS_TYPES):
        raise ValueError(
            f"`bypass` must be None or one of {BYPASS_TYPES}. Received: bypass={bypass!r}"
        )
    shortcut = x
    x = _conv_relu(x, fire.squeeze, 1, f"{name}_squeeze1x1", batch_norm)
    left = _conv_relu(x, fire.expand1x1, 1, f"{name}_expand1x1", batch_norm)
    right = _conv_relu(x, fire.expand3x3, 3, f"{name}_expand3x3", batch_norm, padding="same")
    x = keras.layers.Concatenate(axis=-1, name=f"{name}_concat")([left, right])
    if bypass is None:
        return x
    channels = fire.expand1x1 + fire.expand3x3
    if shortcut.shape[-1] != channels:
        if bypass == "simple":
            raise ValueError(
                f"A simple bypass around {name} needs {channels} input channels "
                f"(its output); the input has {shortcut.shape[-1]}. Use bypass='complex'."
            )
        shortcut = keras.layers.Conv2D(
            channels, 1, use_bias=not batch_norm, kernel_initializer=_conv_init(),
            name=f"{name}_bypass_conv",
        )(shortcut)
        if batch_norm:
            shortcut = _batch_norm(f"{name}_bypass_bn")(shortcut)
    return keras.layers.Add(name=f"{name}_bypass")([x, shortcut])


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


def _edge_pad(x, pad_h: int, pad_w: int, name: str):
    # Repeats the last row/column; the final layer is named `name`.
    for axis, pad in ((1, pad_h), (2, pad_w)):
        if not pad:
            continue
        size = x.shape[axis]
        crop = ((size - 1, 0), (0, 0)) if axis == 1 else ((0, 0), (size - 1, 0))
        edge = keras.layers.Cropping2D(crop, name=f"{name}_edge{axis}")(x)
        last = axis == 2 or not pad_w
        x = keras.layers.Concatenate(axis=axis, name=name if last else f"{name}_rows")(
            [x] + [edge] * pad)
    return x


@channels_last()
def max_pool_ceil(x, pool_size: int, strides: int, name: str, *, nonnegative=True):
    """Max-pool with PyTorch `ceil_mode=True` semantics.

    Keras pools floor-wise, so the input is padded on the bottom/right first
    (layer `{name}_pad`). With `nonnegative` (inputs after a ReLU) the pad value
    is 0: a zero never exceeds a window's true maximum, which makes this
    exactly torch's result and keeps the graph quantization-friendly. Otherwise
    (after a linear bypass projection) the last row and column are repeated:
    every padded window also holds the value it copies, since torch's last
    window starts inside the input, so this is exact for any sign.
    """
    height, width = x.shape[1], x.shape[2]
    pad_h = ceil_pool_padding(height, pool_size, strides)
    pad_w = ceil_pool_padding(width, pool_size, strides)
    if (pad_h or pad_w) and nonnegative:
        x = keras.layers.ZeroPadding2D(((0, pad_h), (0, pad_w)), name=f"{name}_pad")(x)
    elif pad_h or pad_w:
        x = _edge_pad(x, pad_h, pad_w, name=f"{name}_pad")
    return keras.layers.MaxPooling2D(pool_size, strides=strides, name=name)(x)


ARCHITECTURE_ARGS = tuple(f.name for f in dataclasses.fields(ModelConfig))
# Arguments that hold no weights, so they may differ from the named weights' architecture.
_FREE_WITH_WEIGHTS = ("dropout",)


def _model_config_from_json(obj: dict) -> ModelConfig:
    """A `ModelConfig` from its JSON form (lists for tuples, Fire specs as dicts)."""
    fields = dict(obj)
    fields["fires"] = tuple((name, Fire(**fire)) for name, fire in obj["fires"])
    return ModelConfig(**fields)


def _as_stored(key, value):
    """An architecture argument as `ModelConfig` stores it (sequences as tuples)."""
    if key == "fires" and not isinstance(value, str):
        return tuple(tuple(item) for item in value)
    if key in ("pool_after", "bypass") and not isinstance(value, str):
        return tuple(value)
    return value


def _resolve_weights(weights, include_top, input_shape, classes, architecture):
    """Checks `weights` against the other arguments; returns (file or None, ModelConfig).

    `architecture` holds the architecture arguments as given (`None`: not given).
    """
    given = {key: value for key, value in architecture.items() if value is not None}
    if weights is None:
        return None, ModelConfig(**given)
    if isinstance(weights, str) and weights in pretrained.names():
        path = pretrained.weights_file(weights)  # unknown, unavailable or damaged: ValueError
        info = pretrained.weights_info(weights)
        arch = _model_config_from_json(info["architecture"])
        for key, value in given.items():
            wanted = getattr(arch, key)
            if key not in _FREE_WITH_WEIGHTS and _as_stored(key, value) != wanted:
                raise ValueError(
                    f"`{key}` is fixed by weights={weights!r} (the {info['experiment']} "
                    f"architecture has {key}={wanted!r}): leave it out. Received: {key}={value!r}")
        if include_top and classes != info["classes"]:
            raise ValueError(
                f"If using `weights={weights!r}` with `include_top=True`, `classes` should be "
                f"{info['classes']}. Received: classes={classes!r}")
        if include_top and input_shape != (32, 32, 3):
            raise ValueError(
                f"If using `weights={weights!r}` with `include_top=True`, `input_shape` should "
                "be (32, 32, 3), the size the classifier was trained on; use include_top=False "
                f"(the trained trunk) for other sizes. Received: input_shape={input_shape!r}")
        if input_shape[-1] != 3:
            raise ValueError(
                f"If using `weights={weights!r}`, `input_shape` should have 3 channels (RGB). "
                f"Received: input_shape={input_shape!r}")
        if "dropout" in given:
            arch = dataclasses.replace(arch, dropout=given["dropout"])
        return path, arch
    if isinstance(weights, (str, os.PathLike)) and os.fspath(weights).endswith(".weights.h5"):
        if not os.path.isfile(weights):
            raise ValueError(f"The `weights` file does not exist. Received: weights={weights!r}")
        return weights, ModelConfig(**given)
    raise ValueError(
        "The `weights` argument should be either `None` (random initialization), one of "
        f"{pretrained.available()} (weights that ship with squeeze_keras; see `weights_info`), "
        f"or the path of a .weights.h5 file. Received: weights={weights!r}")


def SqueezeNet(
    include_top=True,
    weights=None,
    input_shape=None,
    classes=10,
    pooling=None,
    classifier_activation="softmax",
    name="squeezenet",
    *,
    conv1_filters=None,
    conv1_kernel=None,
    conv1_strides=None,
    conv1_padding=None,
    pool_size=None,
    pool_strides=None,
    pool_after=None,
    fires=None,
    dropout=None,
    bypass=None,
    bypass_type=None,
    batch_norm=None,
):
    """Instantiates SqueezeNet (torchvision layout) with CIFAR-sized inputs, optionally trained.

    Layer names follow torchvision's modules: `conv1`, `pool1`,
    `fire2_squeeze1x1`, `fire2_expand1x1`, `fire2_expand3x3`, `fire2_concat`,
    ..., `conv10`; with batch normalisation each convolution `c` is followed by
    `c_bn` and `c_relu`; a bypass adds `fireN_bypass` (and `fireN_bypass_conv`
    for a projection).

    Batch normalisation (`batch_norm=True`) goes between each convolution and
    its ReLU (conv -> BN -> ReLU, as in torchvision's BN networks), so that
    every ReLU sees normalised inputs; those convolutions have no bias. conv10,
    the classifier, keeps its bias and gets no BN, like the final layer of
    torchvision's BN networks: a BN there would only rescale the logits.

    Named weights ship inside the package (nothing is downloaded; their
    SHA-256 is checked on loading). They fix the architecture: the
    architecture arguments are left out (or given their values); only
    `dropout`, which holds no weights, may differ. `"cifar10"` is E4 trained
    with the `tuned2` protocol (80.19 % top-1 on the CIFAR-10 test split,
    `squeeze_keras.weights_info("cifar10")`); its inputs are
    `squeeze_keras.preprocess_input(images)` and its outputs go to
    `squeeze_keras.decode_predictions`:

    ```python
    model = SqueezeNet(weights="cifar10")
    preds = model.predict(preprocess_input(images))  # uint8 RGB, (n, 32, 32, 3)
    decode_predictions(preds, top=3)
    ```

    Args:
        include_top: whether to include the classifier (dropout, conv10 1x1,
            ReLU, global average pooling). Defaults to `True`.
        weights: `None` (random initialisation, as torchvision's), the name
            of weights that ship with the package (`"cifar10"`; `"cifar100"`
            once its run exists), or the path of a `.weights.h5` file for the
            model these arguments describe. With named weights and
            `include_top=True`, `classes` must be theirs and `input_shape`
            (32, 32, 3); with `include_top=False` the trained trunk takes any
            RGB `input_shape`. Defaults to `None`.
        input_shape: `(height, width, channels)`. Defaults to `(32, 32, 3)`.
        classes: number of classes of the classifier. Defaults to `10`.
        pooling: with `include_top=False`, `None` (4D feature map), `"avg"` or
            `"max"` (global pooling to 2D). Defaults to `None`.
        classifier_activation: activation of the top layer, a string, callable
            or `None` (logits). Defaults to `"softmax"`.
        name: model name. Defaults to `"squeezenet"`.
        conv1_filters, conv1_kernel, conv1_strides, conv1_padding, pool_size,
        pool_strides, pool_after, fires, dropout, bypass, bypass_type,
        batch_norm: the architecture, the fields of `ModelConfig` (documented
            there). `None` (left out): the named weights' architecture, or
            `ModelConfig`'s defaults, SqueezeNet 1.0.

    Returns:
        A `keras.Model`.

    Raises:
        ValueError: an invalid argument, or a combination the weights do not
            fit, naming the argument and the value received.
    """
    architecture = dict(
        conv1_filters=conv1_filters, conv1_kernel=conv1_kernel, conv1_strides=conv1_strides,
        conv1_padding=conv1_padding, pool_size=pool_size, pool_strides=pool_strides,
        pool_after=pool_after, fires=fires, dropout=dropout, bypass=bypass,
        bypass_type=bypass_type, batch_norm=batch_norm,
    )
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
    weights_path, arch = _resolve_weights(weights, include_top, input_shape, classes, architecture)
    if weights_path is None or not isinstance(weights, str) or weights not in pretrained.names():
        model = _build(arch, include_top, input_shape, classes, pooling, classifier_activation, name)
        if weights_path is not None:
            model.load_weights(weights_path)
        return model
    # Named weights: load the whole trained model, then hand its weights to the model asked for.
    full = _build(arch, True, (32, 32, 3), pretrained.weights_info(weights)["classes"], None,
                  classifier_activation, name)
    full.load_weights(weights_path)
    if include_top:
        return full
    trunk = _build(arch, False, input_shape, classes, pooling, None, name)
    for layer in trunk.layers:
        if layer.weights:
            layer.set_weights(full.get_layer(layer.name).get_weights())
    return trunk


@channels_last()
def _build(arch, include_top, input_shape, classes, pooling, classifier_activation, name):
    """The `SqueezeNet` graph of `arch`, freshly initialised; the arguments are checked."""
    inputs = keras.Input(shape=input_shape, name="input")
    x = inputs
    if arch.conv1_padding:
        x = keras.layers.ZeroPadding2D(arch.conv1_padding, name="conv1_pad")(x)
    if x.shape[1] < arch.conv1_kernel or x.shape[2] < arch.conv1_kernel:
        raise ValueError(
            f"`input_shape` {input_shape} is too small for a {arch.conv1_kernel}x"
            f"{arch.conv1_kernel} conv1 with padding {arch.conv1_padding}."
        )
    x = _conv_relu(x, arch.conv1_filters, arch.conv1_kernel, "conv1", arch.batch_norm,
                   strides=arch.conv1_strides)
    if "conv1" in arch.pool_after:
        x = max_pool_ceil(x, arch.pool_size, arch.pool_strides, name="pool1")
    # A projected shortcut is linear, so a sum may be negative (until the next ReLU).
    nonnegative = True
    for fire_name, fire in arch.fires:
        kind = arch.bypass_type if fire_name in arch.bypass else None
        projected = kind == "complex" and x.shape[-1] != fire.expand1x1 + fire.expand3x3
        x = fire_module(x, fire, fire_name, batch_norm=arch.batch_norm, bypass=kind)
        nonnegative = not projected and (kind is None or nonnegative)
        if fire_name in arch.pool_after:
            x = max_pool_ceil(
                x, arch.pool_size, arch.pool_strides,
                name=f"pool{fire_name.removeprefix('fire')}", nonnegative=nonnegative,
            )

    if include_top:
        x = keras.layers.Dropout(arch.dropout, name="dropout")(x)
        # torchvision: final_conv init normal(0, 0.01), ReLU after it.
        x = keras.layers.Conv2D(
            classes, 1, activation="relu",
            kernel_initializer=keras.initializers.RandomNormal(stddev=0.01),
            name="conv10",
        )(x)
        x = keras.layers.GlobalAveragePooling2D(name="avgpool10")(x)
        # float32 output keeps the loss stable under mixed precision.
        x = keras.layers.Activation(classifier_activation, dtype="float32", name="predictions")(x)
    elif pooling == "avg":
        x = keras.layers.GlobalAveragePooling2D(name="avg_pool")(x)
    elif pooling == "max":
        x = keras.layers.GlobalMaxPooling2D(name="max_pool")(x)
    return keras.Model(inputs, x, name=name)


def table2(model: keras.Model):
    """The report's Table 2 for any `SqueezeNet` model, as a pandas DataFrame.

    One row per stage: layer, output shape (HxWxC), filter/stride/pad,
    s1x1, e1x1, e3x3 and parameters. A row's parameters are those of every
    layer it stands for (conv1 with its BN; a Fire module with its BNs and
    bypass projection), so the column sums to `model.count_params()`.
    """
    import pandas as pd

    def shape(layer):
        h, w, c = layer.output.shape[1:]
        return f"{h}x{w}x{c}"

    rows = []
    h, w, c = model.input_shape[1:]
    rows.append({"layer": "input", "output": f"{h}x{w}x{c}", "filter/stride/pad": ""})
    by_name = {layer.name: layer for layer in model.layers}

    def params(prefix):
        return sum(layer.count_params() for name, layer in by_name.items()
                   if name == prefix or name.startswith(f"{prefix}_"))

    for layer in model.layers:
        if layer.name in ("conv1", "conv10"):
            k = layer.kernel_size[0]
            pad = by_name["conv1_pad"].padding[0][0] if (
                layer.name == "conv1" and "conv1_pad" in by_name) else 0
            rows.append({
                "layer": layer.name, "output": shape(layer),
                "filter/stride/pad": f"{k}x{k}/{layer.strides[0]}/{pad}",
                "parameters": params(layer.name),
            })
        elif isinstance(layer, keras.layers.MaxPooling2D):
            k = layer.pool_size[0]
            # `max_pool_ceil` adds `{name}_pad` only where ceil mode needs padding.
            rows.append({
                "layer": layer.name, "output": shape(layer),
                "filter/stride/pad": f"{k}x{k}/{layer.strides[0]}/0"
                + (" (ceil)" if f"{layer.name}_pad" in by_name else ""),
            })
        elif layer.name.endswith("_concat"):
            fire = layer.name.removesuffix("_concat")
            parts = [by_name[f"{fire}_{p}"] for p in ("squeeze1x1", "expand1x1", "expand3x3")]
            rows.append({
                "layer": fire, "output": shape(layer), "filter/stride/pad": "",
                "s1x1": parts[0].filters, "e1x1": parts[1].filters, "e3x3": parts[2].filters,
                "parameters": params(fire),
            })
        elif isinstance(layer, (keras.layers.GlobalAveragePooling2D, keras.layers.GlobalMaxPooling2D)):
            rows.append({"layer": layer.name, "output": f"1x1x{layer.output.shape[-1]}",
                         "filter/stride/pad": "global"})
    df = pd.DataFrame(rows, columns=[
        "layer", "output", "filter/stride/pad", "s1x1", "e1x1", "e3x3", "parameters"])
    for col in ("s1x1", "e1x1", "e3x3", "parameters"):
        df[col] = df[col].astype("Int64")
    return df


def forward_gflops(model: keras.Model) -> float:
    """GFLOP of one image's forward pass: 2 x the multiply-adds of every convolution.

    Pooling, ReLU and batch normalisation are not counted. A training step costs
    about 3x this (forward and backward pass), so an epoch's cost on the same
    images scales with it.
    """
    flops = 0
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            _, h, w, c_out = layer.output.shape
            k_h, k_w, c_in, _ = layer.kernel.shape
            flops += 2 * h * w * c_out * k_h * k_w * c_in
    return flops / 1e9


def format_table2(df) -> str:
    """`table2(...)` as plain text, with empty cells blank (not `<NA>`)."""
    return df.astype(object).where(df.notna(), "").to_string(index=False)
