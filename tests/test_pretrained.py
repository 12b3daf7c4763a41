"""The weights that ship with the package, `preprocess_input`, `decode_predictions`, `predict`.

Real-data tests read the CIFAR-10 JPEG archive at ../shared/data/ (skipped
without it) and evaluate a fixed subset of its test split (every 20th image,
500 in all) to stay fast on a 2-core CPU.
"""

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from squeeze_keras import (
    SqueezeNet, classes, classify, decode_predictions, experiments, model as model_lib,
    preprocess_input, pretrained, weights_info,
)
from squeeze_keras import data as data_lib
from squeeze_keras.__main__ import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
RUN = ROOT / "results" / "e4_tuned2"
ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"
SUBSET = np.arange(0, 10_000, 20)  # 500 test images, 50 per class
# Correct predictions of weights="cifar10" on SUBSET, measured with TensorFlow 2.21 on the
# 2-core EPYC (the whole test split: 8,019 of 10,000, the run's 80.19 %).
SUBSET_CORRECT = 397
needs_archive = pytest.mark.skipif(not ARCHIVE.exists(), reason=f"needs {ARCHIVE}")


@pytest.fixture(scope="module")
def cifar10_model():
    return SqueezeNet(weights="cifar10")


# Weights announced but not shipped: the registry's pending entry, whatever the registry
# holds now (the real "cifar100" entry ships once E5 is committed).
PENDING = {"available": False, "dataset": "cifar100", "classes": 100, "experiment": "e5",
           "note": "no E5 run exists yet: it is trained on a hold-out split of the training images"}


@pytest.fixture
def pending_cifar100(monkeypatch):
    registry = {**pretrained._registry(), "cifar100": PENDING}
    monkeypatch.setattr(pretrained, "_registry", lambda: registry)
    return registry


@pytest.fixture(scope="module")
def test_split():
    if not ARCHIVE.exists():
        pytest.skip(f"needs {ARCHIVE}")
    _, (x_test, y_test), names = data_lib.folder_arrays(ARCHIVE, 10)
    assert tuple(names) == classes.CIFAR10
    return x_test, y_test


# ---------------------------------------------------------------- the registry


def test_registry_records_the_run_the_weights_come_from():
    info = weights_info("cifar10")
    stored = json.loads((RUN / "config.json").read_text())
    metrics = json.loads((RUN / "metrics.json").read_text())
    assert info["run"] == "results/e4_tuned2" and info["available"]
    assert info["architecture"] == stored["experiment"]["model"]
    assert info["preprocessing"]["name"] == stored["experiment"]["preprocessing"] == "cifar"
    for key in ("top1", "top5", "params", "protocol", "epochs", "seed", "precision"):
        assert info[key] == metrics[key], key
    assert info["hardware"].startswith(metrics["hardware"])
    # The factory builds exactly the E4 experiment's architecture for these weights.
    arch = model_lib._model_config_from_json(info["architecture"])
    assert arch == experiments.get(info["experiment"]).model
    # ... and the preprocessing constants are the package's.
    assert tuple(info["preprocessing"]["mean"]) == data_lib.CIFAR_MEAN
    assert tuple(info["preprocessing"]["std"]) == data_lib.CIFAR_STD
    assert hashlib.sha256(pathlib.Path(info["path"]).read_bytes()).hexdigest() == info["sha256"]


def test_weights_info_of_pending_and_unknown_weights(pending_cifar100):
    info = weights_info("cifar100")
    assert not info["available"] and info["note"] == PENDING["note"] and "path" not in info
    assert "cifar100" not in pretrained.available()
    for use in (lambda: SqueezeNet(weights="cifar100"),
                lambda: preprocess_input(np.zeros((32, 32, 3), np.uint8), weights="cifar100")):
        with pytest.raises(ValueError, match=r"weights='cifar100' are not available yet: no E5"):
            use()
    with pytest.raises(ValueError, match=r"name='imagenet'"):
        weights_info("imagenet")


