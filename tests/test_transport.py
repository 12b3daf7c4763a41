"""tools/transport.py: packing a queue's finished runs within a job's return limits, and unpacking.

The tests use run folders made without training (a real `config.json` from the
registry, fake model bytes); the queue that trains them is tests/test_queue.py's.
"""

import importlib.util
import io
import json
import pathlib
import subprocess
import sys
import tarfile

import numpy as np
import pytest

from squeeze_keras import experiments, runs

ROOT = pathlib.Path(__file__).resolve().parents[1]
MIB = 1 << 20


def _load_tool():
    spec = importlib.util.spec_from_file_location("transport", ROOT / "tools" / "transport.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["transport"] = module
    spec.loader.exec_module(module)
    return module


tp = _load_tool()


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
        "top1": top1, "top5": 90.0, "report_top1": None, "params": params,
        "seconds_per_epoch": 4.0, "hardware": "1x NVIDIA H200"}))
    (run_dir / "history.csv").write_text(
        "epoch,accuracy,loss,seconds\n" + "".join(f"{e},0.5,1.0,4.0\n" for e in range(epochs)))
    (run_dir / "model.keras").write_bytes(np.random.default_rng(seed).bytes(model_bytes))
    return run_dir


def pack_args(**overrides):
    args = tp._parser().parse_args(["pack", "q", "--runs", "r", "--out", "o"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def finished(tmp_path, specs) -> list[str]:
    """Fake finished runs in tmp/runs; their names, in order."""
    return [fake_run(tmp_path / "runs", **spec).name for spec in specs]


def test_packing_keeps_to_the_return_limits(tmp_path, capsys):
    # (The limits are scaled down fourfold.) Runs of 0.75 MB fit two to an archive of
    # 1.75 MiB; one of 2.25 MB fits none and goes without its model (and then into the
    # first archive with room); with room for only two archives, the last run is left over.
    finished(tmp_path, [
        dict(seed=1, model_bytes=750_000), dict(seed=2, model_bytes=750_000),
        dict(seed=3, model_bytes=2_250_000), dict(seed=4, model_bytes=750_000),
        dict(seed=5, model_bytes=750_000), dict(seed=6, model_bytes=750_000)])
    fake_run(tmp_path / "results", seed=7)  # made before: needs no packing
    (tmp_path / "runs" / "e4_seed8").mkdir()  # not finished
    file = tmp_path / "queue.txt"
    file.write_text("".join(f"e4 paper {seed} 2\n" for seed in range(1, 10)))
    out = tmp_path / "OUT"
    out.mkdir()
    (out / "job.log").write_text("log\n")
    argv = ["pack", str(file), "--runs", str(tmp_path / "runs"), "--out", str(out),
            "--skip-finished-in", str(tmp_path / "results"), "--max-files", "4",
            "--max-file-mib", "1.75", "--reserve-mib", "0.125"]
    assert tp.main(argv) == 0
    files = sorted(p.name for p in out.iterdir())
    assert files == ["job.log", "queue_state.json", "runs-1.tar.gz", "runs-2.tar.gz"]
    assert all(p.stat().st_size <= 1.75 * MIB for p in out.iterdir())
    summary = json.loads((out / "queue_state.json").read_text())
    archives = {name: r.get("archive") for name, r in summary["runs"].items()}
    assert archives == {"e4_seed1": "runs-1.tar.gz", "e4_seed2": "runs-1.tar.gz",
                        "e4_seed3": "runs-1.tar.gz", "e4_seed4": "runs-2.tar.gz",
                        "e4_seed5": "runs-2.tar.gz", "e4_seed6": None, "e4_seed7": None,
                        "e4_seed8": None, "e4_seed9": None}
    assert summary["leftover"] == ["e4 paper 6 2", "e4 paper 8 2", "e4 paper 9 2"]
    assert "no room" in summary["runs"]["e4_seed6"]["note"]
    assert "not returned" in summary["runs"]["e4_seed3"]["note"]
    assert summary["runs"]["e4_seed7"]["status"] == f"finished in {tmp_path / 'results'}"
    assert (summary["runs"]["e4_seed8"]["status"], summary["runs"]["e4_seed9"]["status"]) == (
        "new", "new")
    assert "[pack] 5 runs in 2 archives" in capsys.readouterr().out
    with tarfile.open(out / "runs-1.tar.gz") as tar:
        names = tar.getnames()
    assert "e4_seed3/MODEL_NOT_RETURNED.txt" in names and "e4_seed3/model.keras" not in names
    assert "e4_seed2/model.keras" in names

    # The byte budget counts too: 1.75 MiB in all leaves room for one archive.
    out2 = tmp_path / "OUT2"
    out2.mkdir()
    names = [f"e4_seed{seed}" for seed in range(1, 7)]
    archives, _, _ = tp.pack(names, tmp_path / "runs", out2, pack_args(
        max_files=8, max_file_mib=1.75, max_total_mib=1.75, reserve_mib=0.01))
    assert set(archives) == {"e4_seed1", "e4_seed2", "e4_seed3"}  # seed 3 without its model
    assert sum(p.stat().st_size for p in out2.iterdir()) <= 1.75 * MIB


def test_unpack_checks_each_run_and_never_overwrites(tmp_path, capsys):
    names = finished(tmp_path, [dict(seed=1), dict(seed=2, model_bytes=600_000)])
    out = tmp_path / "OUT"
    out.mkdir()
    tp.pack(names, tmp_path / "runs", out, pack_args(max_file_mib=0.5))
    results = tmp_path / "results"
    argv = ["unpack", *map(str, sorted(out.glob("runs-*.tar.gz"))), "--data", "synthetic",
            "--limit", "64", "--results", str(results), "--bench-dir", str(tmp_path / "bench")]
    assert tp.main(argv) == 0
    assert (results / "e4_seed1" / "model.keras").exists()
    assert not (results / "e4_seed2" / "model.keras").exists()  # over 0.5 MiB: left behind
    assert (results / "e4_seed2" / "MODEL_NOT_RETURNED.txt").exists()
    printed = capsys.readouterr().out
    assert "2 added, 0 already there, 0 refused" in printed
    # Again: nothing is overwritten.
    (results / "e4_seed1" / "metrics.json").write_text('{"mine": 1}')
    assert tp.main(argv) == 0
    assert "0 added, 2 already there" in capsys.readouterr().out
    assert json.loads((results / "e4_seed1" / "metrics.json").read_text()) == {"mine": 1}

    # Other data, another limit, a tampered file, a config the registry does not build: refused.
    fresh = ["--results", str(tmp_path / "fresh"), "--bench-dir", str(tmp_path / "bench")]
    archive = str(out / "runs-1.tar.gz")
    assert tp.main(["unpack", archive, "--data", "tfds", "--limit", "64", *fresh]) == 2
    assert "differs from the registry's e4" in capsys.readouterr().err
    assert tp.main(["unpack", archive, "--data", "synthetic", *fresh]) == 2
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
    assert tp.main(["unpack", tampered, "--data", "synthetic", "--limit", "64", *fresh]) == 2
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
    assert tp.main(["unpack", edited, "--data", "synthetic", "--limit", "64", *fresh]) == 2
    assert "experiment.model.dropout" in capsys.readouterr().err
    assert not (tmp_path / "fresh" / "e4_seed1").exists()


def test_bench_archive_unpacks_into_benchmark_results(tmp_path):
    bench = tmp_path / "bench_out"
    bench.mkdir()
    (bench / "gpu_nvidia_h200.csv").write_text("machine,measure\n")
    (bench / "gpu_nvidia_h200.md").write_text("table\n")
    (bench / "keras.log").write_text("log\n")
    out = tmp_path / "OUT"
    assert tp.main(["pack-bench", str(bench), "--out", str(out)]) == 0
    target = tmp_path / "results_bench"
    argv = ["unpack", str(out / "bench.tar.gz"), "--data", "synthetic", "--results",
            str(tmp_path / "r"), "--bench-dir", str(target)]
    assert tp.main(argv) == 0
    assert sorted(p.name for p in target.iterdir()) == ["gpu_nvidia_h200.csv", "gpu_nvidia_h200.md"]


def test_gpu_call_script_is_valid_and_its_carry_is_ignored():
    script = ROOT / "tools" / "gpu_call.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    for needed in ("benchmarks/gpu.py", "python3 -m squeeze_keras queue queue.txt",
                   "tools/transport.py pack queue.txt", "PYTHONUNBUFFERED=1",
                   "KERAS_BACKEND=jax", '$OUT/gpu_call.log'):
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
    (tmp_path / "OUT").mkdir()
    archives, _, _ = tp.pack(["e4"], tmp_path / "runs", tmp_path / "OUT", pack_args())
    assert archives == {"e4": "runs-1.tar.gz"}
    argv = ["unpack", str(tmp_path / "OUT" / "runs-1.tar.gz"), "--data", str(CIFAR10_ARCHIVE),
            "--results", str(tmp_path / "results"), "--bench-dir", str(tmp_path / "bench")]
    assert tp.main(argv) == 0
    assert "top-1 67.01 %" in capsys.readouterr().out
    assert (tmp_path / "results" / "e4" / "model.keras").read_bytes() == (
        ROOT / "results" / "e4" / "model.keras").read_bytes()
