"""Table 1 and the best run are read from run folders, and missing runs stay missing."""

import json

import pandas as pd
import pytest

from squeeze_keras import results
from squeeze_keras.plots import plot_validation_curves


def fake_run(results_dir, folder, experiment, top1, protocol="paper", seed=0):
    run_dir = results_dir / folder
    run_dir.mkdir(parents=True)
    pd.DataFrame({"epoch": [0], "accuracy": [0.5], "val_accuracy": [top1 / 100]}).to_csv(
        run_dir / "history.csv", index=False)
    metrics = {"experiment": experiment, "protocol": protocol, "seed": seed, "top1": top1, "epochs": 20,
               "seconds_per_epoch": 100.0, "hardware": "test machine", "data_source": "test"}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_table1_sets_runs_beside_the_report_and_leaves_the_rest_missing(tmp_path):
    fake_run(tmp_path, "e1", "e1", 60.0)
    fake_run(tmp_path, "e4_tuned", "e4", 81.0, protocol="tuned")
    fake_run(tmp_path, "e4_tuned2", "e4", 82.5, protocol="tuned2")
    table = results.table1(tmp_path).set_index("run")
    assert table.loc["e1", "paper top-1"] == 60.0
    assert table.loc["e1", "difference"] == pytest.approx(60.0 - 58.43)
    assert table.loc["e4", "tuned top-1"] == 81.0 and table.loc["e4", "tuned2 top-1"] == 82.5
    assert pd.isna(table.loc["e3", "tuned top-1"]) and pd.isna(table.loc["e3", "tuned2 top-1"])
    assert pd.isna(table.loc["e4", "paper top-1"]) and pd.isna(table.loc["baseline", "paper top-1"])
    assert table.loc["e3", "params"] == 715_162 and table.loc["e3", "report params"] == 715_169


def test_best_run_is_the_highest_cifar10_top1_over_protocols(tmp_path):
    with pytest.raises(FileNotFoundError, match="No finished cifar10 run"):
        results.best_run(tmp_path)
    fake_run(tmp_path, "e1", "e1", 60.0)
    best = fake_run(tmp_path, "e4_tuned", "e4", 81.0, protocol="tuned")
    fake_run(tmp_path, "e5", "e5", 90.0)  # CIFAR-100: another task
    assert results.best_run(tmp_path) == best
    assert results.best_run(tmp_path, "cifar100").name == "e5"


def test_seed_runs_give_the_spread_of_paper_runs(tmp_path):
    fake_run(tmp_path, "e4", "e4", 67.0)
    fake_run(tmp_path, "e4_seed1", "e4", 66.0, seed=1)
    fake_run(tmp_path, "e4_seed2", "e4", 68.0, seed=2)
    fake_run(tmp_path, "e4_tuned", "e4", 74.0, protocol="tuned")
    fake_run(tmp_path, "e4_tuned_seed1", "e4", 75.0, protocol="tuned", seed=1)
    fake_run(tmp_path, "e1", "e1", 60.0)
    assert list(results.seed_runs(tmp_path, "e4")) == [0, 1, 2]
    assert list(results.seed_runs(tmp_path, "e4", "tuned")) == [0, 1]
    table = results.table1(tmp_path).set_index("run")
    assert table.loc["e4", "paper top-1"] == 67.0  # seed 0
    assert table.loc["e4", "seeds"] == 3 and table.loc["e4", "paper mean"] == 67.0
    assert table.loc["e4", "paper sd"] == pytest.approx(1.0)
    assert table.loc["e1", "seeds"] == 1 and pd.isna(table.loc["e1", "paper sd"])
    assert pd.isna(table.loc["e2", "seeds"]) and pd.isna(table.loc["e2", "paper mean"])


def test_protocol_runs_put_one_experiment_beside_itself_and_plot_training_dashed(tmp_path):
    fake_run(tmp_path, "e4", "e4", 67.0)
    fake_run(tmp_path, "e4_tuned2", "e4", 80.5, protocol="tuned2")
    fake_run(tmp_path, "e4_seed1", "e4", 66.0, seed=1)  # another seed: not a protocol
    fake_run(tmp_path, "e3_tuned", "e3", 70.0, protocol="tuned")  # another experiment
    runs = results.protocol_runs(tmp_path, "e4")
    assert list(runs) == ["paper", "tuned2"]
    assert runs["tuned2"].metrics["top1"] == 80.5
    assert results.protocol_runs(tmp_path, "e2") == {}
    path = tmp_path / "figures" / "e4_protocols.png"
    fig = plot_validation_curves({p: r.history for p, r in runs.items()}, "E4", path, training=True)
    lines = fig.axes[0].get_lines()
    assert [line.get_label() for line in lines] == ["paper", "paper (training)", "tuned2",
                                                    "tuned2 (training)"]
    assert lines[1].get_linestyle() == "--" and lines[1].get_color() == lines[0].get_color()
    assert path.stat().st_size > 0
