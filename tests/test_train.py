"""Training: it learns, writes a complete run folder, resumes, and refuses bad input."""

import json
import pathlib

import keras
import numpy as np
import pandas as pd
import pytest

from squeeze_keras import data, experiments
from squeeze_keras.__main__ import main
from squeeze_keras.devices import select_precision
from squeeze_keras.runs import load_run
from squeeze_keras.train import run_experiment

CIFAR10_ARCHIVE = pathlib.Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "cifar10-jpeg.tar.gz"


def test_learns_well_above_chance_on_synthetic_data(learned):
    assert learned.metrics["top1"] > 50, learned.metrics  # chance is 10 %
    history = learned.history
    assert history["loss"].iloc[-1] < history["loss"].iloc[0]


def test_run_folder_holds_history_metrics_config_and_model(learned):
    run_dir = learned.run_dir
    assert run_dir.name == "e1"
    assert {"history.csv", "metrics.json", "config.json", "model.keras"} <= {p.name for p in run_dir.iterdir()}
    assert not (run_dir / "backup").exists()  # removed once training finished
    assert (run_dir / "checkpoints" / "best.keras").exists()
    m = json.loads((run_dir / "metrics.json").read_text())
    for key in ("top1", "top5", "params", "epochs", "seconds_per_epoch", "hardware",
                "data_source", "precision", "versions"):
        assert key in m
    assert m["params"] == 740_554 and m["epochs"] == 4 and m["report_top1"] == 58.43
    assert list(learned.history["epoch"]) == [0, 1, 2, 3]
    assert {"accuracy", "val_accuracy", "loss", "val_loss", "seconds", "lr"} <= set(learned.history)
    # The saved model is the evaluated one, without optimizer state.
    model = keras.models.load_model(run_dir / "model.keras")
    assert getattr(model, "optimizer", None) is None and model.count_params() == 740_554
    assert (run_dir / "model.keras").stat().st_size < 4_000_000
    # Test-time flip: the saved model's mean over each test image and its mirror image.
    splits = data.load("cifar10", "synthetic", preprocessing="cifar",
                       synthetic_sizes=(4000, 1000), batch_size=64)
    from squeeze_keras.train import flip_tta_probabilities, topk_accuracy
    probs = flip_tta_probabilities(lambda x: model.predict(x, verbose=0),
                                   data.normalize(splits.x_test, "cifar"))
    assert m["top1_flip_tta"] == topk_accuracy(probs, splits.y_test, 1)


def test_finished_run_is_returned_not_retrained(learned):
    # `learned` is float32; "auto" would ask for bfloat16 on a CPU with AMX.
    again = run_experiment("e1", epochs=4, data=data.load(
        "cifar10", "synthetic", preprocessing="cifar", synthetic_sizes=(4000, 1000)),
        out_dir=learned.run_dir.parent, precision="float32", verbose=0)
    assert again.metrics == learned.metrics
    with pytest.raises(FileExistsError, match="another config"):
        run_experiment("e1", epochs=5, data="synthetic", out_dir=learned.run_dir.parent,
                       precision="float32", verbose=0)


class Interrupt(keras.callbacks.Callback):
    def on_epoch_end(self, epoch, logs=None):
        if epoch == 1:
            raise KeyboardInterrupt("simulated interruption")


def test_interrupted_run_resumes_where_it_stopped_and_ends_as_an_uninterrupted_one(tmp_path,
                                                                                   capsys):
    # e1: shuffled, augmented (crops, flips) and with dropout, all seeded.
    kwargs = dict(epochs=3, data="synthetic", limit=128, verbose=0)
    with pytest.raises(KeyboardInterrupt):
        run_experiment("e1", callbacks=[Interrupt()], out_dir=tmp_path / "resumed", **kwargs)
    run_dir = tmp_path / "resumed" / "e1"
    assert (run_dir / "backup").exists() and not (run_dir / "metrics.json").exists()
    assert len((run_dir / "history.csv").read_text().strip().splitlines()) == 3  # header + 2 epochs

    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            seen.append(epoch)

    result = run_experiment("e1", callbacks=[Record()], out_dir=tmp_path / "resumed",
                            **{**kwargs, "verbose": 2})
    assert seen == [2]  # only the missing epoch ran
    out = capsys.readouterr().out
    assert out.startswith("Resuming e1 at epoch 3/3: epochs 1-2 were trained in an earlier")
    assert "Epoch 3/3" in out and "Epoch 1/3" not in out
    assert list(result.history["epoch"]) == [0, 1, 2]
    assert result.metrics["epochs"] == 3
    # Epoch 3 of the resumed run saw epoch 3's order, crops, flips and dropout masks, not
    # epoch 1's again: it ends with exactly the weights of the same run made in one go.
    whole = run_experiment("e1", out_dir=tmp_path / "whole", **kwargs)
    pd.testing.assert_frame_equal(result.history.drop(columns="seconds"),
                                  whole.history.drop(columns="seconds"))
    for resumed, one_go in zip(keras.saving.load_model(run_dir / "model.keras").get_weights(),
                               keras.saving.load_model(whole.run_dir / "model.keras").get_weights()):
        np.testing.assert_array_equal(resumed, one_go)


