"""The recipe proxies (`benchmarks/recipe.py`, #38): each changes one thing against its control."""

import dataclasses
import importlib.util
import json
import pathlib
import sys

import keras
import pytest

from squeeze_keras import experiments

ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipe():
    spec = importlib.util.spec_from_file_location("recipe", ROOT / "benchmarks" / "recipe.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["recipe"] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("recipe", None)


def _flat(config):
    out = {}
    for part in ("model", "protocol"):
        for key, value in dataclasses.asdict(getattr(config, part)).items():
            out[f"{part}.{key}"] = value
    return out


def test_each_proxy_differs_from_its_control_in_one_part(recipe):
    names = [proxy.name for proxy in recipe.PROXIES]
    assert len(set(names)) == len(names)
    for proxy in recipe.PROXIES:
        config = recipe.config_of(proxy)
        assert isinstance(config, experiments.ExperimentConfig) and config.name == proxy.name
        assert config.protocol.name == "proxy" and config.model.batch_norm == (
            proxy.experiment.endswith("_bn") or proxy.model.get("batch_norm", False))
        assert config.build_model().count_params() < 1_000_000, proxy.name
        if proxy.control is None:
            continue
        assert proxy.control in names[:names.index(proxy.name)], proxy.name
        mine, theirs = _flat(config), _flat(recipe.config_of(recipe.BY_NAME[proxy.control]))
        changed = {key for key in mine if mine[key] != theirs[key]}
        assert changed, f"{proxy.name} is its control {proxy.control}"
        # Architecture or recipe, never both: the gain is then that one change's.
        assert len({key.split(".")[0] for key in changed}) == 1, (proxy.name, changed)


def test_table_gives_each_proxy_its_gain_over_its_control(recipe, tmp_path):
    first, second = recipe.PROXIES[0], recipe.PROXIES[1]
    assert second.control == first.name
    for proxy, top1 in ((first, 50.0), (second, 57.25)):
        folder = tmp_path / f"{proxy.name}_proxy"
        folder.mkdir()
        (folder / "metrics.json").write_text(json.dumps({
            "experiment": proxy.name, "protocol": "proxy", "seed": 0, "report_top1": None,
            "top1": top1, "top5": 95.0, "top1_flip_tta": top1 + 1, "params": 727_594, "epochs": 4,
            "seconds_per_epoch": 200.0, "precision": "float32", "hardware": "a CPU"}))
        (folder / "history.csv").write_text("epoch,accuracy\n0,0.4\n3,0.6125\n")
    text = recipe.write_table(tmp_path)
    row = next(line for line in text.splitlines() if line.startswith(f"| {second.name} |"))
    assert "| 57.25 | 58.25 | +7.25 | 61.25 |" in row
    assert "Hardware: a CPU." in text and (tmp_path / "proxies.md").read_text() == text


def test_the_registered_recipe_is_the_winning_proxy_over_20_epochs(recipe):
    """`sgd_onecycle` is the proxy table's winner stretched to 20 epochs, builds that optimiser
    and schedule, and the committed table backs the choice."""
    from squeeze_keras import runs, train

    winner = recipe.BY_NAME[recipe.WINNER]
    protocol = experiments.PROTOCOLS[recipe.PROTOCOL]
    assert protocol == recipe.stretched(winner, recipe.PROTOCOL, 20)
    assert protocol.warmup_epochs * recipe.EPOCHS == winner.protocol["warmup_epochs"] * 20
    steps = 391  # 50,000 images in batches of 128
    optimizer = train.make_optimizer(protocol, steps, 20)
    assert isinstance(optimizer, keras.optimizers.SGD) and optimizer.nesterov
    assert optimizer.momentum == 0.9 and optimizer.weight_decay == protocol.weight_decay
    lr = optimizer._learning_rate
    for step, expected in ((0, protocol.learning_rate / 10),
                           (protocol.warmup_epochs * steps, protocol.learning_rate),
                           (20 * steps, 0.0)):
        assert float(lr(step)) == pytest.approx(expected, abs=1e-7), step
    assert train.make_loss(recipe.config_of(winner)).smoothing == protocol.label_smoothing

    # The committed table: the winner ran, and no proxy that changed only its recipe on the
    # winner's architecture did better.
    table = {name: runs.read_metrics(recipe.OUT / f"{name}_proxy") for name in recipe.BY_NAME}
    assert table[winner.name] is not None, "the winner's proxy is not committed"
    model = _flat(recipe.config_of(winner))
    for proxy in recipe.PROXIES:
        flat = _flat(recipe.config_of(proxy))
        same_model = all(flat[k] == v for k, v in model.items() if k.startswith("model."))
        if same_model and table[proxy.name] is not None:
            assert table[proxy.name]["top1"] <= table[winner.name]["top1"], proxy.name
