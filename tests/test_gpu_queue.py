"""tools/gpu_queue.py: the GPU call's queue, its packing within the return limits, and unpacking.

The packing and unpacking tests use run folders made without training (a real
`config.json` from the registry, fake model bytes); one end-to-end test trains a tiny
queue for real (two runs at once, TensorFlow backend, synthetic data, one epoch), kills
the queue halfway, starts it again, packs into an emulated `$OUT` and unpacks.
"""

import importlib.util
import io
import json
import os
import pathlib
import signal
import subprocess
import sys
import tarfile
import threading
import time

import numpy as np
import pytest

from squeeze_keras import experiments, runs

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _load_tool():
    spec = importlib.util.spec_from_file_location("gpu_queue", ROOT / "tools" / "gpu_queue.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["gpu_queue"] = module
    spec.loader.exec_module(module)
    return module


gq = _load_tool()


def fake_run(folder: pathlib.Path, experiment="e4", protocol="paper", seed=0, epochs=2,
             model_bytes=100_000, data="synthetic", limit=64, top1=50.0,
             params=727_594) -> pathlib.Path:
    """A finished run folder as `train` writes it, without training (model bytes are random)."""
    config = experiments.get(experiment).with_protocol(protocol)
    run_dir = runs.run_dir_for(config, folder, seed)
    run_dir.mkdir(parents=True)
    spec = runs.run_spec(config, epochs=epochs, seed=seed, data=data, limit=limit,
                         precision="mixed_bfloat16")
    (run_dir / "config.json").write_text(json.dumps(spec))
    (run_dir / "metrics.json").write_text(json.dumps({
        "experiment": experiment, "protocol": protocol, "seed": seed, "epochs": epochs,
        "top1": top1, "params": params,
        "seconds_per_epoch": 4.0, "hardware": "1x NVIDIA H200"}))
    (run_dir / "history.csv").write_text(
        "epoch,accuracy,loss,seconds\n" + "".join(f"{e},0.5,1.0,4.0\n" for e in range(epochs)))
    (run_dir / "model.keras").write_bytes(np.random.default_rng(seed).bytes(model_bytes))
    return run_dir


def pack_args(**overrides):
    args = gq._parser().parse_args(["run", "q", "--data", "synthetic", "--out", "o"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def packed_state(tmp_path, specs):
    """Fake finished runs in tmp/runs and a State that lists them finished, in order."""
    order = []
    state = gq.State(tmp_path / "state.json")
    for spec in specs:
        fake_run(tmp_path / "runs", **spec)
        run = gq.Run(spec.get("experiment", "e4"), spec.get("protocol", "paper"),
                     spec.get("seed", 0), spec.get("epochs", 2))
        state.run(run)["status"] = "finished"
        order.append(run)
    return order, state


def test_queue_file_parses_and_names_runs():
    entries = gq.parse_queue((ROOT / "benchmarks" / "gpu_queue.txt").read_text())
    runs_ = [e for e in entries if isinstance(e, gq.Run)]
    assert [r.name for r in runs_[:4]] == ["e4_seed1", "e4_seed2", "e4_tuned2_seed1", "e4_tuned2_seed2"]
    assert {r.experiment for r in runs_ if r.seed == 0} == set(experiments.DESIGN_SPACE)
    assert sum(isinstance(e, gq.Best) for e in entries) == 1
    for bad in ("e9 paper 0 20", "e4 fast 0 20", "e4 paper 0", "@best 2 colour=red"):
        with pytest.raises(gq.QueueError, match="queue line 1"):
            gq.parse_queue(bad)


def test_best_waits_for_its_candidates_then_picks_under_the_parameter_cap(tmp_path):
    entries = gq.parse_queue("e4_bn paper 0 2\ne4_pct01 paper 0 2\ne4_sr250 paper 0 2\n"
                             "@best 2 max_params=1000000 protocol=tuned2 epochs=2 variant=_bn\n")
    best = entries[-1]
    folder = tmp_path / "runs"
    assert gq.resolve_best(best, entries[:-1], {}, [folder]) is None  # nothing finished yet
    fake_run(folder, "e4_bn", top1=70.0, params=736_522)
    fake_run(folder, "e4_pct01", top1=60.0, params=246_058)
    fake_run(folder, "e4_sr250", top1=90.0, params=1_446_250)  # best, but over 1 M parameters
    chosen, note = gq.resolve_best(best, entries[:-1], {}, [folder])
    # e4_bn has batch norm already; e4_pct01_bn is not registered, so e4_pct01 runs, noted.
    assert chosen == [gq.Run("e4_bn", "tuned2", 0, 2), gq.Run("e4_pct01", "tuned2", 0, 2)]
    assert "e4_pct01_bn is not registered" in note


def test_packing_keeps_to_the_return_limits(tmp_path):
    # (The limits are scaled down fourfold.) Runs of 0.75 MB fit two to an archive of
    # 1.75 MiB; one of 2.25 MB fits none and goes without
    # its model (and then into the first archive with room); with room for only two
    # archives, the last run is left over.
    order, state = packed_state(tmp_path, [
        dict(seed=1, model_bytes=750_000), dict(seed=2, model_bytes=750_000),
        dict(seed=3, model_bytes=2_250_000), dict(seed=4, model_bytes=750_000),
        dict(seed=5, model_bytes=750_000), dict(seed=6, model_bytes=750_000)])
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "gpu_call.log").write_text("log\n")
    args = pack_args(max_files=4, max_file_mib=1.75, max_total_mib=64.0, reserve_mib=0.125)
    archives = gq.pack(order, state, tmp_path / "runs", out, args)
    gq.write_summary(order, state, archives, out)
    files = sorted(p.name for p in out.iterdir())
    assert files == ["gpu_call.log", "queue_state.json", "runs-1.tar.gz", "runs-2.tar.gz"]
    assert all(p.stat().st_size <= 1.75 * MIB for p in out.iterdir())
    assert archives == {"e4_seed1": "runs-1.tar.gz", "e4_seed2": "runs-1.tar.gz",
                        "e4_seed3": "runs-1.tar.gz", "e4_seed4": "runs-2.tar.gz",
                        "e4_seed5": "runs-2.tar.gz"}
    summary = json.loads((out / "queue_state.json").read_text())
    assert summary["leftover"] == ["e4 paper 6 2"]
    assert "no room" in summary["runs"]["e4_seed6"]["note"]
    assert "not returned" in summary["runs"]["e4_seed3"]["note"]
    with tarfile.open(out / "runs-1.tar.gz") as tar:
        names = tar.getnames()
    assert "e4_seed3/MODEL_NOT_RETURNED.txt" in names and "e4_seed3/model.keras" not in names
    assert "e4_seed2/model.keras" in names

    # The byte budget counts too: 1.75 MiB in all leaves room for one archive.
    out2 = tmp_path / "OUT2"
    out2.mkdir()
    archives = gq.pack(order, state, tmp_path / "runs", out2, pack_args(
        max_files=8, max_file_mib=1.75, max_total_mib=1.75, reserve_mib=0.01))
    assert set(archives) == {"e4_seed1", "e4_seed2", "e4_seed3"}  # seed 3 without its model
    assert sum(p.stat().st_size for p in out2.iterdir()) <= 1.75 * MIB


def test_unpack_checks_each_run_and_never_overwrites(tmp_path, capsys):
    order, state = packed_state(tmp_path, [dict(seed=1), dict(seed=2, model_bytes=600_000)])
    out = tmp_path / "OUT"
    out.mkdir()
    gq.pack(order, state, tmp_path / "runs", out, pack_args(max_file_mib=0.5))
    results = tmp_path / "results"
    argv = ["unpack", *map(str, sorted(out.glob("runs-*.tar.gz"))), "--data", "synthetic",
            "--limit", "64", "--results", str(results), "--bench-dir", str(tmp_path / "bench")]
    assert gq.main(argv) == 0
    assert (results / "e4_seed1" / "model.keras").exists()
    assert not (results / "e4_seed2" / "model.keras").exists()  # over 0.5 MiB: left behind
    assert (results / "e4_seed2" / "MODEL_NOT_RETURNED.txt").exists()
    printed = capsys.readouterr().out
    assert "2 added, 0 already there, 0 refused" in printed
    # Again: nothing is overwritten.
    (results / "e4_seed1" / "metrics.json").write_text('{"mine": 1}')
    assert gq.main(argv) == 0
    assert "0 added, 2 already there" in capsys.readouterr().out
    assert json.loads((results / "e4_seed1" / "metrics.json").read_text()) == {"mine": 1}

    # Other data, another limit, a tampered file, a config the registry does not build: refused.
    fresh = ["--results", str(tmp_path / "fresh"), "--bench-dir", str(tmp_path / "bench")]
    archive = str(out / "runs-1.tar.gz")
    assert gq.main(["unpack", archive, "--data", "tfds", "--limit", "64", *fresh]) == 2
    assert "differs from the registry's e4" in capsys.readouterr().err
    assert gq.main(["unpack", archive, "--data", "synthetic", *fresh]) == 2
    assert "limit" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "e4_seed1").exists()

    def rewrite(name, change):
        with tarfile.open(archive) as tar:
            members = {m.name: tar.extractfile(m).read() for m in tar.getmembers()}
        change(members)
        bad = tmp_path / name
        with tarfile.open(bad, "w:gz") as tar:
            for member, payload in members.items():
                info = tarfile.TarInfo(member)
                info.size = len(payload)
                tar.addfile(info, io.BytesIO(payload))
        return str(bad)

    tampered = rewrite("t1.tar.gz", lambda m: m.update({"e4_seed1/history.csv": b"epoch\n0\n"}))
    assert gq.main(["unpack", tampered, "--data", "synthetic", "--limit", "64", *fresh]) == 2
    assert "SHA-256" in capsys.readouterr().err

    def other_dropout(members):
        config = json.loads(members["e4_seed1/config.json"])
        config["experiment"]["model"]["dropout"] = 0.3
        members["e4_seed1/config.json"] = json.dumps(config).encode()
        manifest = json.loads(members["MANIFEST.json"])
        import hashlib
        manifest["runs"]["e4_seed1"]["files"]["e4_seed1/config.json"] = hashlib.sha256(
            members["e4_seed1/config.json"]).hexdigest()
        members["MANIFEST.json"] = json.dumps(manifest).encode()

    edited = rewrite("t2.tar.gz", other_dropout)
    assert gq.main(["unpack", edited, "--data", "synthetic", "--limit", "64", *fresh]) == 2
    assert "experiment.model.dropout" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "e4_seed1").exists()


