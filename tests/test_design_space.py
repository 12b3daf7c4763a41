"""Design space: Fire-width family, SqueezeNet 1.1, bypass, batch norm, exact counts, learning."""

import dataclasses

import keras
import numpy as np
import pytest

from squeeze_keras import data, experiments
from squeeze_keras.model import (
    SQUEEZENET_1_0_FIRES, Fire, ModelConfig, SqueezeNet, fire_family, max_pool_ceil, table2,
)

# Parameter counts of the design-space variants (10 classes), each also derived
# from the layer widths by `expected_params` below.
EXPECTED_PARAMS = {
    "v1_1": 727_626,  # torchvision squeezenet1_1 with a 10-class conv10
    "e4_bypass": 727_594,  # E4's count: identity shortcuts have no parameters
    "e4_complex_bypass": 1_068_842,
    "e4_bn": 736_522,
    "e4_sr250": 1_446_250, "e4_sr500": 2_883_562, "e4_sr750": 4_320_874,
    "e4_sr1000": 5_758_186,
    "e4_pct01": 246_058, "e4_pct25": 481_834, "e4_pct75": 973_354, "e4_pct99": 1_209_130,
}


def expected_params(model: ModelConfig, classes: int) -> int:
    """Parameters from the widths alone: weights, plus a bias or 4 BN values per channel."""
    per_channel = 4 if model.batch_norm else 1  # BN: gamma, beta, moving mean and variance

    def conv(c_in, c_out, k):
        return c_in * c_out * k * k + per_channel * c_out

    total = conv(3, model.conv1_filters, model.conv1_kernel)
    channels = model.conv1_filters
    for name, fire in model.fires:
        s, e1, e3 = fire.squeeze, fire.expand1x1, fire.expand3x3
        total += conv(channels, s, 1) + conv(s, e1, 1) + conv(s, e3, 3)
        if name in model.bypass and channels != e1 + e3:
            total += conv(channels, e1 + e3, 1)  # complex bypass projection
        channels = e1 + e3
    return total + channels * classes + classes  # conv10 keeps its bias, no BN


def bn_channels(model: ModelConfig) -> int:
    """Channels that carry a BN layer (each holds 2 trainable and 2 moving values)."""
    if not model.batch_norm:
        return 0
    total = channels = model.conv1_filters
    for name, fire in model.fires:
        out = fire.expand1x1 + fire.expand3x3
        total += fire.squeeze + out + (out if name in model.bypass and channels != out else 0)
        channels = out
    return total


@pytest.fixture(scope="module")
def models():
    return {name: experiments.get(name).build_model() for name in experiments.names()}


def test_default_family_is_squeezenet_1_0_and_1_1_and_e4():
    assert fire_family() == SQUEEZENET_1_0_FIRES
    for name in ("baseline", "e4", "v1_1"):
        assert experiments.get(name).model.fires == fire_family(), name
    assert fire_family(sr=0.125, pct3x3=0.5) == experiments.get("e4").model.fires
    assert experiments.SR_SWEEP[0.125] == experiments.PCT3X3_SWEEP[0.5] == "e4"


def test_family_formula_and_rounding():
    fires = dict(fire_family(base_e=96, incr_e=32, freq=3, sr=0.25, pct3x3=0.3))
    # e_i = 96 + 32 * floor(i / 3): 96, 96, 96, 128, 128, 128, 160, 160
    assert [f.expand1x1 + f.expand3x3 for f in fires.values()] == [96] * 3 + [128] * 3 + [160] * 2
    assert fires["fire2"] == Fire(24, 67, 29)  # 0.3 * 96 = 28.8 -> 29
    assert fires["fire9"] == Fire(40, 112, 48)
    # Halves round up; both expands keep at least one channel.
    assert dict(fire_family(base_e=2, incr_e=0, sr=0.25, pct3x3=0.25))["fire2"] == Fire(1, 1, 1)
    low = dict(experiments.get("e4_pct01").model.fires)
    high = dict(experiments.get("e4_pct99").model.fires)
    assert [f.expand3x3 for f in low.values()] == [1, 1, 3, 3, 4, 4, 5, 5]
    assert [f.expand1x1 for f in high.values()] == [1, 1, 3, 3, 4, 4, 5, 5]
    sr1 = dict(experiments.get("e4_sr1000").model.fires)
    assert [f.squeeze for f in sr1.values()] == [128, 128, 256, 256, 384, 384, 512, 512]