def test_another_seed_is_a_run_of_its_own(tmp_path):
    kwargs = dict(epochs=1, data="synthetic", out_dir=tmp_path, limit=64, verbose=0)
    first = run_experiment("baseline", **kwargs)
    other = run_experiment("baseline", seed=1, **kwargs)
    assert first.run_dir.name == "baseline" and other.run_dir.name == "baseline_seed1"
    assert first.metrics["seed"] == 0 and other.metrics["seed"] == 1
    tuned = run_experiment("baseline", seed=2, protocol="tuned", **kwargs)
    assert tuned.run_dir.name == "baseline_tuned_seed2"


def test_wrong_class_count_is_refused(tmp_path):
    splits = data.load("cifar100", "synthetic", synthetic_sizes=(64, 64))
    with pytest.raises(ValueError, match="expects 10 classes but the data has 100"):
        run_experiment("e4", epochs=1, data=splits, out_dir=tmp_path, verbose=0)


def test_e5_trains_on_synthetic_cifar100(tmp_path):
    result = run_experiment("e5", epochs=1, data="synthetic", limit=64, out_dir=tmp_path, verbose=0)
    assert result.metrics["params"] == 773_764 and result.metrics["dataset"] == "cifar100"


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="epochs=0"):
        run_experiment("e1", epochs=0, data="synthetic", out_dir=tmp_path)
    with pytest.raises(ValueError, match="seed=-1"):
        run_experiment("e1", seed=-1, data="synthetic", out_dir=tmp_path)
    with pytest.raises(ValueError, match="Unknown protocol 'fast'"):
        run_experiment("e1", protocol="fast", data="synthetic", out_dir=tmp_path)
    with pytest.raises(ValueError, match="precision='fp8'"):
        select_precision("fp8")
    with pytest.raises(FileNotFoundError, match="no finished run"):
        load_run(tmp_path)


AMX_XEON = "fpu avx2 avx512f avx512_bf16 amx_bf16 amx_tile amx_int8"


@pytest.mark.parametrize("flags, policy", [
    (AMX_XEON, "mixed_bfloat16"),  # Xeon with AMX: bf16 about 2x faster on E4 (devices.cpu_precision)
    ("fpu avx2 avx512f avx512_bf16", "float32"),  # AVX-512 BF16 without AMX: bf16 slower
    ("fpu avx2 avx512f", "float32"),
    ("fpu avx2", "float32"),  # AVX2 EPYC: bf16 emulated
    ("fpu avx2 avx512_bf16 amx_int8 amx_tile", "float32"),  # int8 tiles only
])
def test_precision_auto_on_cpus(monkeypatch, flags, policy):
    from squeeze_keras import devices

    monkeypatch.setattr(devices, "accelerators", lambda: [])
    monkeypatch.setattr(devices, "cpuinfo_text",
                        lambda: f"processor\t: 0\nmodel name\t: Some CPU\nflags\t\t: {flags}\n")
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "1")
    assert select_precision("auto") == policy
    assert select_precision("float32") == "float32"
    assert select_precision("mixed_bfloat16") == "mixed_bfloat16"
    # Without oneDNN's kernels TensorFlow does not use AMX; JAX and PyTorch keep float32.
    monkeypatch.setenv("TF_ENABLE_ONEDNN_OPTS", "0")
    assert select_precision("auto") == "float32"
    assert devices.cpu_precision(set(flags.split()), "jax", onednn=True) == "float32"
    assert devices.cpu_precision(set(flags.split()), "torch", onednn=True) == "float32"


@pytest.mark.parametrize("gpus, policy", [
    ([("NVIDIA H100 80GB HBM3", (9, 0))], "mixed_bfloat16"),
    ([("NVIDIA A100-SXM4-40GB", (8, 0))], "mixed_bfloat16"),
    ([("Tesla T4", (7, 5))], "mixed_float16"),
    ([("TPU v2", None)], "mixed_bfloat16"),
])
def test_precision_auto_on_accelerators(monkeypatch, gpus, policy):
    from squeeze_keras import devices

    monkeypatch.setattr(devices, "accelerators", lambda: gpus)
    assert select_precision("auto") == policy


