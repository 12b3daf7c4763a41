"""Moving finished runs out of a batch job that may copy back only a few files of limited size.

Some machines train well but return little: a batch job with a time limit whose
output folder may hold at most so many files of at most so many MiB (a rented or
lent GPU, a cluster job without a shared file system). There the queue
(`python -m squeeze_keras queue`, `docs/queue.md`) trains into a scratch
folder with a deadline, and this tool packs what finished, then unpacks it at
home:

    pack QUEUE --runs RUNS --out OUT       the finished runs of QUEUE in RUNS as archives in
                                           OUT that fit the limits, and OUT/queue_state.json
    pack-bench FOLDER --out OUT            a benchmark's tables and logs as one archive in OUT
    unpack ARCHIVE... --data ARCHIVE       at home: check each archived run, add it to results/
    footprint                              what one run needs (host memory, threads,
                                           activations): how many to run at once

Packing: the finished runs' `config.json`, `metrics.json`, `history.csv` and
`model.keras` go into `runs-<k>.tar.gz` archives flat in OUT, in queue order,
each at most `--max-file-mib`, all of OUT (the files already there included)
within `--max-files` files and `--max-total-mib`. A run whose own archive
would exceed one file's limit goes without its model, with a
`MODEL_NOT_RETURNED.txt` note; a run for which no room is left stays listed.
Each archive carries `MANIFEST.json`: every file's SHA-256.
`OUT/queue_state.json` gives each queue line's status (finished and packed,
finished in a `--skip-finished-in` folder, unfinished with its epochs, failed,
not started) and the `leftover` lines: the next job's queue.

`unpack` checks each run of each archive before anything is written: the
files against the manifest; `config.json` against what the registry builds
for its experiment, protocol, seed and epochs on `--data` (the archive's
name, size and digest, as `squeeze_keras.runs.data_identity` records it) and
`--limit`; the folder's name; its metrics and history. A run already in
`--results` is not overwritten. Benchmark archives go into
`benchmarks/results/`, also without overwriting.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from squeeze_keras import fileio, queue  # noqa: E402

MIB = 1 << 20
RUN_FILES = ("config.json", "metrics.json", "history.csv", "model.keras")
NOTE = "MODEL_NOT_RETURNED.txt"
MANIFEST = "MANIFEST.json"
STATE = "queue_state.json"
ARCHIVE_RE = re.compile(r"runs-\d+\.tar\.gz")
SLACK = 64 * 1024  # per archive: tar headers and gzip framing beyond the per-run estimate


class TransportError(ValueError):
    """An archive or run folder that cannot be used as it is."""


# ---------------------------------------------------------------- packing


def _add_bytes(tar: tarfile.TarFile, name: str, payload: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.mode = len(payload), int(time.time()), 0o644
    tar.addfile(info, io.BytesIO(payload))


def run_members(run_dir: pathlib.Path, with_model: bool, limit_bytes: int) -> dict:
    """{archive name: bytes} of a finished run, with or without its model."""
    members = {}
    for name in RUN_FILES:
        path = run_dir / name
        if path.exists() and (with_model or name != "model.keras"):
            members[f"{run_dir.name}/{name}"] = path.read_bytes()
    if not with_model:
        size = (run_dir / "model.keras").stat().st_size
        members[f"{run_dir.name}/{NOTE}"] = (
            f"model.keras ({size:,} bytes) was not returned from the GPU machine: its run's "
            f"archive would exceed the {limit_bytes / MIB:g} MiB that one returned file may "
            "hold. config.json, metrics.json and history.csv are the run's own; train it "
            "again from config.json to get the model.\n").encode()
    return members


def write_archive(path: pathlib.Path, runs_members: dict[str, dict], notes: dict) -> int:
    manifest = {"kind": "runs", "runs": {
        run: {"model": f"{run}/model.keras" in members, "note": notes.get(run),
              "files": {n: hashlib.sha256(b).hexdigest() for n, b in members.items()}}
        for run, members in runs_members.items()}}
    tmp = path.with_name(f".{path.name}.partial")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
        for members in runs_members.values():
            for name, payload in members.items():
                _add_bytes(tar, name, payload)
    os.replace(tmp, path)
    return path.stat().st_size


def compressed_size(members: dict) -> int:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz", compresslevel=6) as tar:
        for name, payload in members.items():
            _add_bytes(tar, name, payload)
    return buffer.tell()


def pack(names: list[str], runs_dir: pathlib.Path, out: pathlib.Path, limits) -> tuple[dict, dict, list]:
    """Packs the finished runs `names` (in order) into `runs-<k>.tar.gz` in `out`, within limits.

    `limits` has `max_files`, `max_file_mib`, `max_total_mib` and `reserve_mib`.
    Returns `({run: archive name}, {run: note}, [runs left for want of room])`.
    """
    for old in out.iterdir():  # packing again replaces the archives
        if ARCHIVE_RE.fullmatch(old.name):
            old.unlink()
    file_cap = int(limits.max_file_mib * MIB)
    others = [p for p in out.iterdir() if p.is_file() and p.name != STATE]
    files_free = limits.max_files - len(others) - 1  # the state file
    bytes_free = int(limits.max_total_mib * MIB) - sum(p.stat().st_size for p in others) \
        - int(limits.reserve_mib * MIB)
    bins: list[dict] = []  # {"runs": {name: members}, "size": estimate}
    notes, left = {}, []
    for name in names:
        run_dir = runs_dir / name
        members = run_members(run_dir, True, file_cap)
        size = compressed_size(members) + SLACK
        if size > file_cap:
            members = run_members(run_dir, False, file_cap)
            size = compressed_size(members) + SLACK
            notes[name] = "model.keras not returned (over one file's limit)"
        target = next((b for b in bins if b["size"] + size <= file_cap
                       and sum(x["size"] for x in bins) + size <= bytes_free), None)
        if target is None and len(bins) < files_free and \
                sum(x["size"] for x in bins) + size <= bytes_free and size <= file_cap:
            target = {"runs": {}, "size": SLACK}
            bins.append(target)
        if target is None:
            left.append(name)
            continue
        target["runs"][name] = members
        target["size"] += size
    archives = {}
    k = 0
    while bins:
        b = bins.pop(0)
        k += 1
        path = out / f"runs-{k}.tar.gz"
        size = write_archive(path, b["runs"], notes)
        while size > file_cap and b["runs"]:  # the estimate was short: leave the last run out
            left.append(b["runs"].popitem()[0])
            size = write_archive(path, b["runs"], notes) if b["runs"] else 0
        if not b["runs"]:
            path.unlink(missing_ok=True)
            k -= 1
        for name in b["runs"]:
            archives[name] = path.name
    returned = [p for p in out.iterdir() if p.is_file() and p.name != STATE]
    if len(returned) + 1 > limits.max_files or sum(p.stat().st_size for p in returned) > \
            limits.max_total_mib * MIB:
        print(f"[pack] WARNING: {out} holds more than comes back", flush=True)
    return archives, notes, left


def pack_queue(args) -> int:
    """`pack`: the queue's finished runs in `--runs` into OUT, and `OUT/queue_state.json`."""
    found = queue.parse_queue(args.queue.read_text())
    entries = [queue.inspect(run, args.runs, args.skip_finished_in) for run in found]
    here = [e.run.name for e in entries
            if e.status == "finished" and e.run_dir.parent == args.runs]
    args.out.mkdir(parents=True, exist_ok=True)
    archives, notes, left = pack(here, args.runs, args.out, args)
    records, leftover = {}, []
    for e in entries:
        record = {"line": e.run.line(), "status": e.status, "epochs_done": e.done}
        if e.status == "finished" and e.run_dir.parent != args.runs:
            record["status"] = f"finished in {e.run_dir.parent}"
        if e.failed:
            record["failed"] = e.failed
        if e.run.name in archives:
            record["archive"] = archives[e.run.name]
        if e.run.name in notes or e.run.name in left:
            record["note"] = notes.get(e.run.name, "finished, but no room was left in OUT")
        if e.run.name not in archives and e.run_dir.parent == args.runs:
            leftover.append(e.run.line())
        records[e.run.name] = record
    fileio.write_json(args.out / STATE, {
        "runs": records, "leftover": leftover,
        "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    print(f"[pack] {len(archives)} runs in {len(set(archives.values()))} archives in {args.out}; "
          f"{len(leftover)} queue lines left for the next job", flush=True)
    for line in leftover:
        print(f"[pack] left: {line}", flush=True)
    return 0


def pack_bench(args) -> int:
    """The benchmark's tables (`gpu_*.csv`, `gpu_*.md`), logs and histories as `OUT/bench.tar.gz`."""
    files = sorted(p for p in args.folder.rglob("*") if p.is_file()
                   and p.suffix in (".csv", ".md", ".log", ".json"))
    members = {}
    for path in files:
        payload = path.read_bytes()
        if path.suffix == ".log" and len(payload) > MIB:
            payload = payload[-MIB:]
        members[path.relative_to(args.folder).as_posix().replace("/", "__")] = payload
    manifest = {"kind": "bench", "files": {n: hashlib.sha256(b).hexdigest() for n, b in members.items()}}
    args.out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(args.out / "bench.tar.gz", "w:gz") as tar:
        _add_bytes(tar, MANIFEST, json.dumps(manifest, indent=1).encode())
        for name, payload in members.items():
            _add_bytes(tar, name, payload)
    print(f"[bench] {len(members)} files -> {args.out / 'bench.tar.gz'}")
    return 0


# ---------------------------------------------------------------- unpacking


def read_archive(path: pathlib.Path) -> tuple[dict, dict]:
    """(manifest, {member: bytes}) of an archive; refuses unsafe or unlisted members."""
    try:
        with tarfile.open(path) as tar:
            members = {}
            for info in tar.getmembers():
                name = info.name
                if not info.isfile() or name.startswith("/") or ".." in name.split("/") \
                        or name.count("/") > 1:
                    raise TransportError(f"{path.name}: unexpected member {name!r}")
                members[name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise TransportError(f"{path.name}: cannot be read ({type(err).__name__}: {err})") from None
    if MANIFEST not in members:
        raise TransportError(f"{path.name}: no {MANIFEST}")
    manifest = json.loads(members.pop(MANIFEST))
    listed = ({n for r in manifest.get("runs", {}).values() for n in r["files"]}
              if manifest.get("kind") == "runs" else set(manifest.get("files", {})))
    if listed != set(members):
        raise TransportError(f"{path.name}: members and manifest differ: "
                         f"{sorted(listed ^ set(members))}")
    digests = ({n: d for r in manifest["runs"].values() for n, d in r["files"].items()}
               if manifest.get("kind") == "runs" else manifest["files"])
    for name, payload in members.items():
        if hashlib.sha256(payload).hexdigest() != digests[name]:
            raise TransportError(f"{path.name}: {name} does not match its SHA-256 in {MANIFEST}")
    return manifest, members


def check_run(name: str, files: dict, data_spec: dict, limit) -> dict:
    """Checks an archived run against the registry; returns its metrics. Raises TransportError."""
    from squeeze_keras import devices, experiments, runs

    def load(file):
        if file not in files:
            raise TransportError(f"{name}: no {file}")
        return json.loads(files[file])

    stored = load("config.json")
    metrics = load("metrics.json")
    try:
        exp = stored["experiment"]
        config = experiments.get(exp["name"]).with_protocol(exp["protocol"]["name"])
        epochs, seed, precision = stored["epochs"], stored["seed"], stored["precision"]
    except (KeyError, TypeError, ValueError) as err:
        raise TransportError(f"{name}: config.json names no registered experiment and protocol "
                         f"({type(err).__name__}: {err})") from None
    if precision not in devices.PRECISIONS or precision == "auto":
        raise TransportError(f"{name}: unknown precision {precision!r}")
    wanted = {"experiment": json.loads(json.dumps(dataclasses.asdict(config))), "epochs": epochs,
              "seed": seed, "data": data_spec, "limit": limit, "precision": precision}
    diff = runs.differences(stored, wanted)
    if diff:
        raise TransportError(f"{name}: config.json differs from the registry's {config.name} "
                         f"({config.protocol.name}, seed {seed}, {epochs} epochs, the given "
                         f"data and limit) in: {', '.join(diff)}")
    if runs.run_name(config, seed) != name:
        raise TransportError(f"{name}: the folder of this run is named {runs.run_name(config, seed)}")
    if (metrics.get("experiment"), metrics.get("protocol"), metrics.get("seed"),
            metrics.get("epochs")) != (config.name, config.protocol.name, seed, epochs):
        raise TransportError(f"{name}: metrics.json is not this run's finished metrics")
    rows = [r for r in files.get("history.csv", b"").decode().splitlines()[1:] if r.strip()]
    if len(rows) != epochs:
        raise TransportError(f"{name}: history.csv has {len(rows)} epochs, not {epochs}")
    if "model.keras" not in files and NOTE not in files:
        raise TransportError(f"{name}: neither model.keras nor {NOTE}")
    return metrics


def unpack(args) -> int:
    from squeeze_keras import runs

    data_spec = json.loads(json.dumps(runs.data_identity(args.data)))
    results, bench_dir = args.results.resolve(), args.bench_dir.resolve()
    results.mkdir(parents=True, exist_ok=True)
    added, kept, refused = [], [], []
    for path in args.archives:
        try:
            manifest, members = read_archive(path)
        except TransportError as err:
            refused.append(str(err))
            continue
        if manifest.get("kind") == "bench":
            bench_dir.mkdir(parents=True, exist_ok=True)
            for member, payload in members.items():
                if not re.fullmatch(r"gpu_[a-z0-9_]+\.(csv|md)", member):
                    continue  # logs stay in the archive
                target = bench_dir / member
                if target.exists():
                    kept.append(f"{target} (already there, not overwritten)")
                else:
                    target.write_bytes(payload)
                    added.append(f"{target}")
            continue
        for name, entry in manifest["runs"].items():
            if any(n.split("/", 1)[0] != name or "/" not in n for n in entry["files"]):
                refused.append(f"{path.name}: {name} lists files of another folder")
                continue
            files = {n.split("/", 1)[1]: members[n] for n in entry["files"]}
            try:
                metrics = check_run(name, files, data_spec, args.limit)
            except TransportError as err:
                refused.append(f"{path.name}: {err}")
                continue
            target = results / name
            if target.exists():
                kept.append(f"{target} (already there, not overwritten)")
                continue
            partial = results / f".{name}.partial"
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for file, payload in files.items():
                (partial / file).write_bytes(payload)
            os.rename(partial, target)
            model = "with model.keras" if "model.keras" in files else "WITHOUT model.keras (see " + NOTE + ")"
            added.append(f"{target}: top-1 {metrics['top1']:.2f} %, {metrics['epochs']} epochs, "
                         f"{metrics['seconds_per_epoch']} s/epoch on {metrics['hardware']}, {model}")
    for line in added:
        print(f"added {line}")
    for line in kept:
        print(f"kept {line}")
    for line in refused:
        print(f"refused {line}", file=sys.stderr)
    print(f"{len(added)} added, {len(kept)} already there, {len(refused)} refused")
    return 2 if refused else 0


# ---------------------------------------------------------------- footprint


def footprint(args) -> int:
    """Peak RSS and threads of one tiny training process; activations of each queued model."""
    import psutil

    from squeeze_keras import experiments

    entries = queue.parse_queue(args.queue.read_text())
    seen = {}
    for entry in entries:
        key = (entry.experiment, entry.protocol)
        if key in seen:
            continue
        config = experiments.get(entry.experiment).with_protocol(entry.protocol)
        model = config.build_model()
        elements = sum(math.prod(layer.output.shape[1:]) for layer in model.layers)
        batch = config.protocol.batch_size
        # bf16 activations kept for the backward pass, and as much again for their gradients
        gib = elements * batch * 2 * 2 / 2**30
        seen[key] = gib
        print(f"{entry.experiment:18s} {entry.protocol:7s} params {model.count_params():>10,}  "
              f"activations {elements:>10,}/image  ~{gib:5.2f} GiB at batch {batch}")
    with tempfile.TemporaryDirectory() as out:
        command = [sys.executable, "-m", "squeeze_keras", "train", args.experiment, "--data",
                   "synthetic", "--limit", "64", "--epochs", "1", "--out", out, "--verbose", "0"]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p)}
        start = time.time()
        proc = psutil.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL)
        rss = threads = cpu = 0.0
        while proc.poll() is None:
            with contextlib.suppress(psutil.Error):
                rss = max(rss, proc.memory_info().rss)
                threads = max(threads, proc.num_threads())
                times = proc.cpu_times()
                cpu = times.user + times.system
            time.sleep(0.2)
    print(f"one `train {args.experiment} --data synthetic --limit 64 --epochs 1` process: "
          f"peak RSS {rss / MIB:.0f} MiB, at most {threads:.0f} threads, "
          f"{cpu:.1f} CPU-s in {time.time() - start:.1f} s wall (exit {proc.returncode})")
    return 0