@pytest.mark.parametrize("kwargs,needle", [
    ({"base_e": 1}, "base_e=1"), ({"incr_e": -1}, "incr_e=-1"), ({"freq": 0}, "freq=0"),
    ({"sr": 0}, "sr=0"), ({"pct3x3": 1.0}, "pct3x3=1.0"), ({"names": ()}, "names=()"),
])
def test_family_refuses_bad_arguments(kwargs, needle):
    with pytest.raises(ValueError) as err:
        fire_family(**kwargs)
    assert needle in str(err.value)


def test_registry_lists_report_then_design_space():
    assert experiments.names() == [*experiments.REPORT, *experiments.DESIGN_SPACE]
    assert set(EXPECTED_PARAMS) == set(experiments.DESIGN_SPACE)
    for sweep, field in ((experiments.SR_SWEEP, "squeeze"), (experiments.PCT3X3_SWEEP, "expand3x3")):
        values = list(sweep)
        assert values == sorted(values) and set(sweep.values()) <= set(experiments.names())
        widths = [dict(experiments.get(name).model.fires)["fire9"] for name in sweep.values()]
        assert [getattr(f, field) for f in widths] == sorted(getattr(f, field) for f in widths)


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_counts_are_exact(models, name):
    config = experiments.get(name)
    assert expected_params(config.model, config.classes) == EXPECTED_PARAMS[name]
    assert models[name].count_params() == EXPECTED_PARAMS[name]
    assert config.report_top1 is None and config.report_params is None  # not in the report
    assert config.dataset == "cifar10" and config.protocol.name == "paper"


@pytest.mark.parametrize("name", experiments.REPORT)
def test_formula_reproduces_the_report_experiments(models, name):
    config = experiments.get(name)
    assert expected_params(config.model, config.classes) == models[name].count_params()


def test_published_torchvision_counts():
    v10, v11 = experiments.get("baseline"), experiments.get("v1_1")
    assert v10.build_model().count_params() == 740_554
    assert v11.build_model().count_params() == 727_626
    assert v10.build_model(classes=1000).count_params() == 1_248_424
    assert v11.build_model(classes=1000).count_params() == 1_235_496
    assert expected_params(v11.model, 1000) == 1_235_496


def test_v1_1_layout(models):
    config, model = experiments.get("v1_1"), models["v1_1"]
    assert config.preprocessing == experiments.get("baseline").preprocessing == "imagenet"
    conv1 = model.get_layer("conv1")
    assert (conv1.filters, conv1.kernel_size, conv1.strides) == (64, (3, 3), (2, 2))
    assert "conv1_pad" not in [layer.name for layer in model.layers]
    # 32 -> conv1 15 -> pool1 7 -> pool3 3 -> pool5 1 (3x3/2, ceil mode)
    sizes = [model.get_layer(n).output.shape[1] for n in ("conv1", "pool1", "pool3", "pool5")]
    assert sizes == [15, 7, 3, 1]
    assert model.get_layer("pool1").pool_size == (3, 3)


def test_bypass_layers(models):
    simple = {layer.name for layer in models["e4_bypass"].layers}
    assert {f"fire{i}_bypass" for i in (3, 5, 7, 9)} <= simple
    assert not any(n.endswith("_bypass_conv") or n in ("fire2_bypass", "fire4_bypass") for n in simple)
    complex_ = {layer.name for layer in models["e4_complex_bypass"].layers}
    assert {f"fire{i}_bypass" for i in range(2, 10)} <= complex_
    assert {n for n in complex_ if n.endswith("_bypass_conv")} == {
        f"fire{i}_bypass_conv" for i in (2, 4, 6, 8)}
    assert models["e4_complex_bypass"].get_layer("fire4_bypass_conv").use_bias


