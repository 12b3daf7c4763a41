"""The Keras models against torchvision's SqueezeNet, logit for logit, without PyTorch.

tests/fixtures/torchvision/<experiment>.npz holds the eval-mode logits of
torchvision's `squeezenet1_0` (`squeezenet1_1` for v1_1) with the experiment's
changes applied to torchvision's own modules (tools/torchvision_fixtures.py),
for seeded weights and inputs that tests/torchvision_reference.py regenerates
here. Each test loads those weights into the Keras model built with
`classifier_activation=None` (torchvision returns the averaged ReLU(conv10),
no softmax) by name, torch OIHW kernels -> Keras HWIO, feeds the same batch
(NCHW -> NHWC) and compares the logits.
"""

import json
import pathlib
import re

import numpy as np
import pytest
from keras import layers

from squeeze_keras import experiments
from torchvision_reference import checksum, model_spec, reference_inputs, reference_weights

FIXTURES = pathlib.Path(__file__).parent / "fixtures" / "torchvision"
PATHS = sorted(FIXTURES.glob("*.npz"))
REPORT = ("baseline", "e1", "e2", "e3", "e4", "e5")
REGENERATE = "regenerate with tools/torchvision_fixtures.py (see its docstring)"
# Absolute, on logits of magnitude up to ~10: float32 rounding in two libraries' different
# summation orders gives ~1e-6; a wrong weight, pool or padding changes logits by O(1).
ATOL = 1e-4


def load(path):
    with np.load(path) as data:
        return json.loads(str(data["meta"])), data["logits"]


def torch_to_keras_names(state_dict, fire_names):
    """torch state_dict name -> (Keras layer name, "kernel" or "bias").

    `features.<i>.weight` is conv1; the `features.<i>.<part>` Fire modules are, in
    order, the config's Fire modules; `classifier.1` is conv10.
    """
    fire_index = {}
    mapping = {}
    for name, _ in state_dict:
        variable = {"weight": "kernel", "bias": "bias"}[name.rsplit(".", 1)[1]]
        if match := re.fullmatch(r"features\.(\d+)\.(weight|bias)", name):
            layer = "conv1"
        elif match := re.fullmatch(r"features\.(\d+)\.(squeeze|expand1x1|expand3x3)\.(weight|bias)",
                                   name):
            index = fire_index.setdefault(match[1], len(fire_index))
            assert index < len(fire_names), f"more Fire modules in torch than in the config: {name}"
            part = "squeeze1x1" if match[2] == "squeeze" else match[2]
            layer = f"{fire_names[index]}_{part}"
        elif re.fullmatch(r"classifier\.1\.(weight|bias)", name):
            layer = "conv10"
        else:
            raise AssertionError(f"unmapped torch tensor {name}")
        mapping[name] = (layer, variable)
    assert len(fire_index) == len(fire_names), (fire_index, fire_names)
    return mapping, {f"features.{i}": fire_names[n] for i, n in fire_index.items()}


def test_every_report_experiment_has_a_fixture():
    have = {path.stem for path in PATHS}
    missing = [name for name in REPORT if name not in have]
    assert not missing, f"no torchvision fixture for {missing}; {REGENERATE}"


def test_fixtures_exercise_ceil_mode_pooling():
    # 32x32 inputs: e.g. the baseline's pool after Fire4 gets 6x6, 3x3/2 windows -> 3x3 in
    # ceil mode (2x2 floor); the fixture records where torch's output exceeded floor pooling.
    ceil_pools = {path.stem: sum(p["ceil_used"] for p in load(path)[0]["pools"]) for path in PATHS}
    assert ceil_pools.get("baseline", 0) >= 1 and ceil_pools.get("e1", 0) >= 1, ceil_pools


def test_fixtures_stay_small():
    assert sum(path.stat().st_size for path in PATHS) < 100_000


@pytest.mark.parametrize("path", PATHS, ids=[path.stem for path in PATHS])
def test_logits_match_torchvision(path):
    meta, torch_logits = load(path)
    name = meta["experiment"]
    assert name in experiments.names(), f"fixture {path.name} for unknown experiment; {REGENERATE}"
    config = experiments.get(name)
    spec = json.loads(json.dumps(model_spec(config.model), default=repr))
    assert (meta["model_spec"], meta["classes"]) == (spec, config.classes), (
        f"{path.name} was made from another config of {name}; {REGENERATE}")

    weights = reference_weights(meta["state_dict"], meta["seed"])
    inputs = reference_inputs(meta["input_nchw"], meta["seed"])
    # Same numbers as the tool drew (else NumPy's streams changed, not the model).
    np.testing.assert_allclose(checksum(weights.values()), meta["weights_checksum"], rtol=1e-9)
    np.testing.assert_allclose(checksum([inputs]), meta["inputs_checksum"], rtol=1e-9)

    model = experiments.get(name).build_model(classifier_activation=None)
    fire_names = [fire for fire, _ in config.model.fires]
    mapping, fire_modules = torch_to_keras_names(meta["state_dict"], fire_names)
    # The tool named torch's modules by walking torchvision's model; the order agrees.
    assert fire_modules == {f[0]: f[2] for f in meta["features"] if f[1] == "Fire"}

    variables = {v.path: v for v in model.weights}
    assigned = {}
    for torch_name, shape in meta["state_dict"]:
        layer, attr = mapping[torch_name]
        variable = getattr(model.get_layer(layer), attr)
        value = weights[torch_name]
        assert list(value.shape) == shape
        if value.ndim == 4:
            value = value.transpose(2, 3, 1, 0)  # OIHW -> HWIO
        assert variable.path not in assigned, (torch_name, assigned.get(variable.path))
        assert tuple(variable.shape) == value.shape, (torch_name, variable.path)
        variable.assign(value)
        assigned[variable.path] = torch_name
    unassigned = sorted(set(variables) - set(assigned))
    assert not unassigned, f"Keras weights with no torch tensor: {unassigned}"
    assert len(assigned) == len(meta["state_dict"]) == len(model.weights)

    # torch's ceil-mode windows are Keras ZeroPadding2D + MaxPooling2D, at the same sizes.
    pools = [layer for layer in model.layers if isinstance(layer, layers.MaxPooling2D)]
    pads = [layer for layer in model.layers
            if isinstance(layer, layers.ZeroPadding2D) and layer.name.endswith("_pad")
            and layer.name != "conv1_pad"]
    assert [p.output.shape[1] for p in pools] == [p["out"] for p in meta["pools"]]
    assert len(pads) == sum(p["ceil_used"] for p in meta["pools"])

    logits = np.asarray(model(inputs.transpose(0, 2, 3, 1), training=False))
    assert logits.shape == torch_logits.shape
    diff = np.abs(logits - torch_logits).max()
    print(f"{name}: max |keras - torch| = {diff:.3g} (max |logit| {np.abs(torch_logits).max():.3g})")
    np.testing.assert_allclose(logits, torch_logits, rtol=0, atol=ATOL)