def test_a_deadline_too_close_starts_nothing_and_lists_everything(tmp_path):
    queue = tmp_path / "queue.txt"
    queue.write_text("baseline paper 0 1\nbaseline paper 1 1\n")
    out = tmp_path / "OUT"
    code = gq.main(["run", str(queue), "--data", "synthetic", "--out", str(out), "--work",
                    str(tmp_path / "work"), "--results", str(tmp_path / "results"),
                    "--budget-s", "30", "--pack-reserve-s", "10", "--estimate-s", "60"])
    assert code == 0
    summary = json.loads((out / "queue_state.json").read_text())
    assert summary["leftover"] == ["baseline paper 0 1", "baseline paper 1 1"]
    assert {r["status"] for r in summary["runs"].values()} == {"pending"}


def test_bench_archive_unpacks_into_benchmark_results(tmp_path):
    bench = tmp_path / "bench_out"
    bench.mkdir()
    (bench / "gpu_nvidia_h200.csv").write_text("machine,measure\n")
    (bench / "gpu_nvidia_h200.md").write_text("table\n")
    (bench / "keras.log").write_text("log\n")
    out = tmp_path / "OUT"
    assert gq.main(["pack-bench", str(bench), "--out", str(out)]) == 0
    target = tmp_path / "results_bench"
    argv = ["unpack", str(out / "bench.tar.gz"), "--data", "synthetic", "--results",
            str(tmp_path / "r"), "--bench-dir", str(target)]
    assert gq.main(argv) == 0
    assert sorted(p.name for p in target.iterdir()) == ["gpu_nvidia_h200.csv", "gpu_nvidia_h200.md"]