def test_batch_norm_placement_and_trainable_count(models):
    model, config = models["e4_bn"], experiments.get("e4_bn")
    names = [layer.name for layer in model.layers]
    for conv in ("conv1", "fire2_squeeze1x1", "fire9_expand3x3"):
        assert not model.get_layer(conv).use_bias
        bn, relu = model.get_layer(f"{conv}_bn"), model.get_layer(f"{conv}_relu")
        assert bn.input is model.get_layer(conv).output and relu.input is bn.output
    assert model.get_layer("conv10").use_bias and "conv10_bn" not in names
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == EXPECTED_PARAMS["e4_bn"] - 2 * bn_channels(config.model)


def _bn_step(layer, x, weights):
    import tensorflow as tf

    with tf.GradientTape() as tape:
        inputs = tf.constant(x)
        tape.watch(inputs)
        outputs = layer(inputs, training=True)
        loss = tf.reduce_sum(tf.cast(outputs, "float32") * weights)
    grads = tape.gradient(loss, [inputs, layer.gamma, layer.beta])
    return [np.asarray(t, np.float32) for t in (outputs, *grads)]


@pytest.mark.skipif(keras.backend.backend() != "tensorflow", reason="the fused kernel is TF's")
def test_fused_batch_norm_is_keras_batch_norm_computed_faster():
    from squeeze_keras.layers import FusedBatchNormalization

    rng = np.random.default_rng(0)
    x = rng.normal(2, 3, (8, 5, 5, 6)).astype("float32")
    weights = rng.normal(size=x.shape).astype("float32")
    gamma = rng.normal(1, 0.2, 6).astype("float32")
    layers = []
    for cls in (keras.layers.BatchNormalization, FusedBatchNormalization):
        layer = cls(momentum=0.9, epsilon=1e-5)
        layer.build(x.shape)
        layer.gamma.assign(gamma)
        layers.append((layer, _bn_step(layer, x, weights)))
    (plain, expected), (fused, got) = layers
    for a, b in zip(expected, got):  # outputs, and the gradients of input, gamma and beta
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(fused.moving_mean, plain.moving_mean, rtol=1e-6)
    n = 8 * 5 * 5  # the moving variance takes the unbiased batch variance, as torch's does
    np.testing.assert_allclose(np.asarray(fused.moving_variance) - 0.9,
                               (np.asarray(plain.moving_variance) - 0.9) * n / (n - 1), rtol=1e-5)
    fused.moving_variance.assign(plain.moving_variance)
    np.testing.assert_allclose(fused(x, training=False), plain(x, training=False), atol=1e-5)
    assert fused.get_config() == {**plain.get_config(), "name": fused.name}

    # Under bfloat16: bfloat16 out, float32 statistics, the float32 result to bf16 precision.
    policy = keras.DTypePolicy("mixed_bfloat16")
    half = FusedBatchNormalization(momentum=0.9, epsilon=1e-5, dtype=policy)
    half.build(x.shape)
    half.gamma.assign(gamma)
    outputs = half(keras.ops.cast(x, "bfloat16"), training=True)
    assert keras.backend.standardize_dtype(outputs.dtype) == "bfloat16"
    assert half.moving_mean.dtype == "float32"
    np.testing.assert_allclose(np.asarray(keras.ops.cast(outputs, "float32")), expected[0],
                               atol=0.05)


def test_batch_norm_models_save_and_load_with_the_fused_layer(models, tmp_path):
    from squeeze_keras.layers import FusedBatchNormalization

    model = models["e4_bn"]
    bns = [layer for layer in model.layers if "_bn" in layer.name]
    assert bns and all(type(layer) is FusedBatchNormalization for layer in bns)
    model.save(tmp_path / "e4_bn.keras")
    again = keras.models.load_model(tmp_path / "e4_bn.keras")
    assert type(again.get_layer("conv1_bn")) is FusedBatchNormalization
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(again.predict(x, verbose=0), model.predict(x, verbose=0),
                               atol=1e-6)


@pytest.mark.parametrize("name", experiments.names())
def test_every_experiment_builds_validates_and_has_table2(models, name):
    config = experiments.get(name)
    assert config.validate() is config
    df = table2(models[name]).set_index("layer")
    fires = [n for n, _ in config.model.fires]
    assert [n for n in df.index if n.startswith("fire")] == fires
    for fire_name, fire in config.model.fires:
        assert tuple(df.loc[fire_name, ["s1x1", "e1x1", "e3x3"]]) == (
            fire.squeeze, fire.expand1x1, fire.expand3x3)
    pools = [f"pool{p.removeprefix('fire').removeprefix('conv')}" for p in config.model.pool_after]
    assert [n for n in df.index if n.startswith("pool")] == pools
    assert df["parameters"].sum() == models[name].count_params()