def test_shipped_weights_are_the_committed_runs_weights(cifar10_model):
    import keras

    stored = keras.models.load_model(RUN / "model.keras")
    shipped = cifar10_model.get_weights()
    assert len(shipped) == len(stored.get_weights())
    for a, b in zip(shipped, stored.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert cifar10_model.count_params() == 727_594


def _packaging_tool():
    import importlib.util

    spec = importlib.util.spec_from_file_location("package_weights", ROOT / "tools" / "package_weights.py")
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    return tool


def test_each_shipped_entry_is_what_the_packaging_tool_makes_from_its_run(tmp_path):
    """tools/package_weights.py, run again on each entry's run, gives the same bytes and entry."""
    tool = _packaging_tool()
    registry = json.loads(pretrained.REGISTRY_FILE.read_text())
    shipped = {name: entry for name, entry in registry.items() if entry["available"]}
    assert shipped
    for name, entry in shipped.items():
        made = tool.package(ROOT / entry["run"], name, data=entry["data"],
                            evaluated_on=entry["evaluated_on"], weights_dir=tmp_path)
        assert made == entry, name
        assert (tmp_path / entry["file"]).read_bytes() == (pretrained.WEIGHTS_DIR / entry["file"]).read_bytes()
    # Written in the registry's own layout: the committed file is the tool's output.
    assert (tmp_path / "weights.json").read_text() == tool._dumps(shipped) + "\n"
    assert pretrained.REGISTRY_FILE.read_text() == tool._dumps(registry) + "\n"


def test_packaging_tool_carries_the_runs_flip_tta_top1_when_it_has_one(tmp_path):
    tool = _packaging_tool()
    run = tmp_path / RUN.name
    run.mkdir()
    shutil.copy(RUN / "config.json", run / "config.json")
    (run / "model.keras").write_bytes(b"")  # only its presence is read here
    metrics = json.loads((RUN / "metrics.json").read_text())
    (run / "metrics.json").write_text(json.dumps(metrics))
    assert "top1_flip_tta" not in tool.entry_for_run(run, data="d", evaluated_on="e")
    (run / "metrics.json").write_text(json.dumps({**metrics, "top1_flip_tta": 81.07}))
    entry = tool.entry_for_run(run, data="d", evaluated_on="e")
    assert entry["top1_flip_tta"] == 81.07 and entry["top1"] == metrics["top1"]


def test_packaging_tool_refuses_unfinished_runs_shipped_names_and_other_datasets(tmp_path):
    tool = _packaging_tool()
    words = dict(data="d", evaluated_on="e", weights_dir=tmp_path)
    registry = {"cifar10": weights_info("cifar10"), "cifar100": PENDING}
    del registry["cifar10"]["name"], registry["cifar10"]["path"]
    (tmp_path / "weights.json").write_text(tool._dumps(registry) + "\n")
    before = (tmp_path / "weights.json").read_bytes()
    unfinished = tmp_path / "e5_holdout100"
    unfinished.mkdir()
    shutil.copy(RUN / "config.json", unfinished / "config.json")
    with pytest.raises(SystemExit, match="not a finished run"):
        tool.package(unfinished, "cifar100", **words)
    with pytest.raises(SystemExit, match="'cifar10' already ship.*--replace"):
        tool.package(RUN, "cifar10", **words)
    with pytest.raises(SystemExit, match="announces 'cifar100' as cifar100 weights.*on cifar10"):
        tool.package(RUN, "cifar100", **words)
    assert (tmp_path / "weights.json").read_bytes() == before
    assert not list(tmp_path.glob("*.h5"))


@needs_archive
def test_cifar10_weights_reproduce_the_runs_top1_on_a_fixed_subset(cifar10_model, test_split):
    x_test, y_test = test_split
    preds = cifar10_model.predict(preprocess_input(x_test[SUBSET]), batch_size=250, verbose=0)
    correct = int((preds.argmax(1) == y_test[SUBSET]).sum())
    # Within one image of the measured count (float summation order may differ between CPUs).
    assert abs(correct - SUBSET_CORRECT) <= 1, correct
    np.testing.assert_allclose(preds.sum(1), 1, atol=1e-5)  # probabilities


CIFAR100 = ROOT.parent / "shared" / "data" / "cifar100-train-png.tar.gz"
# Correct predictions of weights="cifar100" on every 20th of E5's 10,000 held-out training
# images (100/class, hold-out seed 0), measured with TensorFlow 2.21 on the 2-core Xeon (all
# 10,000: 3,657, the run's 36.57 %).
HOLDOUT_SUBSET_CORRECT = 176


@pytest.mark.skipif(not CIFAR100.exists(), reason=f"needs {CIFAR100}")
def test_cifar100_weights_reproduce_the_runs_top1_on_its_holdout():
    from squeeze_keras import sources

    info = weights_info("cifar100")
    run = json.loads((ROOT / info["run"] / "metrics.json").read_text())
    names, labels = data_lib.train_listing(str(CIFAR100), 100)
    # The images E5 never trained on: the run's own split, by its recorded digest.
    assert data_lib.holdout_identity(names, labels, 100, 0)["digest"] == run["holdout"]["digest"]
    held = data_lib.holdout_split(labels, 100, seed=0)[1][::20]
    root, _ = sources.folder_root(str(CIFAR100))
    images = np.stack([sources.read_image(root / names[i]) for i in held])
    model = SqueezeNet(weights="cifar100", classes=100)
    preds = model.predict(preprocess_input(images, weights="cifar100"), batch_size=250, verbose=0)
    correct = int((preds.argmax(1) == labels[held]).sum())
    assert abs(correct - HOLDOUT_SUBSET_CORRECT) <= 1, correct
    assert decode_predictions(preds[:1], top=1)[0][0][0] in classes.CIFAR100_FINE
    with pytest.raises(ValueError, match=r"`classes` should be 100. Received: classes=10"):
        SqueezeNet(weights="cifar100")
    # `predict --weights cifar100` builds the 100-class model and names fine classes.
    classifier = classify.load_classifier("cifar100")
    np.testing.assert_allclose(classifier.predict(images[:4]), preds[:4], atol=1e-5)
    assert classifier.class_names == classes.CIFAR100_FINE
    assert "train hold-out, 100/class" in classifier.description


def test_trunk_is_the_trained_trunk_and_takes_other_sizes(cifar10_model):
    trunk = SqueezeNet(weights="cifar10", include_top=False, pooling="avg",
                       input_shape=(48, 48, 3))
    assert trunk.output_shape == (None, 512)
    with_weights = [layer for layer in trunk.layers if layer.weights]
    assert len(with_weights) == 1 + 3 * 8  # conv1 and three convolutions per Fire module
    for layer in with_weights:
        for a, b in zip(layer.get_weights(), cifar10_model.get_layer(layer.name).get_weights()):
            np.testing.assert_array_equal(a, b)


def test_named_weights_accept_their_own_architecture_and_another_dropout():
    m = SqueezeNet(weights="cifar10", conv1_kernel=2, pool_after=["fire4", "fire8"], dropout=0.2)
    assert m.get_layer("dropout").rate == 0.2


def test_weights_from_a_file_path(cifar10_model, tmp_path):
    arch = {k: v for k, v in weights_info("cifar10")["architecture"].items()}
    arch["fires"] = model_lib._model_config_from_json(arch).fires
    path = tmp_path / "mine.weights.h5"
    cifar10_model.save_weights(path)
    m = SqueezeNet(weights=str(path), **arch)
    np.testing.assert_array_equal(m.get_weights()[0], cifar10_model.get_weights()[0])


@pytest.mark.parametrize("kwargs, match", [
    (dict(weights="imagenet"), r"`weights` argument.*Received: weights='imagenet'"),
    (dict(weights="cifar10", classes=100), r"`classes` should be 10. Received: classes=100"),
    (dict(weights="cifar10", input_shape=(64, 64, 3)),
     r"`input_shape` should be \(32, 32, 3\).*Received: input_shape=\(64, 64, 3\)"),
    (dict(weights="cifar10", include_top=False, input_shape=(32, 32, 1)),
     r"3 channels.*Received: input_shape=\(32, 32, 1\)"),
    (dict(weights="cifar10", conv1_kernel=7), r"`conv1_kernel` is fixed.*Received: conv1_kernel=7"),
    (dict(weights="cifar10", batch_norm=True), r"`batch_norm` is fixed.*Received: batch_norm=True"),
    (dict(weights="nowhere/mine.weights.h5"),
     r"`weights` file does not exist. Received: weights='nowhere/mine.weights.h5'"),
    (dict(weights=3), r"Received: weights=3"),
    (dict(weights="cifar10", include_top=False, pooling="min"), r"Received: pooling='min'"),
])
def test_wrong_combinations_name_the_argument_and_value(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SqueezeNet(**kwargs)


def test_a_damaged_weights_file_is_refused(tmp_path, monkeypatch):
    info = weights_info("cifar10")
    damaged = bytearray(pathlib.Path(info["path"]).read_bytes())
    damaged[-100] ^= 0xFF
    (tmp_path / info["file"]).write_bytes(bytes(damaged))
    monkeypatch.setattr(pretrained, "WEIGHTS_DIR", tmp_path)
    with pytest.raises(ValueError, match=r"SHA-256 .* not the registered .*damaged or was replaced"):
        SqueezeNet(weights="cifar10")
    (tmp_path / info["file"]).unlink()
    with pytest.raises(ValueError, match="missing"):
        SqueezeNet(weights="cifar10")


def test_wheel_carries_the_weights(tmp_path):
    """A wheel built from the checkout (setuptools, as pip would) holds the weights and registry."""
    pytest.importorskip("setuptools")
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(ROOT / name, source / name)
    shutil.copytree(ROOT / "squeeze_keras", source / "squeeze_keras",
                    ignore=shutil.ignore_patterns("__pycache__"))
    out = subprocess.run(
        [sys.executable, "-c", "import sys\nfrom setuptools import build_meta\n"
         "print(build_meta.build_wheel(sys.argv[1]))", str(tmp_path / "dist")],
        cwd=source, capture_output=True, text=True, check=True).stdout.split()[-1]
    with zipfile.ZipFile(tmp_path / "dist" / out) as wheel:
        names = set(wheel.namelist())
        info = weights_info("cifar10")
        assert f"squeeze_keras/weights/{info['file']}" in names
        assert "squeeze_keras/weights/weights.json" in names
        shipped = wheel.read(f"squeeze_keras/weights/{info['file']}")
    assert hashlib.sha256(shipped).hexdigest() == info["sha256"]


# ---------------------------------------------------------------- preprocess and decode


def test_preprocess_input_is_the_training_normalisation_for_any_batch_shape():
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (2, 3, 32, 32, 3), dtype=np.uint8)
    out = preprocess_input(images)
    assert out.dtype == np.float32 and out.shape == images.shape
    np.testing.assert_array_equal(out, data_lib.normalize(images, "cifar"))
    np.testing.assert_array_equal(preprocess_input(images[0, 0]), out[0, 0])  # one image
    np.testing.assert_array_equal(preprocess_input(images.astype(np.float64)), out)  # floats
    with pytest.raises(ValueError, match=r"3 channels.*shape \(32, 32, 4\)"):
        preprocess_input(np.zeros((32, 32, 4), np.uint8))
    with pytest.raises(ValueError, match="name='mnist'"):
        preprocess_input(images, weights="mnist")


def test_decode_predictions_exact_on_a_constructed_input():
    preds = np.zeros((2, 10), np.float32)
    preds[0, [3, 5, 1]] = [0.5, 0.3, 0.2]  # cat, dog, automobile
    preds[1, :] = 0.1  # all tied: label order
    decoded = decode_predictions(preds, top=3)
    assert decoded == [[("cat", 0.5), ("dog", pytest.approx(0.3)), ("automobile", pytest.approx(0.2))],
                       [("airplane", pytest.approx(0.1)), ("automobile", pytest.approx(0.1)),
                        ("bird", pytest.approx(0.1))]]
    assert all(isinstance(p, float) for _, p in decoded[0])
    assert len(decode_predictions(preds)[0]) == 5
    fine = np.zeros((1, 100))
    fine[0, 99], fine[0, 0] = 0.9, 0.1
    assert decode_predictions(fine, top=2) == [[("worm", 0.9), ("apple", 0.1)]]
    with pytest.raises(ValueError, match=r"shape \(10,\)"):
        decode_predictions(preds[0])
    with pytest.raises(ValueError, match=r"shape \(2, 7\)"):
        decode_predictions(np.zeros((2, 7)))
    with pytest.raises(ValueError, match=r"Received: top=11"):
        decode_predictions(preds, top=11)


# ---------------------------------------------------------------- the command line


def test_list_starts_without_tensorflow():
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-X", "importtime", "-m", "squeeze_keras", "list"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and "e4_tuned2" not in done.stdout and "e4 " in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()
                if line.startswith("import time:")}
    assert not {m for m in imported if m.split(".")[0] in ("tensorflow", "keras", "jax")}
    noise = [line for line in done.stderr.splitlines() if not line.startswith("import time:")]
    assert noise == []


