"""Hold-out splits: stratified, seeded by their own seed, recorded in config.json, never mixed."""

import json
import pathlib

import numpy as np
import pytest
from PIL import Image

from squeeze_keras import data, runs, train
from squeeze_keras.__main__ import main

CIFAR100 = pathlib.Path(__file__).resolve().parents[1] / "../shared/data/cifar100-train-png.tar.gz"


def write_train_folder(root, classes=10, per_class=6, with_test=False):
    """An image folder with train/ (and test/ if asked), each class a flat colour plus noise."""
    rng = np.random.default_rng(0)
    for split in ("train", "test") if with_test else ("train",):
        for c in range(classes):
            folder = root / split / f"class_{c:02d}"
            folder.mkdir(parents=True)
            for i in range(per_class):
                pixels = np.full((32, 32, 3), 20 * c, np.uint8) + rng.integers(0, 5, (32, 32, 3),
                                                                               dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i:04d}.png")
    (root / "README.txt").write_text("text beside train/ is ignored")
    return root


def test_the_split_is_stratified_and_seeded_by_its_own_seed():
    labels = np.repeat(np.arange(10), 50)
    train_idx, held = data.holdout_split(labels, 5, seed=0)
    assert np.bincount(labels[held]).tolist() == [5] * 10
    assert len(train_idx) == 450 and not set(train_idx) & set(held)
    again = data.holdout_split(labels, 5, seed=0)[1]
    np.testing.assert_array_equal(held, again)  # the same arguments, the same split
    assert not np.array_equal(held, data.holdout_split(labels, 5, seed=1)[1])
    fraction = data.holdout_split(labels, 0.2, seed=0)[1]
    assert np.bincount(labels[fraction]).tolist() == [10] * 10


@pytest.mark.parametrize("holdout, words", [
    (0, "at least one image per class"), (-3, "at least one image per class"),
    (50, "holds out 50 of the 50"), (1.5, "fraction in \\(0, 1\\)"), ("10", "Received: holdout='10'"),
])
def test_a_holdout_that_leaves_nothing_is_refused(holdout, words):
    with pytest.raises(ValueError, match=words):
        data.holdout_split(np.repeat(np.arange(10), 50), holdout)


def test_a_source_without_test_needs_a_holdout_and_text_files_are_ignored(tmp_path):
    root = write_train_folder(tmp_path / "c10")
    with pytest.raises(data.DataError, match="no 'test/' folder.*--holdout"):
        data.load("cifar10", str(root))
    splits = data.load("cifar10", str(root), holdout=2, holdout_seed=0, batch_size=8)
    assert (splits.train_size, splits.test_size) == (40, 20)
    assert np.bincount(splits.y_test).tolist() == [2] * 10
    assert splits.evaluation == "train hold-out, 2/class"
    assert splits.holdout["per_class"] == 2 and splits.holdout["held_out"] == 20
    assert splits.x_official_test is None


def test_a_source_with_test_uses_the_holdout_and_keeps_test_for_the_end(tmp_path):
    root = write_train_folder(tmp_path / "c10", with_test=True)
    said = []
    splits = data.load("cifar10", str(root), holdout=1, batch_size=8, log=said.append)
    assert splits.test_size == 10 and splits.train_size == 50
    assert splits.x_official_test.shape == (60, 32, 32, 3)
    assert "evaluated separately" in said[0]


def test_a_cifar100_source_for_a_cifar10_experiment_names_both_counts(tmp_path):
    root = write_train_folder(tmp_path / "c100", classes=12, per_class=2)
    with pytest.raises(data.DataError, match="12 class folders, but the dataset has 10"):
        data.load("cifar10", str(root), holdout=1)


@pytest.fixture(scope="module")
def holdout_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("holdout")
    root = write_train_folder(tmp / "c10", per_class=8, with_test=True)
    result = train.run_experiment("e1", epochs=1, data=str(root), out_dir=tmp / "runs",
                                  holdout=2, verbose=0)
    return tmp, root, result