@pytest.mark.parametrize("kwargs,needle", [
    ({"bypass": ("fire2",)}, "fire2 (96 -> 128)"),
    ({"bypass": ("fire42",)}, "fire42"),
    ({"bypass": ("fire3", "fire3")}, "distinct"),
    ({"bypass": "fire3"}, "not a string"),
    ({"bypass_type": "dense"}, "bypass_type='dense'"),
    ({"batch_norm": 1}, "batch_norm=1"),
    ({"fires": (("fire2", (16, 64, 64)),)}, "(name, Fire) pairs"),
])
def test_bad_design_arguments_raise(kwargs, needle):
    for build in (ModelConfig, SqueezeNet):
        with pytest.raises(ValueError) as err:
            build(**kwargs)
        assert needle in str(err.value)


def test_fire_widths_must_be_positive():
    with pytest.raises(ValueError, match=r"`expand3x3` must be a positive integer. Received: expand3x3=0"):
        Fire(16, 64, 0)


@pytest.mark.parametrize("size,kernel,stride", [(33, 2, 2), (13, 3, 2), (10, 3, 3)])
def test_ceil_pooling_is_exact_for_negative_inputs(size, kernel, stride):
    x = -1 - np.random.default_rng(size).random((2, size, size, 3)).astype("float32")
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, max_pool_ceil(inputs, kernel, stride, name="pool", nonnegative=False))
    got = keras.ops.convert_to_numpy(model(x))
    out = got.shape[1]
    want = np.stack([np.stack([x[:, i * stride:i * stride + kernel, j * stride:j * stride + kernel]
                               .max(axis=(1, 2)) for j in range(out)], 1) for i in range(out)], 1)
    np.testing.assert_array_equal(got, want)
    assert (got < 0).all()  # zero padding would have put zeros on the border


def test_saved_design_space_model_round_trips(tmp_path):
    model = experiments.get("e4_complex_bypass").build_model(input_shape=(16, 16, 3))
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    x = np.random.default_rng(0).normal(size=(2, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-5)


@pytest.fixture(scope="module")
def small_images():
    # 16x16 (2x2 means) of the synthetic images, whose class templates are 8x8 blocks.
    (x, y), (xt, yt) = data.synthetic_arrays(train_size=384, test_size=200, seed=0)

    def prep(images):
        images = images.astype("float32").reshape(len(images), 16, 2, 16, 2, 3).mean((2, 4))
        return (images - 128) / 64

    return (prep(x), y), (prep(xt), yt)


@pytest.mark.parametrize("name", ["e4_bypass", "e4_bn"])
def test_variant_learns_on_synthetic_data(small_images, name):
    """The registered wiring (bypass adds, BN placement) trains, scaled down for the CPU.

    Widths are a quarter of E4's (conv1 32, fire_family(base_e=32, incr_e=32)) and
    inputs are 16x16: E4 itself trains at tens of images per second on a CPU.
    """
    (x, y), (xt, yt) = small_images
    arch = dataclasses.replace(
        experiments.get(name).model, conv1_filters=32, fires=fire_family(base_e=32, incr_e=32))
    keras.utils.set_random_seed(0)
    model = SqueezeNet(input_shape=(16, 16, 3),
                       **{f.name: getattr(arch, f.name) for f in dataclasses.fields(arch)})
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, batch_size=32, epochs=5, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    _, accuracy = model.evaluate(xt, yt, verbose=0)
    assert accuracy > 0.3, history  # chance is 10 %


def test_a_batch_norm_model_file_loads_in_a_fresh_process_through_runs(models, tmp_path):
    import subprocess
    import sys

    models["e4_bn"].save(tmp_path / "e4_bn.keras")
    code = ("import keras, squeeze_keras.runs, sys; "
            f"m = keras.models.load_model({str(tmp_path / 'e4_bn.keras')!r}); "
            "print(type(m.get_layer('conv1_bn')).__name__, m.count_params())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split()[-2:] == ["FusedBatchNormalization", "736522"]