def _state(work):
    path = work / "state.json"
    return json.loads(path.read_text())["runs"] if path.exists() else {}


def test_tiny_queue_end_to_end_killed_halfway_and_restarted(tmp_path, capsys):
    """Two real runs at once (TensorFlow, synthetic data, 1 epoch), killed, resumed, packed, unpacked."""
    queue = tmp_path / "queue.txt"
    # e4_pct01's model (~1 MB) fits a 2 MiB file; the baseline's (~3 MB) does not.
    queue.write_text("e4_pct01 paper 0 1\nbaseline paper 1 1\n")
    work, out = tmp_path / "work", tmp_path / "OUT"
    out.mkdir()
    (out / "gpu_call.log").write_text("the call's log\n")
    argv = ["run", str(queue), "--data", "synthetic", "--out", str(out), "--work", str(work),
            "--results", str(tmp_path / "results"), "--concurrency", "2", "--budget-s", "600",
            "--estimate-s", "60", "--poll-s", "0.2", "--max-file-mib", "2",
            "--train-args=--limit 64 --precision float32"]

    # The queue is killed (SIGTERM to this process, where it runs) once both runs have
    # started: they are interrupted and the state says so. (In this process rather than a
    # child of its own, to spare the 2-core test machine one more TensorFlow start-up.)
    def kill_when_both_run():
        end = time.time() + 120
        while time.time() < end:
            states = _state(work)
            if len(states) == 2 and all(r["status"] == "running" for r in states.values()):
                os.kill(os.getpid(), signal.SIGTERM)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_when_both_run)
    killer.start()
    try:
        assert gq.main(argv) == 130
    finally:
        killer.join()
    assert {r["status"] for r in _state(work).values()} == {"interrupted"}
    assert not list(out.glob("runs-*"))

    start = time.time()
    assert gq.main(argv) == 0  # started again: both runs resumed, two at once
    took = time.time() - start
    states = _state(work)
    assert {n: r["status"] for n, r in states.items()} == {"e4_pct01": "finished",
                                                          "baseline_seed1": "finished"}
    assert all(r["attempts"] == 2 for r in states.values())
    assert sorted(p.name for p in out.iterdir()) == ["gpu_call.log", "queue_state.json", "runs-1.tar.gz"]
    summary = json.loads((out / "queue_state.json").read_text())
    assert summary["leftover"] == []
    assert "not returned" in summary["runs"]["baseline_seed1"]["note"]

    # A third start trains nothing: every run is finished.
    assert gq.main(argv) == 0
    assert all(r["attempts"] == 2 for r in _state(work).values())

    results = tmp_path / "results"
    unpack = ["unpack", str(out / "runs-1.tar.gz"), "--data", "synthetic", "--limit", "64",
              "--results", str(results), "--bench-dir", str(tmp_path / "bench")]
    assert gq.main(unpack) == 0
    assert (results / "e4_pct01" / "model.keras").exists()
    assert (results / "baseline_seed1" / "MODEL_NOT_RETURNED.txt").exists()
    assert runs.load_run(results / "e4_pct01").metrics["params"] == 246_058
    # Runs now in results/ are skipped by the next call.
    argv[argv.index("--work") + 1] = str(tmp_path / "work2")
    assert gq.main(argv) == 0
    assert {r["status"] for r in _state(tmp_path / "work2").values()} == {"in-results"}
    print(f"restarted queue trained both runs in {took:.0f} s", file=sys.stderr)


