"""squeeze_keras.queue: the queue file, its plan and estimate, and running it across sittings.

One test trains for real (TensorFlow, synthetic data, a tiny `--limit`): a queue
in a subprocess is stopped mid-run with SIGINT while a second queue on the same
folder skips the run it trains, then started again: it skips the finished run
and resumes the other. The others stand a small script in for `train` (it writes
a run folder's files epoch by epoch), so that failures, several runs at once and
the time limit cost no TensorFlow start-up.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import pytest

from squeeze_keras import __main__ as cli
from squeeze_keras import devices, experiments, queue, runs

ROOT = pathlib.Path(__file__).resolve().parents[1]


HISTORY = "epoch,accuracy,loss,lr,seconds,top5,val_accuracy,val_loss,val_top5\n"


def finished_run(out, experiment="baseline", protocol="paper", seed=0, epochs=3, seconds=2.0,
                 precision="float32", data="synthetic", limit=256, hardware=None, sittings=None):
    """A finished run folder as `train` writes it, without training."""
    config = experiments.get(experiment).with_protocol(protocol)
    run_dir = runs.run_dir_for(config, out, seed)
    run_dir.mkdir(parents=True)
    spec = runs.run_spec(config, epochs=epochs, seed=seed, data=data, limit=limit,
                         precision=precision)
    (run_dir / "config.json").write_text(json.dumps(spec))
    (run_dir / "history.csv").write_text(HISTORY + "".join(
        f"{e},0.5,1.0,0.001,{seconds},0.9,0.5,1.0,0.9\n" for e in range(epochs)))
    metrics = {"experiment": experiment, "protocol": protocol, "seed": seed, "epochs": epochs,
               "top1": 50.0, "top5": 90.0, "report_top1": None,
               "seconds_per_epoch": seconds, "precision": precision,
               "hardware": hardware or devices.hardware()}
    if sittings:
        metrics["sittings"] = sittings
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


# ---------------------------------------------------------------- the queue file


def test_the_study_queue_parses_in_its_order_of_value():
    found = queue.parse_queue((ROOT / "queue.txt").read_text())
    assert [r.name for r in found[:2]] == ["e4_seed1", "e4_seed2"]
    # #38's recipe on the architecture its proxies chose, before this round's design space.
    assert (found[2].experiment, found[2].protocol, found[2].seed, found[2].epochs) == (
        "e4_bn", "sgd_onecycle", 0, 20)
    assert [r.experiment for r in found[3:9]] == [
        "v1_1", "e4_bypass", "e4_bn", "e4_pct25", "e4_pct75", "e4_sr250"]
    design = [r for r in found if r.experiment != "e4" and r.protocol != "sgd_onecycle"]
    assert {r.experiment for r in design} == set(experiments.DESIGN_SPACE)
    assert {(r.protocol, r.seed, r.epochs) for r in design} == {("tuned2", 0, 20)}
    assert [r.name for r in found[-2:]] == ["e4_tuned2_seed1", "e4_tuned2_seed2"]


@pytest.mark.parametrize("line, why", [
    ("e9 paper 0 20", "Unknown experiment 'e9'"),
    ("e4 fast 0 20", "Unknown protocol 'fast'"),
    ("e4 paper zero 20", "`seed` must be an integer >= 0"),
    ("e4 paper 0 0", "`epochs` must be an integer >= 1"),
    ("e4 paper 4294967296 20", "`seed` must be at most 4294967295"),
    ("e4 paper 0", "got 3 fields"),
    ("e4 paper 0 20 20", "got 5 fields"),
    ("@best 2 protocol=tuned2", "`@best` lines are no longer read"),
    ("e4 paper 1 10", "the same run (e4_seed1) as line 2"),
])
def test_a_bad_line_is_named_with_its_number(line, why):
    text = f"# comment\ne4 paper 1 20  # fine\n\n{line}\n"
    with pytest.raises(queue.QueueError, match="queue line 4") as err:
        queue.parse_queue(text)
    assert repr(line) in str(err.value) and why in str(err.value)


def test_a_bad_line_is_refused_before_anything_trains(tmp_path, capsys):
    file = tmp_path / "queue.txt"
    file.write_text("baseline paper 0 1\ne4 tuned9 0 1\n")
    out = tmp_path / "out"
    assert cli.main(["queue", str(file), "--data", "synthetic", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: queue line 2: 'e4 tuned9 0 1': Unknown protocol 'tuned9'")
    assert not out.exists()


# ---------------------------------------------------------------- the estimate


def test_the_estimate_uses_this_machines_measurements_then_training_flops(tmp_path):
    out = tmp_path / "out"
    finished_run(out, "e4", seconds=100.0, precision="mixed_bfloat16")
    finished_run(out, "e4", seed=1, seconds=999.0, hardware="another machine")
    # Trained here for epochs 2-3 only (two sittings): those count.
    finished_run(out, "e4_pct25", seed=1, seconds=0.0, sittings=[
        {"epochs": "1", "hardware": "another machine", "seconds_per_epoch": 999.0},
        {"epochs": "2-3", "hardware": devices.hardware(), "seconds_per_epoch": 40.0}])
    plan = queue.make_plan(queue.parse_queue(
        "e4 tuned2 0 10\ne4_pct25 paper 2 10\ne4_pct75 paper 0 10\n"),
        out, data="synthetic", limit=256, precision="mixed_bfloat16")
    e4, pct25, pct75 = plan
    # No e4 tuned2 measured: scaled from e4 paper, the same FLOPs.
    assert (e4.seconds, e4.basis) == (100.0, "scaled by training FLOPs from e4 paper (100 s/epoch)")
    ratio = queue._gflops("e4_pct75") / queue._gflops("e4")
    assert pct75.seconds == pytest.approx(100.0 * ratio) and 1.3 < ratio < 1.4
    assert pct75.left_s == pytest.approx(1000.0 * ratio)
    # e4_pct25 was measured in float32 only: no measurement in bfloat16 is used.
    assert pct25.seconds == pytest.approx(100.0 * queue._gflops("e4_pct25") / queue._gflops("e4"))
    plan = queue.make_plan(queue.parse_queue("e4_pct25 paper 0 10\n"), out,
                           data="synthetic", limit=256, precision="float32")
    assert (plan[0].seconds, plan[0].basis) == (40.0, "measured (e4_pct25_seed1)")
    # Other data or another limit: not the same epochs, not a measurement.
    plan = queue.make_plan(queue.parse_queue("e4 paper 2 10\n"), out, data="synthetic",
                           limit=64, precision="mixed_bfloat16")
    assert (plan[0].seconds, plan[0].basis) == (None, "no measurement on this machine in "
                                                      "mixed_bfloat16")
    lines = queue.describe_plan(plan, here_auto="float32", accelerated=False,
                                restart_command=None)
    assert lines[-2:] == [
        "    e4_seed2  10 epochs x ?  (mixed_bfloat16; no measurement on this machine in "
        "mixed_bfloat16)", "  time left: not known (no run measured on this machine yet)"]


def test_a_run_started_in_bfloat16_resumes_in_it_with_a_warning_where_that_is_slow(tmp_path):
    out = tmp_path / "out"
    run_dir = finished_run(out, "e4", seed=1, epochs=20, precision="mixed_bfloat16")
    (run_dir / "metrics.json").unlink()  # 20 epochs planned, 3 trained
    (run_dir / "history.csv").write_text(
        "".join((run_dir / "history.csv").read_text().splitlines(keepends=True)[:4]))
    # The resume state, which says where `train` resumes: Keras's own record of 3 epochs.
    import h5py

    (run_dir / runs.BACKUP).mkdir()
    h5py.File(run_dir / runs.BACKUP / runs.LATEST[0], "w").close()
    (run_dir / runs.BACKUP / runs.LATEST[1]).write_text('{"epoch": 3, "batch": 0}')
    (plan,) = queue.make_plan(queue.parse_queue("e4 paper 1 20\n"), out, data="synthetic",
                              limit=256, precision="float32")
    assert (plan.status, plan.done, plan.precision) == ("resume", 3, "mixed_bfloat16")
    lines = queue.describe_plan([plan], here_auto="float32", accelerated=False,
                                restart_command=lambda e, p: f"RESTART {e.run.name} {p}")
    assert lines[1] == ("  resumes e4_seed1 at epoch 4/20 in mixed_bfloat16, the precision it "
                        "was started with (its config.json)")
    assert lines[2].startswith("  warning: mixed_bfloat16 is slow on this CPU (`auto` picks "
                               "float32 here")
    assert lines[2].endswith("losing its 3 epochs: RESTART e4_seed1 float32")
    # Where `auto` picks bfloat16 itself (AMX), or on a GPU: no warning.
    for here, accelerated in (("mixed_bfloat16", False), ("float32", True)):
        lines = queue.describe_plan([plan], here_auto=here, accelerated=accelerated,
                                    restart_command=None)
        assert not any("warning" in line for line in lines)


# ---------------------------------------------------------------- running, with a stand-in train


FAKE_TRAIN = '''
"""Stands in for `python -m squeeze_keras train ...`: an epoch every FAKE_SECONDS."""
import dataclasses, json, os, pathlib, sys, time
exp, *rest = sys.argv[1:]
opts = dict(zip(rest[0::2], rest[1::2]))
name = exp + ("" if opts["--protocol"] == "paper" else "_" + opts["--protocol"]) + (
    "" if opts["--seed"] == "0" else "_seed" + opts["--seed"])
run = pathlib.Path(opts["--out"]) / name
run.mkdir(parents=True, exist_ok=True)
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(f"start {name} {time.time()}\\n")
if name in os.environ.get("FAKE_FAIL", "").split():
    print("Traceback (most recent call last):\\nValueError: something went wrong in " + name)
    sys.exit(1)
from squeeze_keras import experiments  # no Keras: the registry alone
config = experiments.get(exp).with_protocol(opts["--protocol"])
(run / "config.json").write_text(json.dumps({"experiment": dataclasses.asdict(config),
                                             "precision": opts["--precision"]}))
history = run / "history.csv"
if not history.exists():
    history.write_text("epoch,accuracy,loss,lr,seconds,top5,val_accuracy,val_loss,val_top5\\n")
try:
    for epoch in range(len(history.read_text().splitlines()) - 1, int(opts["--epochs"])):
        time.sleep(float(os.environ["FAKE_SECONDS"]))
        with open(history, "a") as f:
            f.write(f"{epoch},0.5,1.0,0.001,{os.environ['FAKE_SECONDS']},0.9,0.25,1.0,0.9\\n")
except KeyboardInterrupt:
    sys.exit(130)
(run / "metrics.json").write_text(json.dumps({
    "experiment": exp, "protocol": opts["--protocol"], "seed": int(opts["--seed"]),
    "epochs": int(opts["--epochs"]), "top1": 25.0, "top5": 50.0, "report_top1": None,
    "seconds_per_epoch": 0.1, "hardware": "a stand-in", "precision": "float32"}))
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(f"end {name} {time.time()}\\n")
'''


@pytest.fixture
def fake_train(tmp_path, monkeypatch):
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.log"))
    monkeypatch.setenv("FAKE_SECONDS", "0.2")
    return [sys.executable, str(script)]


def _events(tmp_path):
    path = tmp_path / "fake.log"
    lines = path.read_text().splitlines() if path.exists() else []
    return [(kind, name) for kind, name, _ in (line.split() for line in lines)]


def test_a_resumed_epoch_whose_row_was_already_there_gets_its_line(tmp_path, capsys):
    """A kill between history.csv and the resume state leaves epoch 2's row behind; the resumed
    run trains epoch 2 again and replaces that row: its line is printed then, not before."""
    run_dir = tmp_path / "baseline"
    run_dir.mkdir()
    header = "epoch,accuracy,seconds,val_accuracy\n"
    (run_dir / "history.csv").write_text(header + "0,0.3,2.0,0.25\n1,0.4,2.0,0.35\n")
    entry = queue.Entry(queue.Run("baseline", "paper", 0, 6), run_dir, "resume", done=1,
                        seconds=2.0)
    job = queue._Running(entry, None, None, 0.0,
                         {queue._row_key(r) for r in queue._history_rows(run_dir)})
    queue._report_epochs(job, [job])
    assert "epoch" not in capsys.readouterr().out  # the rows there at the start
    (run_dir / "history.csv").write_text(header + "0,0.3,2.0,0.25\n1,0.45,3.0,0.4\n")
    queue._report_epochs(job, [job])
    (run_dir / "history.csv").write_text(
        header + "0,0.3,2.0,0.25\n1,0.45,3.0,0.4\n2,0.5,3.0,0.45\n")
    queue._report_epochs(job, [job])
    queue._report_epochs(job, [job])  # nothing new
    lines = [line for line in capsys.readouterr().out.splitlines() if " epoch " in line]
    assert len(lines) == 2 and "baseline epoch 2/6: 3 s, accuracy 45.0 %" in lines[0]
    assert "baseline epoch 3/6: 3 s, accuracy 50.0 %" in lines[1]
    assert job.seconds == [3.0, 3.0]


def test_a_failed_run_is_marked_and_the_queue_goes_on(tmp_path, fake_train, monkeypatch, capsys):
    file = tmp_path / "queue.txt"
    file.write_text("e4 paper 1 2\ne4 paper 2 2\n")
    out = tmp_path / "out"
    monkeypatch.setenv("FAKE_FAIL", "e4_seed1")
    kwargs = dict(data="synthetic", out=out, precision="float32", poll_s=0.05,
                  train_command=fake_train)
    assert queue.run_queue(file, **kwargs) == 1
    printed = capsys.readouterr().out
    assert "FAILED e4_seed1 (exit 1); the last lines of" in printed
    assert "    ValueError: something went wrong in e4_seed1" in printed
    assert "going on with the next run" in printed
    assert "finished e4_seed2: top-1 25.0 %" in printed
    mark = (out / ".queue" / "e4_seed1.failed").read_text()
    assert mark.startswith("exit 1 at ") and "something went wrong" in mark
    assert (out / "e4_seed2" / "metrics.json").exists()

    # Started again: the failed run is tried again (and now trains), the finished one skipped.
    monkeypatch.delenv("FAKE_FAIL")
    assert queue.run_queue(file, **kwargs) == 0
    printed = capsys.readouterr().out
    assert "  finished (1): e4_seed2" in printed
    assert "  failed last time: e4_seed1 (exit 1 at " in printed
    assert not (out / ".queue" / "e4_seed1.failed").exists()
    assert _events(tmp_path).count(("start", "e4_seed2")) == 1


def test_a_run_another_process_holds_is_skipped(tmp_path, fake_train, capsys):
    file = tmp_path / "queue.txt"
    file.write_text("e4 paper 1 2\ne4 paper 2 2\n")
    out = tmp_path / "out"
    with runs.locked(out / "e4_seed1"):
        assert queue.run_queue(file, data="synthetic", out=out, precision="float32",
                               poll_s=0.05, train_command=fake_train) == 0
    printed = capsys.readouterr().out
    assert f"  busy: e4_seed1 (process {os.getpid()} holds its folder): skipped" in printed
    assert "left to the process that holds them (e4_seed1)" in printed
    assert _events(tmp_path) == [("start", "e4_seed2"), ("end", "e4_seed2")]


def test_several_at_once_and_the_time_limit(tmp_path, fake_train, monkeypatch, capsys):
    file = tmp_path / "queue.txt"
    file.write_text("e4 paper 1 4\ne4 paper 2 4\ne4 paper 3 4\n")
    out = tmp_path / "out"
    kwargs = dict(data="synthetic", out=out, precision="float32", poll_s=0.05,
                  train_command=fake_train)
    # A run that cannot finish 10 s before the deadline is not started.
    assert queue.run_queue(file, deadline=time.time() + 60, reserve_s=10, estimate_s=60,
                           **kwargs) == 0
    assert "time limit: not starting e4_seed1 (60 s of epochs, " in capsys.readouterr().out
    assert _events(tmp_path) == []
    # Two at once: the second starts before the first ends, the third after one of them.
    assert queue.run_queue(file, concurrency=2, **kwargs) == 0
    events = _events(tmp_path)
    assert set(events[:2]) == {("start", "e4_seed1"), ("start", "e4_seed2")}
    first_end = min(i for i, (kind, _) in enumerate(events) if kind == "end")
    assert first_end == 2 and events.index(("start", "e4_seed3")) > first_end
    capsys.readouterr()
    # The runs going at the deadline (less the reserve) stop at their last finished epoch.
    file.write_text("e4 paper 4 4\n")
    monkeypatch.setenv("FAKE_SECONDS", "1")
    start = time.time()
    assert queue.run_queue(file, deadline=time.time() + 2.5, reserve_s=1, **kwargs) == 0
    assert time.time() - start < 10
    printed = capsys.readouterr().out
    assert "time limit: stopping e4_seed4" in printed
    assert "e4_seed4: stopped; " in printed and ", it resumes at epoch " in printed


# ---------------------------------------------------------------- a real queue, stopped and resumed


def test_a_real_queue_stopped_mid_run_then_restarted(tmp_path, capsys):
    """Two queues on one folder, TensorFlow, synthetic data; the first stopped and restarted."""
    out = tmp_path / "results"
    finished_run(out, "baseline", seed=1)  # made earlier: skipped, and it gives the estimate
    file = tmp_path / "queue.txt"
    file.write_text("baseline paper 1 3\nbaseline paper 0 6\n")
    argv = [str(file), "--data", "synthetic", "--out", str(out), "--limit", "256",
            "--precision", "float32"]
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.Popen([sys.executable, "-m", "squeeze_keras", "queue", *argv], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout))
    reader.start()
    run_dir = out / "baseline"
    try:
        end = time.time() + 240
        while "] baseline epoch 1/6: " not in "".join(output) and proc.poll() is None \
                and time.time() < end:
            time.sleep(0.1)
        assert "] baseline epoch 1/6: " in "".join(output), "".join(output)
        # A second queue on the same folder meanwhile: the run the first trains is left to it.
        kwargs = dict(data="synthetic", limit=256, out=out, precision="float32", poll_s=0.2)
        assert queue.run_queue(file, **kwargs) == 0
        second = capsys.readouterr().out
        assert "  busy: baseline (process " in second and "nothing to train" in second
        assert runs.read_metrics(run_dir) is None, "the run finished before it could be stopped"
        proc.send_signal(signal.SIGINT)  # Ctrl-C
        assert proc.wait(120) == 130
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join()
    first = "".join(output)
    assert "  finished (1): baseline_seed1" in first
    assert "    baseline  6 epochs x 2 s = 12 s  (float32; measured (baseline_seed1))" in first
    kept = runs.resumable_epochs(run_dir)
    assert f"baseline: stopped; epochs 1-{kept} are kept, it resumes at epoch {kept + 1}" in first
    assert ("To continue: python -m squeeze_keras queue " + " ".join(argv)) in first

    assert cli.main(["queue", *argv]) == 0  # started again
    again = capsys.readouterr().out
    assert "  finished (1): baseline_seed1" in again
    assert f"  resumes baseline at epoch {kept + 1}/6 in float32" in again
    assert f"] baseline epoch {kept + 1}/6: " in again
    assert "finished baseline: top-1 " in again
    metrics = runs.read_metrics(run_dir)
    assert metrics["epochs"] == 6 and len(metrics["sittings"]) == 2
    assert list(runs.read_history(run_dir)["epoch"]) == list(range(6))
    assert "$ " in (out / ".queue" / "baseline.log").read_text()


def test_each_finished_run_gets_its_figure_and_a_smoke_queue_none(tmp_path, fake_train, capsys):
    file = tmp_path / "queue.txt"
    file.write_text("e4 paper 1 2\n")
    out, figures = tmp_path / "out", tmp_path / "figures"
    assert queue.run_queue(file, data="synthetic", out=out, precision="float32", poll_s=0.05,
                           train_command=fake_train, figures=figures) == 0
    printed = capsys.readouterr().out
    assert f"e4_seed1: its figure is {figures / 'e4_seed1_accuracy.png'}" in printed
    assert (figures / "e4_seed1_accuracy.png").read_bytes()[:4] == b"\x89PNG"
    assert "--figures" in queue.continue_command(file, data="d", out=out, limit=None,
                                                 precision="auto", concurrency=1,
                                                 figures=figures)
    # A smoke queue (--limit) is refused a figures folder before anything trains.
    with pytest.raises(ValueError, match="a smoke run\\) draws no figure"):
        queue.run_queue(file, data="synthetic", out=tmp_path / "smoke", limit=64,
                        figures=figures, train_command=fake_train)
    assert not (tmp_path / "smoke").exists()
    assert cli.main(["queue", str(file), "--data", "synthetic", "--limit", "64",
                     "--figures", str(figures)]) == 2
    assert "draws no figure" in capsys.readouterr().err
