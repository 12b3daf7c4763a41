"""Architecture: exact parameter counts, torch-derived layer shapes, ceil pooling, init."""

import dataclasses
import math

import keras
import numpy as np
import pytest

from squeeze_keras import experiments
from squeeze_keras.model import (
    Fire, ModelConfig, SqueezeNet, ceil_pool_padding, format_table2, max_pool_ceil, table2,
)

# torchvision 0.29 squeezenet1_0 with each experiment's changes applied (report, Table 1).
EXPECTED_PARAMS = {
    "baseline": 740_554, "e1": 740_554, "e2": 727_594,
    "e3": 715_162, "e4": 727_594, "e5": 773_764,
}


def torch_conv_out(size, kernel, stride, padding):
    """torch.nn.Conv2d: floor((size + 2p - k) / s) + 1."""
    return (size + 2 * padding - kernel) // stride + 1


def torch_pool_out(size, kernel, stride):
    """torch.nn.MaxPool2d(ceil_mode=True, padding=0), incl. the 'start inside' rule."""
    out = math.ceil((size - kernel) / stride) + 1
    if (out - 1) * stride >= size:
        out -= 1
    return out


def torch_spatial_sizes(config):
    """Spatial size after conv1, each pool and each Fire, walked like torch's `features`."""
    m = config.model
    size = torch_conv_out(32, m.conv1_kernel, m.conv1_strides, m.conv1_padding)
    sizes = {"conv1": size}
    if "conv1" in m.pool_after:
        size = sizes["pool1"] = torch_pool_out(size, m.pool_size, m.pool_strides)
    for name, _ in m.fires:
        sizes[name] = size  # Fire keeps the size (1x1 and padded 3x3 convs)
        if name in m.pool_after:
            size = sizes[f"pool{name[4:]}"] = torch_pool_out(size, m.pool_size, m.pool_strides)
    sizes["conv10"] = size
    return sizes


@pytest.fixture(scope="module")
def models():
    return {name: experiments.get(name).build_model() for name in experiments.names()}


@pytest.mark.parametrize("name", list(EXPECTED_PARAMS))
def test_parameter_counts_match_torchvision(models, name):
    assert models[name].count_params() == EXPECTED_PARAMS[name]


def test_registry_holds_the_report_experiments_first_in_report_order():
    assert experiments.REPORT == ("baseline", "e1", "e2", "e3", "e4", "e5")
    assert experiments.names()[:6] == list(experiments.REPORT)


def test_e3_report_count_is_seven_off():
    # Table 1 prints 715,169; removing Fire3 from E2 leaves 715,162.
    config = experiments.get("e3")
    assert config.report_params - EXPECTED_PARAMS["e3"] == 7
    assert EXPECTED_PARAMS["e2"] - EXPECTED_PARAMS["e3"] == 12_432  # Fire3's parameters


@pytest.mark.parametrize("name", experiments.names())
def test_layer_sizes_follow_torch_formulas(models, name):
    config = experiments.get(name)
    model = models[name]
    for layer_name, size in torch_spatial_sizes(config).items():
        layer_name = f"{layer_name}_concat" if layer_name.startswith("fire") else layer_name
        assert model.get_layer(layer_name).output.shape[1:3] == (size, size), layer_name


def test_pool_sizes_of_baseline_and_e4():
    b = experiments.get("baseline").build_model()
    assert [b.get_layer(n).output.shape[1] for n in ("conv1", "pool1", "pool4", "pool8")] == [13, 6, 3, 1]
    e4 = experiments.get("e4").build_model()
    assert [e4.get_layer(n).output.shape[1] for n in ("conv1", "pool4", "pool8")] == [33, 17, 9]
    assert "pool1" not in [layer.name for layer in e4.layers]