def test_gpu_call_script_is_valid_and_its_carry_is_ignored():
    script = ROOT / "tools" / "gpu_call.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needed in ("benchmarks/gpu.py", "tools/gpu_queue.py run benchmarks/gpu_queue.txt",
                   "PYTHONUNBUFFERED=1", "KERAS_BACKEND=jax", '$OUT/gpu_call.log'):
        assert needed in text
    ignored = subprocess.run(["git", "check-ignore", ".whl/keras.whl", "data/cifar10-jpeg.tar.gz"],
                             cwd=ROOT, capture_output=True, text=True)
    if ignored.returncode != 128:  # 128: not a git checkout (an sdist, say)
        assert ignored.stdout.split() == [".whl/keras.whl", "data/cifar10-jpeg.tar.gz"]


CIFAR10_ARCHIVE = ROOT.parent / "shared" / "data" / "cifar10-jpeg.tar.gz"


@pytest.mark.skipif(not CIFAR10_ARCHIVE.exists(), reason="needs the CIFAR-10 JPEG archive")
def test_a_committed_gpu_run_passes_the_unpack_checks_on_the_real_archive(tmp_path, capsys):
    """results/e4 (made on an H100 from that archive) packed and unpacked as a queue's run."""
    import shutil

    shutil.copytree(ROOT / "results" / "e4", tmp_path / "runs" / "e4",
                    ignore=shutil.ignore_patterns("litert*", "pruned*"))
    state = gq.State(tmp_path / "state.json")
    order = [gq.Run("e4", "paper", 0, 20)]
    state.run(order[0])["status"] = "finished"
    (tmp_path / "OUT").mkdir()
    assert gq.pack(order, state, tmp_path / "runs", tmp_path / "OUT", pack_args()) == {
        "e4": "runs-1.tar.gz"}
    argv = ["unpack", str(tmp_path / "OUT" / "runs-1.tar.gz"), "--data", str(CIFAR10_ARCHIVE),
            "--results", str(tmp_path / "results"), "--bench-dir", str(tmp_path / "bench")]
    assert gq.main(argv) == 0
    assert "top-1 67.01 %" in capsys.readouterr().out
    assert (tmp_path / "results" / "e4" / "model.keras").read_bytes() == (
        ROOT / "results" / "e4" / "model.keras").read_bytes()


