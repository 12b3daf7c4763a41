"""Magnitude pruning: schedule, exact sparsity, a pruned model that still works and compresses."""

import gzip

import keras
import numpy as np
import pytest

from squeeze_keras import SqueezeNet, export, prune


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
    with pytest.raises(ValueError, match="target=1.5"):
        prune.MagnitudePruning(1.5, 0, 10)


def test_pruned_run_keeps_accuracy_and_gzips_smaller(learned, tmp_path):
    # The 4-epoch synthetic model is fragile (one-shot 50 % pruning drops it to ~30 %);
    # the gradual schedule with fine-tuning keeps it.
    metrics = prune.prune_run(learned.run_dir, data="synthetic", sparsity=0.5, epochs=3,
                              out_dir=tmp_path / "pruned", verbose=0)
    assert metrics["sparsity"] == pytest.approx(0.5, abs=0.01)
    assert metrics["top1"] > 50  # still far above chance (10 %)
    pruned = keras.models.load_model(tmp_path / "pruned" / "model.keras")
    original = keras.models.load_model(learned.run_dir / "model.keras")
    x = np.zeros((64, 32, 32, 3), np.float32)
    sizes = [len(gzip.compress(export.convert(m, "int8", x), 9)) for m in (original, pruned)]
    assert sizes[1] < 0.8 * sizes[0]


def test_pruning_needs_a_finished_run(tmp_path):
    with pytest.raises(FileNotFoundError, match="no model.keras"):
        prune.prune_run(tmp_path, data="synthetic")