def test_e4_matches_table2_of_the_report(models):
    df = table2(models["e4"]).set_index("layer")
    assert df.loc["conv1", "output"] == "33x33x96"
    assert df.loc["conv1", "filter/stride/pad"] == "2x2/1/1"
    for fire, out in [("fire2", "33x33x128"), ("fire3", "33x33x128"), ("fire4", "33x33x256"),
                      ("fire5", "17x17x256"), ("fire6", "17x17x384"), ("fire7", "17x17x384"),
                      ("fire8", "17x17x512"), ("fire9", "9x9x512")]:
        assert df.loc[fire, "output"] == out
    assert df.loc["pool4", "output"] == "17x17x256"
    assert df.loc["pool8", "output"] == "9x9x512"
    assert df.loc["conv10", "output"] == "9x9x10"
    assert df.loc["avgpool10", "output"] == "1x1x10"
    # Table 2's Fire parameters that the report prints correctly.
    for fire, params in [("fire2", 11_920), ("fire3", 12_432), ("fire5", 49_440),
                         ("fire6", 104_880), ("fire7", 111_024), ("fire8", 188_992),
                         ("fire9", 197_184)]:
        assert df.loc[fire, "parameters"] == params
    # The report prints Fire4 as 16/128/128 with 43,344 and conv10 as 5,120; torchvision's
    # Fire4 squeezes to 32 (45,344 with biases) and conv10 has 10 biases (5,130).
    assert tuple(df.loc["fire4", ["s1x1", "e1x1", "e3x3"]]) == (32, 128, 128)
    assert df.loc["fire4", "parameters"] == 45_344
    assert df.loc["conv10", "parameters"] == 5_130
    assert df["parameters"].sum() == EXPECTED_PARAMS["e4"]


@pytest.mark.parametrize("size,kernel,stride", [(13, 3, 2), (6, 3, 2), (3, 3, 2), (13, 2, 2),
                                               (33, 2, 2), (17, 2, 2), (8, 3, 2), (9, 3, 3)])
def test_ceil_pooling_equals_torch(size, kernel, stride):
    rng = np.random.default_rng(size * kernel + stride)
    x = rng.random((2, size, size, 3)).astype("float32")  # >= 0, as after a ReLU
    inputs = keras.Input((size, size, 3))
    model = keras.Model(inputs, max_pool_ceil(inputs, kernel, stride, name="pool"))
    got = keras.ops.convert_to_numpy(model(x))
    out = torch_pool_out(size, kernel, stride)
    want = np.empty((2, out, out, 3), "float32")
    for i in range(out):
        for j in range(out):  # torch clips the last window at the border
            window = x[:, i * stride:i * stride + kernel, j * stride:j * stride + kernel]
            want[:, i, j] = window.max(axis=(1, 2))
    np.testing.assert_array_equal(got, want)
    assert ceil_pool_padding(size, kernel, stride) >= 0


def test_layers_are_named_and_initialised_like_torchvision(models):
    model = models["baseline"]
    names = {layer.name for layer in model.layers}
    for fire in [f"fire{i}" for i in range(2, 10)]:
        assert {f"{fire}_squeeze1x1", f"{fire}_expand1x1", f"{fire}_expand3x3"} <= names
    conv10 = model.get_layer("conv10")
    assert conv10.activation is keras.activations.relu  # ReLU after conv10, as torchvision
    w = keras.ops.convert_to_numpy(conv10.kernel)
    assert abs(w.std() - 0.01) < 0.001 and abs(w.mean()) < 0.001
    conv = model.get_layer("fire9_expand3x3")
    w = keras.ops.convert_to_numpy(conv.kernel)
    bound = math.sqrt(6 / (3 * 3 * 64))  # kaiming_uniform_, fan_in = 3*3*64
    assert w.max() <= bound and w.min() >= -bound and w.std() > 0.5 * bound / math.sqrt(3)
    for layer in model.layers:
        if isinstance(layer, keras.layers.Conv2D):
            assert not keras.ops.convert_to_numpy(layer.bias).any()
    dropout_before_conv10 = [layer.name for layer in model.layers][-4]
    assert dropout_before_conv10 == "dropout"