def test_a_holdout_run_records_its_split_and_lives_in_its_own_folder(holdout_run):
    tmp, root, result = holdout_run
    assert result.run_dir.name == "e1_holdout2"
    stored = json.loads((result.run_dir / "config.json").read_text())["data"]["holdout"]
    names = [f"train/class_{c:02d}/{i:04d}.png" for c in range(10) for i in range(8)]
    want = data.holdout_identity(names, np.repeat(np.arange(10), 8), 2, 0)
    assert stored == want and stored["held_out"] == 20 and stored["train"] == 60
    m = result.metrics
    assert m["evaluation"] == "train hold-out, 2/class" and m["test_size"] == 20
    assert m["official_test"]["images"] == 80 and 0 <= m["official_test"]["top1"] <= 100
    assert m["holdout"] == want


def test_another_holdout_or_seed_is_refused_or_goes_elsewhere(holdout_run):
    tmp, root, result = holdout_run
    with pytest.raises(runs.RunFolderError, match="data.holdout.digest, data.holdout.seed"):
        train.run_experiment("e1", epochs=1, data=str(root), out_dir=tmp / "runs", holdout=2,
                             holdout_seed=1, verbose=0)
    # The same arguments: the finished run, untouched.
    again = train.run_experiment("e1", epochs=1, data=str(root), out_dir=tmp / "runs",
                                 holdout=2, verbose=0)
    assert again.metrics == result.metrics
    # An official-split run and another hold-out size are other folders.
    assert runs.run_name(train.experiments.get("e1")) == "e1"
    assert runs.run_name(train.experiments.get("e1"), 1, 0.25) == "e1_holdout0.25_seed1"


def test_cli_refuses_a_bad_holdout_in_words(capsys):
    for bad in ("0", "-5", "1.5", "abc"):
        with pytest.raises(SystemExit):
            main(["train", "e1", "--data", "synthetic", "--holdout", bad])
        assert "--holdout: must be images per class" in capsys.readouterr().err


@pytest.mark.skipif(not CIFAR100.exists(), reason="CIFAR-100 archive not available")
def test_the_cifar100_training_archive_lists_500_per_class_and_splits_100():
    names, labels = data.train_listing(str(CIFAR100), 100)
    assert len(names) == 50_000 and np.bincount(labels).tolist() == [500] * 100
    assert names[0] == "train/apple/0000.png"
    identity = data.holdout_identity(names, labels, 100, 0)
    assert (identity["held_out"], identity["train"]) == (10_000, 40_000)


def test_notebooks_list_a_holdout_run_under_its_own_label(holdout_run):
    from squeeze_keras import notebook

    tmp, root, result = holdout_run
    runs_ = notebook.committed_runs("e1", tmp / "runs")
    assert list(runs_) == ["paper, train hold-out, 2/class"]
    assert list(notebook.histories_by_protocol(runs_)) == ["paper, train hold-out, 2/class"]
    assert "train hold-out, 2/class" in notebook.result_line(result.metrics)


def test_export_and_prune_of_a_holdout_run_measure_its_own_held_out_images(holdout_run):
    from squeeze_keras import export, prune

    tmp, root, result = holdout_run
    held = result.metrics["holdout"]
    table = export.export_run(result.run_dir, data=str(root), forms=("float32",),
                              representative=8, latency_runs=2)
    assert table.attrs["test_images"] == 20  # the 2 x 10 held-out images, not test/'s 80
    keras_row = table.set_index("form").loc["keras (reference)"]
    assert abs(keras_row["top-1"] - result.metrics["top1"]) <= 5  # one image in 20
    source = json.loads((result.run_dir / "litert" / "source.json").read_text())
    assert source["data_identity"]["holdout"] == held
    pruned = prune.prune_run(result.run_dir, data=str(root), epochs=1, sparsity=0.5, verbose=0)
    assert pruned["test_size"] == 20
    source = json.loads((result.run_dir / "pruned50" / "source.json").read_text())
    assert source["data_identity"]["holdout"] == held
    # Other data: its own test split, and only outside the run folder.
    other = write_train_folder(tmp / "other", per_class=3, with_test=True)
    with pytest.raises(ValueError, match="was trained on .* --out"):
        export.export_run(result.run_dir, data=str(other), forms=("float32",), latency_runs=2)
    table = export.export_run(result.run_dir, data=str(other), out_dir=tmp / "elsewhere",
                              forms=("float32",), representative=8, latency_runs=2)
    assert table.attrs["test_images"] == 30