@pytest.mark.parametrize("flags, family, model, line", [
    ("fpu avx2 avx512f avx512_bf16", "25", "17", "AMD EPYC (family 25 model 17, AVX-512 BF16)"),
    (AMX_XEON, "6", "167", "AMD EPYC (family 6 model 167, AVX-512 BF16, AMX)"),  # name as given
    ("fpu avx2", "25", "1", "AMD EPYC (family 25 model 1, AVX2)"),
    ("fpu avx2 avx512f", "6", "85", "AMD EPYC (family 6 model 85, AVX-512)"),
])
def test_hardware_line_tells_cpus_of_one_name_apart(flags, family, model, line):
    from squeeze_keras.devices import describe_cpuinfo

    processor = f"processor\t: {{}}\ncpu family\t: {family}\nmodel\t\t: {model}\nmodel name\t: AMD EPYC\nflags\t\t: {flags}\n"
    assert describe_cpuinfo(processor.format(0) + "\n" + processor.format(1)) == line
    assert describe_cpuinfo("model name\t: Some CPU\n") == "Some CPU"


def test_cli_list_summary_and_errors(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in experiments.names())
    assert main(["summary", "e4"]) == 0
    out = capsys.readouterr().out
    assert "33x33x96" in out and "9x9x10" in out and "727,594" in out
    assert main(["train", "e9", "--data", "synthetic"]) == 2
    assert "Unknown experiment 'e9'" in capsys.readouterr().err
    assert main(["train", "e1", "--data", "/no/such/folder", "--out", "/tmp/x"]) == 2
    assert "does not exist" in capsys.readouterr().err