def test_headless_model_and_pooling():
    features = SqueezeNet(include_top=False)
    assert features.output.shape[1:] == (1, 1, 512)
    pooled = SqueezeNet(include_top=False, pooling="avg", input_shape=(64, 64, 3))
    assert pooled.output.shape[1:] == (512,)
    logits = SqueezeNet(classes=7, classifier_activation=None)
    assert logits.output.shape[1:] == (7,)


@pytest.mark.parametrize("kwargs,needle", [
    ({"dropout": 1.5}, "dropout=1.5"),
    ({"classes": 0}, "classes=0"),
    ({"include_top": False, "pooling": "mean"}, "pooling='mean'"),
    ({"pool_after": ("conv1", "fire42")}, "fire42"),
    ({"conv1_kernel": 0}, "conv1_kernel=0"),
    ({"conv1_padding": -1}, "conv1_padding=-1"),
    ({"input_shape": (32, 32)}, "input_shape=(32, 32)"),
    ({"input_shape": (5, 5, 3)}, "too small"),
    ({"fires": ()}, "fires=()"),
    ({"fires": (("fire2", Fire(16, 64, 64)), ("fire2", Fire(16, 64, 64)))}, "unique"),
])
def test_bad_arguments_raise_value_error_naming_them(kwargs, needle):
    with pytest.raises(ValueError, match=None) as err:
        SqueezeNet(**kwargs)
    assert needle in str(err.value)


def test_unknown_experiment_lists_known_ones():
    with pytest.raises(ValueError, match=r"Unknown experiment 'e9'.*baseline.*e5"):
        experiments.get("e9")


def test_duplicate_registration_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        experiments.register("e1")(experiments.e1)


@pytest.mark.parametrize("name", experiments.names())
def test_each_experiment_changes_only_what_it_says(name):
    config = experiments.get(name)
    assert config.validate() is config
    assert config.classes == (100 if name == "e5" else 10)
    assert config.epochs == 20 and config.protocol.name == "paper"


def test_experiment_diffs():
    b, e1, e2, e3, e4 = (experiments.get(n) for n in ("baseline", "e1", "e2", "e3", "e4"))
    assert (b.preprocessing, e1.preprocessing) == ("imagenet", "cifar")
    assert (b.model.pool_size, e1.model.pool_size) == (3, 2)
    assert (e2.model.conv1_kernel, e2.model.conv1_strides, e2.model.conv1_padding) == (2, 1, 1)
    assert [n for n, _ in e3.model.fires] == ["fire2", "fire4", "fire5", "fire6", "fire7", "fire8", "fire9"]
    assert e3.model.dropout == 0.3
    assert e4.model.pool_after == ("fire4", "fire8") and e4.model.fires == e2.model.fires


def test_model_round_trips_through_keras_file(tmp_path):
    model = experiments.get("e3").build_model()
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, 32, 32, 3)).astype("float32")
    np.testing.assert_allclose(loaded.predict(x, verbose=0), model.predict(x, verbose=0), rtol=1e-6)


def test_table2_text_leaves_empty_cells_blank(models):
    text = format_table2(table2(models["e4"]))
    assert "<NA>" not in text and "nan" not in text.lower()
    assert text.splitlines()[1].split() == ["input", "32x32x3"]


def test_saved_report_models_keep_their_weight_layout():
    # results/ holds models saved before the design space existed; they load by set_weights.
    model = experiments.get("e4").build_model()
    assert len(model.weights) == 52
    assert [w.path for w in model.weights[:4]] == [
        "conv1/kernel", "conv1/bias", "fire2_squeeze1x1/kernel", "fire2_squeeze1x1/bias"]