FAKE_TRAIN = '''#!{python}
"""Stands in for `python -m squeeze_keras train ...`: sleeps, then writes a finished run folder."""
import json, os, pathlib, sys, time
exp, *rest = sys.argv[4:]
opts = dict(zip(rest[0::2], rest[1::2]))
name = exp + ("" if opts["--protocol"] == "paper" else "_" + opts["--protocol"]) + (
    "" if opts["--seed"] == "0" else "_seed" + opts["--seed"])
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(f"start {{name}} {{time.time()}}\\n")
try:
    time.sleep(float(os.environ["FAKE_SECONDS"]))
except KeyboardInterrupt:
    sys.exit(130)
run = pathlib.Path(opts["--out"]) / name
run.mkdir(parents=True, exist_ok=True)
for file in ("config.json", "history.csv", "model.keras"):
    (run / file).write_text("{{}}")
(run / "metrics.json").write_text(json.dumps({{"top1": 50.0}}))
with open(os.environ["FAKE_LOG"], "a") as log:
    log.write(f"end {{name}} {{time.time()}}\\n")
'''


def test_runs_share_the_slots_and_the_deadline_stops_and_interrupts(tmp_path, monkeypatch):
    fake = tmp_path / "fake_python"
    fake.write_text(FAKE_TRAIN.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setenv("FAKE_LOG", str(tmp_path / "fake.log"))
    queue = tmp_path / "queue.txt"
    queue.write_text("baseline paper 0 1\nbaseline paper 1 1\nbaseline paper 2 1\n")

    def run(name, seconds, budget, reserve):
        monkeypatch.setenv("FAKE_SECONDS", str(seconds))
        out = tmp_path / f"OUT_{name}"
        code = gq.main(["run", str(queue), "--data", "synthetic", "--out", str(out), "--work",
                        str(tmp_path / name), "--results", str(tmp_path / "results"),
                        "--python", str(fake), "--concurrency", "2", "--budget-s", str(budget),
                        "--pack-reserve-s", str(reserve), "--estimate-s", "1", "--poll-s", "0.1"])
        assert code == 0
        return json.loads((out / "queue_state.json").read_text())

    # Two at once; once they have taken 4 s (and up to 3 s to start) each, the third would
    # end after the deadline less the packing reserve (7 s): it is not started, and stays listed.
    summary = run("a", 4, 8, 1)
    assert {n: r["status"] for n, r in summary["runs"].items()} == {
        "baseline": "finished", "baseline_seed1": "finished", "baseline_seed2": "pending"}
    assert summary["leftover"] == ["baseline paper 2 1"]
    events = sorted((float(t), kind) for kind, _, t in (
        line.split() for line in (tmp_path / "fake.log").read_text().splitlines()))
    running = peak = 0
    for _, kind in events:
        running += 1 if kind == "start" else -1
        peak = max(peak, running)
    assert peak == 2

    # Runs still going at the deadline less the reserve are interrupted and stay listed.
    start = time.time()
    summary = run("b", 60, 3, 1.5)
    assert time.time() - start < 20
    assert {r["status"] for r in summary["runs"].values()} == {"interrupted", "pending"}
    assert summary["leftover"] == ["baseline paper 0 1", "baseline paper 1 1", "baseline paper 2 1"]
