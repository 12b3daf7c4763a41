"""Magnitude pruning: schedule, exact sparsity, a pruned model that still works and compresses."""

import gzip
import json

import keras
import numpy as np
import pytest

from squeeze_keras import SqueezeNet, data, export, prune, runs
from squeeze_keras.train import run_experiment


def test_cubic_schedule():
    assert prune.sparsity_at(0, 0.8, 10, 110) == 0
    assert prune.sparsity_at(10, 0.8, 10, 110) == 0
    assert prune.sparsity_at(60, 0.8, 10, 110) == pytest.approx(0.8 * (1 - 0.5 ** 3))
    assert prune.sparsity_at(110, 0.8, 10, 110) == pytest.approx(0.8)
    assert prune.sparsity_at(500, 0.8, 10, 110) == pytest.approx(0.8)


def test_masks_remove_the_smallest_weights_per_layer():
    model = SqueezeNet()
    before = {k.path: keras.ops.convert_to_numpy(k) for k in prune.prunable_kernels(model)}
    prune.apply_magnitude_masks(model, 0.75)
    assert prune.sparsity_of(model) == pytest.approx(0.75, abs=0.002)
    for kernel in prune.prunable_kernels(model):
        w, w0 = keras.ops.convert_to_numpy(kernel), before[kernel.path]
        kept = np.abs(w0[w != 0])
        assert kept.min() >= np.abs(w0[w == 0]).max()  # the largest survive
        np.testing.assert_array_equal(w[w != 0], w0[w != 0])  # untouched


def test_pruned_run_keeps_accuracy_and_gzips_smaller(learned, tmp_path):
    # The 4-epoch synthetic model is fragile (one-shot 50 % pruning drops it to ~30 %);
    # the gradual schedule with fine-tuning keeps it.
    out = tmp_path / "pruned"
    metrics = prune.prune_run(learned.run_dir, data="synthetic", sparsity=0.5, epochs=3,
                              out_dir=out, verbose=0)
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert metrics["top1"] > 50  # still far above chance (10 %)
    pruned = keras.models.load_model(out / "model.keras")
    original = keras.models.load_model(learned.run_dir / "model.keras")
    # `evaluate` on the padded batches (padding weighs 0) is the exact top-1 of every image.
    test = data.load("cifar10", "synthetic")
    pred = pruned.predict(data.normalize(test.x_test, "cifar"), verbose=0).argmax(1)
    assert test.test_size % 64 != 0  # the last batch is padded
    assert metrics["top1"] == round(100 * float((pred == test.y_test).mean()), 2)
    x = np.zeros((64, 32, 32, 3), np.float32)
    sizes = [len(gzip.compress(export.convert(m, "int8", x), 9)) for m in (original, pruned)]
    assert sizes[1] < 0.8 * sizes[0]
    source = json.loads((out / "source.json").read_text())
    assert source["source_sha256"] == runs.model_fingerprint(learned.run_dir / "model.keras")
    assert source["model_sha256"] == runs.model_fingerprint(out / "model.keras")
    assert source["data_identity"] == {"source": "synthetic"}


@pytest.mark.parametrize("sparsity", [60, 0, 1, 1.0, -0.5, True, "0.6"])
def test_sparsity_must_be_a_fraction(learned, sparsity):
    with pytest.raises(ValueError, match=rf"e\.g\. 0\.6 for 60 %\. Received: sparsity={sparsity!r}"):
        prune.prune_run(learned.run_dir, data="synthetic", sparsity=sparsity)
    with pytest.raises(ValueError, match="`sparsity`"):
        prune.pruned_dir(learned.run_dir, sparsity)


@pytest.mark.parametrize("epochs", [0, -1, 1.5, True, "6"])
def test_epochs_must_be_a_positive_integer(learned, epochs):
    with pytest.raises(ValueError, match=rf"`epochs` must be a positive integer\. "
                                         rf"Received: epochs={epochs!r}"):
        prune.prune_run(learned.run_dir, data="synthetic", epochs=epochs)


def test_pruned_dir_keeps_smoke_runs_apart(tmp_path):
    assert prune.pruned_dir(tmp_path, 0.6) == tmp_path / "pruned60"
    assert prune.pruned_dir(tmp_path, 0.6, limit=64) == tmp_path / "pruned60_limit64"


@pytest.fixture(scope="module")
def bf16_run(tmp_path_factory):
    """A few steps of E1 trained under `mixed_bfloat16` (whatever `auto` picks here)."""
    out = tmp_path_factory.mktemp("bf16")
    return run_experiment("e1", epochs=1, data="synthetic", limit=128, out_dir=out,
                          precision="mixed_bfloat16", verbose=0).run_dir


def test_mixed_bfloat16_run_is_pruned_and_exported(bf16_run):
    assert json.loads((bf16_run / "config.json").read_text())["precision"] == "mixed_bfloat16"
    with runs.dtype_policy("mixed_bfloat16"):  # a session left in mixed precision
        metrics = prune.prune_run(bf16_run, data="synthetic", sparsity=0.5, epochs=1,
                                  limit=64, verbose=0)
        pruned = prune.pruned_dir(bf16_run, 0.5, limit=64)
        config, model = runs.load_trained_model(pruned)
        assert keras.mixed_precision.global_policy().name == "mixed_bfloat16"
        mixed = config.build_model()  # the pruned weights in a mixed-precision model
        mixed.set_weights(model.get_weights())
        x = data.normalize(data.load("cifar10", "synthetic", limit=16).x_train, "cifar")
        content = export.convert(mixed, "int8", x)
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert keras.mixed_precision.global_policy().name == "float32"
    assert len(content) < 0.3 * 4 * 740_554
    table = export.export_run(bf16_run, data="synthetic", forms=("int8",), eval_limit=64,
                              representative=16, latency_runs=2)
    assert list(table["form"]) == ["keras (reference)", "int8"]


def test_pruning_again_removes_the_exports_of_the_old_model(bf16_run):
    pruned = prune.pruned_dir(bf16_run, 0.5, limit=32)
    for stale in ("litert", "litert_limit32"):
        (pruned / stale).mkdir(parents=True)
        (pruned / stale / "litert.csv").write_text("form,bytes\nint8,1\n")
    prune.prune_run(bf16_run, data="synthetic", sparsity=0.5, epochs=1, limit=32, verbose=0)
    assert not any(pruned.glob("litert*"))
    assert {p.name for p in pruned.iterdir()} == {
        "model.keras", "config.json", "metrics.json", "source.json"}


def test_pruning_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        prune.prune_run(tmp_path, data="synthetic")