def test_architecture_defaults_have_one_home():
    import inspect

    defaults = ModelConfig()
    params = inspect.signature(SqueezeNet).parameters
    # `None`: ModelConfig's default (or, with named weights, the weights' architecture).
    for field in dataclasses.fields(ModelConfig):
        assert params[field.name].default is None, field.name
    assert [layer.get_config() for layer in SqueezeNet().layers[1:]] == [
        layer.get_config() for layer in SqueezeNet(**{
            f.name: getattr(defaults, f.name) for f in dataclasses.fields(ModelConfig)}).layers[1:]]
    assert experiments.ModelConfig is ModelConfig
    assert experiments.get("baseline").model == defaults


@pytest.mark.parametrize("kwargs,needle", [
    ({"optimizer": "lamb"}, "`optimizer` must be one of ('adam', 'adamw', 'sgd_nesterov'). "
                            "Received: optimizer='lamb'"),
    ({"optimizer": "sgd"}, "optimizer='sgd'"),
    ({"schedule": "cosine"}, "`schedule` must be one of ('constant', 'warmup_cosine', "
                             "'warmup_linear'). Received: schedule='cosine'"),
    ({"optimizer": "lamb", "schedule": "cosine"}, "optimizer='lamb'"),
    ({"learning_rate": 0}, "learning_rate=0"),
    ({"learning_rate": "1e-3"}, "learning_rate='1e-3'"),
    ({"batch_size": 0}, "batch_size=0"),
    ({"batch_size": 64.0}, "batch_size=64.0"),
    ({"weight_decay": -0.1}, "weight_decay=-0.1"),
    ({"warmup_epochs": -1}, "warmup_epochs=-1"),
    ({"warmup_epochs": 1}, "schedule='constant'"),
    ({"label_smoothing": 1.0}, "label_smoothing=1.0"),
    ({"label_smoothing": -0.1}, "label_smoothing=-0.1"),
    ({"name": ""}, "name=''"),
])
def test_protocol_checks_fields_on_construction(kwargs, needle):
    with pytest.raises(ValueError) as err:
        experiments.Protocol(**kwargs)
    assert needle in str(err.value)


def test_protocols_are_valid_and_sgd_comes_only_with_nesterov_momentum():
    assert experiments.OPTIMIZERS == ("adam", "adamw", "sgd_nesterov")
    assert not hasattr(experiments.Protocol(), "momentum")
    for name, protocol in experiments.PROTOCOLS.items():
        assert protocol.name == name and dataclasses.replace(protocol) == protocol


@pytest.mark.parametrize("kwargs,needle", [
    ({"dataset": "mnist"}, "`dataset` must be one of ('cifar10', 'cifar100'). Received: dataset='mnist'"),
    ({"preprocessing": "none"}, "preprocessing='none'"),
    ({"epochs": 0}, "epochs=0"),
    ({"epochs": 2.5}, "epochs=2.5"),
    ({"name": ""}, "name=''"),
    ({"model": {"dropout": 0.5}}, "`model` must be a ModelConfig"),
    ({"protocol": "tuned"}, "`protocol` must be a Protocol"),
])
def test_experiment_config_checks_fields_on_construction(kwargs, needle):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(experiments.get("e4"), **kwargs)
    assert needle in str(err.value)
    with pytest.raises(ValueError):
        experiments.ExperimentConfig(**{"name": "x", "description": "", **kwargs})


@pytest.mark.parametrize("kwargs,needle", [
    ({"dropout": 1.0}, "dropout=1.0"),
    ({"pool_size": 0}, "pool_size=0"),
    ({"pool_after": ("fire1",)}, "fire1"),
    ({"fires": ()}, "fires=()"),
])
def test_model_config_checks_fields_on_construction(kwargs, needle):
    with pytest.raises(ValueError) as err:
        dataclasses.replace(experiments.get("e4").model, **kwargs)
    assert needle in str(err.value)


def test_with_protocol_and_unknown_protocol():
    config = experiments.get("e4").with_protocol("tuned2")
    assert config.protocol is experiments.PROTOCOLS["tuned2"] and config.name == "e4"
    with pytest.raises(ValueError, match=r"Unknown protocol 'fast'.*paper"):
        experiments.get("e4").with_protocol("fast")
