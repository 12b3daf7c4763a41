"""Top-5 with ties counted as misses (issue #36, case 9): the metric, and the committed record."""

import json
import pathlib

import keras
import numpy as np
import pytest

from squeeze_keras import experiments, train

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results"

# Ten classes, k = 5. Each row: scores, true class, hit with ties as misses, Keras's hit.
ROWS = [
    ([0] * 10, 0, 0, 1),                       # all tied: 9 classes score as high as the true one
    ([5, 4, 3, 2, 1, 0, 0, 0, 0, 0], 4, 1, 1),  # fifth, no tie: a hit either way
    ([5, 4, 3, 2, 1, 1, 0, 0, 0, 0], 4, 0, 1),  # fifth, tied with the sixth: a miss
    ([5, 4, 3, 2, 1, 1, 0, 0, 0, 0], 0, 1, 1),  # first: ties below it do not matter
    ([1, 1, 1, 1, 1, 0, 0, 0, 0, 0], 2, 1, 1),  # tied with 4 others, all 5 inside the top 5
    ([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], 2, 0, 1),  # tied with 5 others: one of them is sixth
    ([9, 8, 7, 6, 5, 0, 0, 0, 0, 0], 7, 0, 0),  # below five others: a miss either way
    ([0, 0, np.nan, 0, 0, 0, 0, 0, 0, 0], 2, 0, 0),  # a NaN score is never a hit
]
SCORES = np.array([row[0] for row in ROWS], np.float32)
LABELS = np.array([row[1] for row in ROWS])
HITS = np.array([row[2] for row in ROWS], np.float32)
KERAS_HITS = np.array([row[3] for row in ROWS], np.float32)


def test_a_tie_with_the_true_class_counts_against_it():
    hits = keras.ops.convert_to_numpy(train.top_k_hits(LABELS, SCORES))
    np.testing.assert_array_equal(hits, HITS)
    keras_metric = keras.metrics.SparseTopKCategoricalAccuracy(k=5)
    for scores, label, _, keras_hit in ROWS[:-1]:  # (NaN rows: Keras's answer is backend-defined)
        keras_metric.reset_state()
        keras_metric.update_state([label], np.array([scores], np.float32))
        assert float(keras_metric.result()) == keras_hit, (scores, label)


def test_the_metric_and_the_numpy_figure_agree_and_weigh_rows():
    metric = train.TopKNoTies(k=5)
    metric.update_state(LABELS.reshape(-1, 1), SCORES, sample_weight=np.ones(len(ROWS)))
    assert float(metric.result()) == pytest.approx(HITS.mean())
    metric.reset_state()
    weights = np.zeros(len(ROWS))
    weights[[1, 3]] = 1  # padding rows (weight 0) never count
    metric.update_state(LABELS, SCORES, sample_weight=weights)
    assert float(metric.result()) == 1.0
    assert train.topk_accuracy(SCORES, LABELS, 5) == round(100 * HITS.mean(), 2)
    # Top-1 is the arg-max's, as Keras's accuracy: rows 0 (a tie goes to class 0) and 3.
    assert train.topk_accuracy(SCORES[:-1], LABELS[:-1], 1) == round(100 * 2 / 7, 2)
    assert train.TopKNoTies.from_config(metric.get_config()).get_config() == metric.get_config()


def test_runs_compile_it_as_top5_so_a_constant_model_gets_no_top5():
    """What `train` compiles, so `history.csv`, `metrics.json` and the notebooks' tables use it."""
    inputs = keras.Input((4,))
    outputs = keras.layers.Dense(10, activation="softmax", kernel_initializer="zeros")(inputs)
    model = train.compile_model(keras.Model(inputs, outputs), experiments.get("e1"), 1, 1,
                                steps_per_execution=1)
    x, y = np.ones((20, 4), np.float32), np.arange(20) % 10
    result = model.evaluate(x, y, sample_weight=np.ones(20), return_dict=True, verbose=0)
    assert result["top5"] == 0.0  # Keras's top-5 gives 1.0: every class ties with the true one


def test_committed_runs_record_the_top5_without_ties_and_the_value_they_were_trained_with():
    seed1 = json.loads((RESULTS / "baseline_seed1" / "metrics.json").read_text())
    # Its cat channel is zero on every test image: Keras counted a tie at zero as a hit.
    assert (seed1["top5"], seed1["top5_with_ties"], seed1["top1"]) == (79.73, 99.13, 56.98)
    reevaluated = [json.loads(f.read_text()) for f in RESULTS.glob("*/metrics.json")]
    reevaluated = [m for m in reevaluated if "top5_reevaluated" in m]
    assert len(reevaluated) >= 19
    for m in reevaluated:
        measured = m["top5_reevaluated"]["measured"]
        assert m["top5"] <= measured["top5_with_ties"], m["experiment"]
        if m["precision"] == "float32":  # evaluated as trained: the same model, the same images
            assert (measured["top1"], measured["top5_with_ties"]) == (m["top1"],
                                                                      m["top5_with_ties"])