@pytest.fixture(scope="module")
def image_files(test_split, tmp_path_factory):
    """Real test images saved at other sizes and in other modes, and three bad files."""
    from PIL import Image

    x_test, y_test = test_split
    folder = tmp_path_factory.mktemp("images")
    files, labels = [], []
    for k, i in enumerate(SUBSET[::25]):  # 20 images, two of each class
        image = Image.fromarray(x_test[i])
        name = classes.CIFAR10[y_test[i]]
        if k % 2:
            path = folder / f"{k:02d}_{name}.jpg"
            image.resize((75, 75), Image.Resampling.BICUBIC).save(path, quality=95)
        else:
            path = folder / f"{k:02d}_{name}.png"
            image.resize((96, 96), Image.Resampling.BICUBIC).save(path)
        files.append(path)
        labels.append(name)
    Image.fromarray(x_test[SUBSET[0]]).convert("RGBA").resize((64, 48)).save(folder / "rgba.png")
    Image.fromarray(x_test[SUBSET[1]]).convert("L").resize((40, 40)).save(folder / "gray.jpg")
    (folder / "notes.png").write_text("not an image")
    (folder / "subfolder").mkdir()
    extra = [folder / "rgba.png", folder / "gray.jpg"]
    bad = [folder / "missing.png", folder / "subfolder", folder / "notes.png"]
    return files, labels, extra, bad