# ---------------------------------------------------------------- command line


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("pack", help="pack a queue's finished runs into OUT within its limits")
    p.add_argument("queue", type=pathlib.Path, help="the queue file the runs were trained from")
    p.add_argument("--runs", type=pathlib.Path, required=True,
                   help="the queue's --out: the folder of run folders to pack from")
    p.add_argument("--out", type=pathlib.Path, required=True, help="the folder that is copied back")
    p.add_argument("--skip-finished-in", type=pathlib.Path, action="append", default=[],
                   metavar="FOLDER", help="the queue's own: runs finished here need no packing")
    p.add_argument("--max-files", type=int, default=8, help="files OUT may hold (default 8)")
    p.add_argument("--max-file-mib", type=float, default=16.0, help="MiB a file may hold (default 16)")
    p.add_argument("--max-total-mib", type=float, default=64.0, help="MiB OUT may hold (default 64)")
    p.add_argument("--reserve-mib", type=float, default=1.0,
                   help="room kept in OUT for a log's growth after packing (default 1)")
    p.set_defaults(fn=pack_queue)

    p = sub.add_parser("pack-bench", help="pack benchmarks/gpu.py's output folder into OUT")
    p.add_argument("folder", type=pathlib.Path)
    p.add_argument("--out", type=pathlib.Path, required=True)
    p.set_defaults(fn=pack_bench)

    p = sub.add_parser("unpack", help="check archived runs and add them to results/")
    p.add_argument("archives", type=pathlib.Path, nargs="+")
    p.add_argument("--data", required=True,
                   help="the archive the runs were trained on (its name, size and digest are checked)")
    p.add_argument("--limit", type=int, default=None, help="the runs' --limit (default: none)")
    p.add_argument("--results", type=pathlib.Path, default=REPO / "results")
    p.add_argument("--bench-dir", type=pathlib.Path, default=REPO / "benchmarks" / "results")
    p.set_defaults(fn=unpack)

    p = sub.add_parser("footprint", help="measure one tiny run; estimate each queued model's activations")
    p.add_argument("--queue", type=pathlib.Path, default=REPO / "queue.txt")
    p.add_argument("--experiment", default="e4")
    p.set_defaults(fn=footprint)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except (TransportError, queue.QueueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