@pytest.mark.parametrize("argv, words", [
    (["prune", "results/e1", "--sparsity", "60"], "--sparsity: must be a fraction"),
    (["prune", "results/e1", "--epochs", "-2"], "--epochs: must be a positive integer"),
    (["train", "e1", "--limit", "0"], "--limit: must be a positive integer"),
    (["export", "results/e1", "--limit", "-5"], "--limit: must be a positive integer"),
    (["train", "e1", "--seed", "-1"], "--seed: must be an integer from 0 to 4294967295"),
    (["study", "--only"], "--only: expected at least one argument"),
])
def test_cli_refuses_bad_arguments_in_the_users_words(argv, words, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2 and words in capsys.readouterr().err


def test_cli_out_that_is_a_file_is_refused(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("")
    with pytest.raises(SystemExit):
        main(["train", "e1", "--data", "synthetic", "--out", str(tmp_path / "notes.txt")])
    assert "is a file, not a folder" in capsys.readouterr().err


def test_cli_says_one_line_on_ctrl_c_and_permission_errors(monkeypatch, capsys):
    from squeeze_keras import train

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "run_seeds", interrupted)
    assert main(["train", "e1", "--data", "synthetic"]) == 130
    err = capsys.readouterr().err
    assert "interrupted: run the same command again to resume" in err and "Traceback" not in err

    def denied(*args, **kwargs):
        raise PermissionError(13, "Permission denied", "results/e1/.lock")

    monkeypatch.setattr(train, "run_seeds", denied)
    assert main(["train", "e1", "--data", "synthetic"]) == 2
    assert "cannot write into results/e1 (permission denied)" in capsys.readouterr().err


def test_cli_names_a_missing_keras_backend(tmp_path):
    import os
    import subprocess
    import sys

    try:
        import jax  # noqa: F401
        pytest.skip("JAX is installed here")
    except ImportError:
        pass
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-m", "squeeze_keras", "summary", "e1"],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 2
    assert "KERAS_BACKEND=jax but the 'jax' package is not installed" in proc.stderr
    assert "Traceback" not in proc.stderr
    # `list` reads only the registry: it needs no backend at all.
    proc = subprocess.run([sys.executable, "-m", "squeeze_keras", "list"], capture_output=True,
                          text=True, env=env, timeout=120)
    assert proc.returncode == 0 and proc.stdout.startswith("baseline")


def test_cli_trains_several_seeds_and_says_what_it_did(tmp_path, capsys):
    argv = ["train", "baseline", "--data", "synthetic", "--limit", "64", "--epochs", "1",
            "--out", str(tmp_path), "--verbose", "0", "--precision", "float32", "--seeds", "0", "1"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "seed 0): trained" in out and "seed 1): trained" in out
    assert (tmp_path / "baseline").is_dir() and (tmp_path / "baseline_seed1").is_dir()
    assert main(argv) == 0
    assert capsys.readouterr().out.count("already finished, not retrained") == 2


@pytest.mark.skipif(not CIFAR10_ARCHIVE.exists(),
                    reason="real CIFAR-10 copy (../shared/data/cifar10-jpeg.tar.gz) not present")
def test_baseline_beats_chance_on_real_cifar10(tmp_path):
    result = run_experiment("baseline", epochs=2, data=str(CIFAR10_ARCHIVE), limit=6000,
                            out_dir=tmp_path, verbose=0)
    # 6,000 real training images, 2 epochs; evaluated on 6,000 real test images.
    assert result.metrics["test_size"] == 6000
    assert result.metrics["top1"] > 20, result.metrics  # chance is 10 %


MIRRORED_SCRIPT = """
import json, sys, tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from squeeze_keras.train import run_experiment
strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
r = run_experiment("e3", epochs=1, data="synthetic", limit=256, out_dir=sys.argv[1],
                   verbose=0, strategy=strategy)
print(json.dumps(r.metrics))
"""


def test_mirrored_strategy_on_two_logical_cpus(tmp_path):
    """The multi-replica path: global batch and learning rate scale with replicas."""
    import subprocess
    import sys

    # Logical devices must be set before TensorFlow starts: a fresh interpreter.
    proc = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert metrics["replicas"] == 2 and metrics["batch_size"] == 128
    history = load_run(tmp_path / "e3").history
    assert history["lr"].iloc[0] == pytest.approx(2e-4)  # 1e-4 x 2 replicas


def test_protocol_optimizers_and_schedules():
    from squeeze_keras.train import make_optimizer

    paper = make_optimizer(experiments.PROTOCOLS["paper"], steps_per_epoch=10, epochs=5)
    assert isinstance(paper, keras.optimizers.Adam) and float(paper.learning_rate) == pytest.approx(1e-4)
    tuned = make_optimizer(experiments.PROTOCOLS["tuned"], steps_per_epoch=10, epochs=5)
    assert isinstance(tuned, keras.optimizers.AdamW)
    schedule = tuned._learning_rate
    lrs = [float(schedule(step)) for step in (0, 5, 10, 30, 50)]
    assert lrs[0] == pytest.approx(5e-5) and lrs[2] == pytest.approx(5e-4)  # 1 epoch warm-up
    assert lrs[1] < lrs[2] and lrs[3] < lrs[2] and lrs[4] == pytest.approx(0, abs=1e-9)
    tuned2 = make_optimizer(experiments.PROTOCOLS["tuned2"], steps_per_epoch=10, epochs=5)
    lrs = [float(tuned2._learning_rate(step)) for step in (0, 10, 20, 21)]
    assert lrs[0] == pytest.approx(2e-4) and lrs[1] == pytest.approx(1.1e-3)  # 2 epochs warm-up
    assert lrs[2] == pytest.approx(2e-3) and lrs[3] < lrs[2]
    assert tuned2.weight_decay == pytest.approx(0.02)
    scaled = make_optimizer(experiments.PROTOCOLS["paper"], 10, 5, scale=4)
    assert float(scaled.learning_rate) == pytest.approx(4e-4)


def test_sgd_nesterov_with_a_one_cycle_triangle():
    from squeeze_keras.train import WarmupLinearDecay, make_optimizer

    protocol = experiments.Protocol(name="sgd", optimizer="sgd_nesterov", learning_rate=0.2,
                                    weight_decay=5e-3, schedule="warmup_linear", warmup_epochs=1)
    sgd = make_optimizer(protocol, steps_per_epoch=10, epochs=4)
    assert isinstance(sgd, keras.optimizers.SGD) and sgd.nesterov and sgd.momentum == 0.9
    assert sgd.weight_decay == pytest.approx(5e-3)
    lrs = [float(sgd._learning_rate(step)) for step in (0, 5, 10, 25, 40, 45)]
    # Up from a tenth of the peak over the first epoch, then straight down to 0 at the end.
    assert lrs == pytest.approx([0.02, 0.11, 0.2, 0.1, 0.0, 0.0], abs=1e-6)
    # Saved and loaded with a model (the schedule is in the optimizer's config).
    again = keras.optimizers.deserialize(keras.optimizers.serialize(sgd))
    assert isinstance(again._learning_rate, WarmupLinearDecay)
    assert float(again._learning_rate(25)) == pytest.approx(0.1)
    flat = make_optimizer(experiments.Protocol(name="x", optimizer="sgd_nesterov"), 10, 4)
    assert flat.weight_decay is None and float(flat.learning_rate) == pytest.approx(1e-4)


def test_flip_tta_averages_each_image_with_its_mirror_image():
    import numpy as np

    from squeeze_keras.train import flip_tta_probabilities

    images = np.zeros((2, 32, 32, 3), np.float32)
    images[0, :, :16] = 1  # bright on the left
    images[1, :, 16:] = 1  # bright on the right

    def predict(x):  # class 0 for "bright on the left", with a confidence of 0.9
        left = x[:, :, :16].mean(axis=(1, 2, 3)) > x[:, :, 16:].mean(axis=(1, 2, 3))
        return np.stack([np.where(left, 0.9, 0.1), np.where(left, 0.1, 0.9)], axis=1)

    assert flip_tta_probabilities(predict, images) == pytest.approx(np.full((2, 2), 0.5))
    biased = lambda x: predict(x) * np.array([1.0, 1.2])  # noqa: E731
    assert flip_tta_probabilities(biased, images).argmax(axis=1).tolist() == [1, 1]


def test_steps_per_execution_trains_the_same_weights():
    import numpy as np

    from squeeze_keras.devices import default_steps_per_execution
    from squeeze_keras.train import compile_model

    config = experiments.get("baseline")
    (x, y), _ = data.synthetic_arrays(10, 256, 1, seed=0)
    weights = []
    for spe in (1, 4):
        keras.utils.set_random_seed(0)
        model = compile_model(config.build_model(), config, 8, 1, steps_per_execution=spe)
        model.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
        weights.append(model.get_weights())
    for a, b in zip(*weights):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    import tensorflow as tf

    accelerated = bool(tf.config.list_logical_devices("GPU") + tf.config.list_logical_devices("TPU"))
    assert default_steps_per_execution() == (32 if accelerated else 1)
    with pytest.raises(ValueError, match="steps_per_execution=0"):
        compile_model(config.build_model(), config, 8, 1, steps_per_execution=0)


def test_numpy_pipeline_trains_through_run_experiment(tmp_path):
    """The NumPy pipeline (what JAX/PyTorch backends get) feeds `fit` and learns."""
    splits = data.load("cifar10", "synthetic", preprocessing="cifar", batch_size=64,
                       synthetic_sizes=(3000, 500), pipeline="numpy")
    result = run_experiment("e1", epochs=3, data=splits, out_dir=tmp_path, verbose=0)
    assert result.metrics["top1"] > 30, result.metrics  # chance is 10 %
    assert list(result.history["epoch"]) == [0, 1, 2]
    assert result.metrics["versions"]["backend"] == keras.backend.backend()


JAX_SCRIPT = """
import sys
sys.modules["tensorflow"] = None  # as on a machine without TensorFlow
from squeeze_keras.__main__ import main
sys.exit(main(["train", "e3", "--data", "synthetic", "--limit", "128", "--epochs", "1",
               "--out", sys.argv[1], "--verbose", "0"]))
"""


def test_cli_trains_under_the_jax_backend_without_tensorflow(tmp_path):
    """How the GPU runs in results/ were made (Keras's JAX backend, no TensorFlow)."""
    import os
    import subprocess
    import sys

    pytest.importorskip("jax")
    env = {**os.environ, "KERAS_BACKEND": "jax"}
    proc = subprocess.run([sys.executable, "-c", JAX_SCRIPT, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = load_run(tmp_path / "e3").metrics
    assert metrics["versions"]["backend"] == "jax" and metrics["params"] == 715_162


def test_a_partial_last_batch_costs_no_extra_trace(tmp_path, monkeypatch):
    """Full batches only (the last one padded): no retrace, so no second XLA compilation."""
    traces = {"train": 0, "test": 0}
    train_step, test_step = keras.Model.train_step, keras.Model.test_step

    def counted_train_step(self, batch):
        traces["train"] += 1  # runs in Python only while a step function is traced
        return train_step(self, batch)

    def counted_test_step(self, batch):
        traces["test"] += 1
        return test_step(self, batch)

    monkeypatch.setattr(keras.Model, "train_step", counted_train_step)
    monkeypatch.setattr(keras.Model, "test_step", counted_test_step)
    counts = {}
    # 192 examples are three full batches of 64; 200 add a last batch of 8 real examples.
    for limit in (192, 200):
        traces.update(train=0, test=0)
        result = run_experiment("baseline", epochs=2, data="synthetic", limit=limit,
                                out_dir=tmp_path / str(limit), verbose=0, precision="float32")
        assert result.metrics["train_size"] == limit
        counts[limit] = dict(traces)
    assert counts[200] == counts[192], counts
    assert counts[192]["test"] == 1  # validation and the final evaluation share one trace