@needs_archive
def test_predict_names_the_right_class_for_resized_png_and_jpeg(image_files, capsys):
    files, labels, extra, bad = image_files
    status = main(["predict", *map(str, files + extra + bad), "--top", "3"])
    out, err = capsys.readouterr()
    assert status == 1  # some files failed; the others are still classified
    lines = out.splitlines()
    assert len(lines) == len(files) + len(extra)
    right = sum(line.split(": ", 1)[1].split(" ")[0] == label for line, label in zip(lines, labels))
    assert right >= 0.7 * len(files), lines
    assert all(len(line.split(", ")) == 3 for line in lines)
    errors = err.splitlines()
    assert len(errors) == 3
    assert errors[0].endswith("missing.png: no such file")
    assert errors[1].endswith("subfolder: a directory, not an image file")
    assert "notes.png: not an image that Pillow can read" in errors[2]


@needs_archive
def test_predict_json_in_a_fresh_process_prints_no_tensorflow_lines(image_files):
    files, _, _, bad = image_files
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    done = subprocess.run([sys.executable, "-m", "squeeze_keras", "predict", "--json",
                           str(files[0]), str(bad[0])],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1
    results = json.loads(done.stdout)
    assert [r["image"] for r in results] == [str(files[0]), str(bad[0])]
    here = classify.classify_files([files[0]], classify.load_classifier("cifar10"))[0]
    assert [name for name, _ in results[0]["predictions"]] == [n for n, _ in here["predictions"]]
    np.testing.assert_allclose([p for _, p in results[0]["predictions"]],
                               [p for _, p in here["predictions"]], atol=1e-5)
    assert results[1]["error"] == "no such file"
    assert done.stderr.splitlines() == [f"error: {bad[0]}: {results[1]['error']}"]


def test_predict_from_a_run_folder_matches_the_named_weights(tmp_path, pending_cifar100):
    from PIL import Image

    rng = np.random.default_rng(1)
    image = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(image).save(tmp_path / "x.png")
    named = classify.classify_files([tmp_path / "x.png"], classify.load_classifier("cifar10"))
    run = classify.classify_files([tmp_path / "x.png"], classify.load_classifier(str(RUN)))
    assert [n for n, _ in named[0]["predictions"]] == [n for n, _ in run[0]["predictions"]]
    with pytest.raises(ValueError, match="run folder"):
        classify.load_classifier("nothing-here")
    assert main(["predict", str(tmp_path / "x.png"), "--weights", "cifar100"]) == 2
