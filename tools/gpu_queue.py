"""A queue of training runs for one GPU call: run several at once, pack what finished, unpack it here.

A GPU machine is lent for minutes at a time, with hard limits on what comes back
(`benchmarks/README.md`, "One GPU call"). This tool makes the most of one call:

    run QUEUE --data ARCHIVE --out OUT      on the GPU machine: train the queued runs, several
                                            at once, until the deadline; pack the finished run
                                            folders into OUT as archives that fit the limits
    pack-bench FOLDER --out OUT             the benchmark's tables as one archive in OUT
    unpack ARCHIVE... --data ARCHIVE        here: check each archived run and add it to results/
    footprint                               what one run needs (host memory, threads,
                                            activations): how many to run at once

The queue is a text file, one run a line in order of value, `experiment protocol seed
epochs` (`#` starts a comment), plus `@best` lines:

    e4 paper 1 20
    @best 2 max_params=1000000 protocol=tuned2 seed=0 epochs=20 variant=_bn

`@best N ...` stands for the N best runs (final top-1) under `max_params` parameters among
the `paper` runs at seed 0 listed above it, trained again with the given protocol, seed and
epochs, each as `<experiment><variant>` where that experiment is registered (else as the
experiment itself, which the state file notes); it waits until those runs are finished.
A run whose folder is already in `--results` (the checkout's `results/`) is skipped.

Each run is `python -m squeeze_keras train EXP --protocol P --seed K --epochs N --data
ARCHIVE --out WORK/runs` in its own process, with `XLA_PYTHON_CLIENT_MEM_FRACTION` set to
its share of the GPU's memory, one temp folder (the archive unpacked and decoded once,
before the first run) and one JAX compilation cache for all. `WORK/state.json` records
every run's status (pending, running, finished, failed, interrupted, in-results) and is
rewritten at each change, so a queue killed halfway and started again skips what
finished and resumes what was interrupted (`train` resumes from its last finished epoch).
No run is started that the deadline (`--budget-s` or `--deadline-at`) leaves too little
time to finish and pack (`--estimate-s`, or the longest finished run so far); at the
deadline, runs still going are interrupted and stay listed for the next call.

Packing: the finished runs' `config.json`, `metrics.json`, `history.csv` and `model.keras`
go into `runs-<k>.tar.gz` archives flat in OUT, each at most `--max-file-mib`, all of OUT
(the log and state included) within `--max-files` files and `--max-total-mib`. A run
whose own archive would exceed one file's limit goes without its model, with a
`MODEL_NOT_RETURNED.txt` note; a run for which no room is left stays listed
(`queue_state.json` in OUT, `leftover`). Each archive carries `MANIFEST.json`: every
file's SHA-256.

`unpack` checks each run of each archive before anything is written: the files against
the manifest; `config.json` against what the registry builds for its experiment,
protocol, seed and epochs on `--data` (the archive's name, size and digest, as
`squeeze_keras.runs.data_identity` records it) and `--limit`; the folder's name; its
metrics and history. A run already in `--results` is not overwritten. Benchmark archives
go into `benchmarks/results/`, also without overwriting.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import hashlib
import io
import json
import math
import os
import pathlib
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time

REPO = pathlib.Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
# The runner only reads the registry: under JAX it must never take the GPU's memory itself
# (its runs get the environment without this).
_RUNNER_ONLY = {}
if os.environ.get("KERAS_BACKEND") == "jax" and "JAX_PLATFORMS" not in os.environ:
    os.environ["JAX_PLATFORMS"] = _RUNNER_ONLY["JAX_PLATFORMS"] = "cpu"

MIB = 1 << 20
RUN_FILES = ("config.json", "metrics.json", "history.csv", "model.keras")
NOTE = "MODEL_NOT_RETURNED.txt"
MANIFEST = "MANIFEST.json"
STATE = "queue_state.json"
ARCHIVE_RE = re.compile(r"runs-\d+\.tar\.gz")
SLACK = 64 * 1024  # per archive: tar headers and gzip framing beyond the per-run estimate


class QueueError(ValueError):
    """A queue file, archive or run folder that cannot be used as it is."""


# ---------------------------------------------------------------- the queue


@dataclasses.dataclass(frozen=True)
class Run:
    experiment: str
    protocol: str
    seed: int
    epochs: int

    @property
    def name(self) -> str:
        from squeeze_keras import experiments, runs

        return runs.run_name(experiments.get(self.experiment).with_protocol(self.protocol),
                             self.seed)

    def line(self) -> str:
        return f"{self.experiment} {self.protocol} {self.seed} {self.epochs}"


@dataclasses.dataclass(frozen=True)
class Best:
    count: int
    max_params: int
    protocol: str
    seed: int
    epochs: int
    variant: str
    text: str

    def line(self) -> str:
        return self.text


def parse_queue(text: str) -> list:
    """`Run` and `Best` entries of a queue file, checked against the registry."""
    from squeeze_keras import experiments

    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        try:
            if words[0] == "@best":
                options = dict(w.split("=", 1) for w in words[2:])
                unknown = set(options) - {"max_params", "protocol", "seed", "epochs", "variant"}
                if unknown:
                    raise ValueError(f"unknown options {sorted(unknown)}")
                entry = Best(int(words[1]), int(options.get("max_params", 10**12)),
                             options.get("protocol", "paper"), int(options.get("seed", 0)),
                             int(options.get("epochs", 20)), options.get("variant", ""), line)
                experiments.PROTOCOLS[entry.protocol]
            else:
                if len(words) != 4:
                    raise ValueError("expected `experiment protocol seed epochs`")
                entry = Run(words[0], words[1], int(words[2]), int(words[3]))
                experiments.get(entry.experiment).with_protocol(entry.protocol)
                if entry.seed < 0 or entry.epochs < 1:
                    raise ValueError("seed must be >= 0 and epochs >= 1")
        except (ValueError, KeyError, IndexError) as err:
            raise QueueError(f"queue line {number}: {raw.strip()!r}: {err}") from None
        entries.append(entry)
    return entries


def finished_metrics(name: str, folders) -> dict | None:
    """`metrics.json` of run `name` in the first of `folders` that holds it finished."""
    for folder in folders:
        path = pathlib.Path(folder) / name / "metrics.json"
        if path.exists():
            return json.loads(path.read_text())
    return None


def resolve_best(best: Best, before: list, status: dict, folders) -> tuple[list, str] | None:
    """The runs a `@best` entry stands for, with a note, or None while its candidates run."""
    from squeeze_keras import experiments

    candidates = [e for e in before if isinstance(e, Run) and e.protocol == "paper" and e.seed == 0]
    scored = []
    for run in candidates:
        metrics = finished_metrics(run.name, folders)
        if metrics is None:
            if status.get(run.name) not in ("failed",):
                return None  # still to run: wait
            continue
        if metrics["params"] < best.max_params:
            scored.append((metrics["top1"], run.experiment))
    chosen, notes = [], []
    for top1, name in sorted(scored, reverse=True)[:best.count]:
        target = name + best.variant
        if best.variant and target not in experiments.names():
            if not experiments.get(name).model.batch_norm:
                notes.append(f"{target} is not registered: {name} runs without it")
            target = name
        chosen.append(Run(target, best.protocol, best.seed, best.epochs))
    picked = ", ".join(f"{n} ({t:.2f} %)" for t, n in sorted(scored, reverse=True)[:best.count])
    return chosen, f"{best.text}: {picked or 'no candidate'}" + (f"; {'; '.join(notes)}" if notes else "")


# ---------------------------------------------------------------- state


def write_json(path: pathlib.Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(obj, indent=1))
    os.replace(tmp, path)


class State:
    """`WORK/state.json`: each run's status, attempts, seconds and log, in queue order."""

    def __init__(self, path: pathlib.Path):
        self.path = path
        self.data = json.loads(path.read_text()) if path.exists() else {"runs": {}, "notes": []}
        for record in self.data["runs"].values():
            if record["status"] == "running":  # the queue was killed while it ran
                record["status"] = "interrupted"

    def run(self, run: Run) -> dict:
        return self.data["runs"].setdefault(run.name, {"line": run.line(), "status": "pending",
                                                       "attempts": 0})

    def status(self) -> dict:
        return {name: r["status"] for name, r in self.data["runs"].items()}

    def save(self) -> None:
        write_json(self.path, self.data)


# ---------------------------------------------------------------- running


def _die_with_parent():
    """Child processes get SIGTERM if the runner dies (Linux), so no orphan keeps a run's lock."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


_STOP: list[str] = []  # signals received; the queue's loop stops at its next check


def _request_stop(signum, frame):
    _STOP.append(signal.Signals(signum).name)


def child_env(args, tmp: pathlib.Path, cache: pathlib.Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in _RUNNER_ONLY}
    env.update(
        PYTHONPATH=os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p),
        PYTHONUNBUFFERED="1", TMPDIR=str(tmp), SQUEEZE_KERAS_CACHE=str(cache),
        JAX_COMPILATION_CACHE_DIR=str(cache / "jax"),
        XLA_PYTHON_CLIENT_MEM_FRACTION=f"{args.mem_fraction or 0.9 / args.concurrency:.3f}",
    )
    return env


def warm_data(data: str, tmp: pathlib.Path) -> None:
    """Unpacks and decodes an archive once, before several runs would each do it at once."""
    path = pathlib.Path(data)
    if not path.is_file():
        return
    from squeeze_keras import data as data_lib

    tempfile.tempdir = str(tmp)
    try:
        start = time.time()
        data_lib.folder_arrays(path, 10)
        print(f"[queue] data ready in {tmp} ({time.time() - start:.0f} s)", flush=True)
    finally:
        tempfile.tempdir = None


def run_queue(args) -> int:
    deadline = args.deadline_at or (time.time() + args.budget_s)
    work = args.work.resolve()
    (work / "runs").mkdir(parents=True, exist_ok=True)
    (work / "logs").mkdir(exist_ok=True)
    tmp, cache = (args.tmp or work / "tmp").resolve(), (args.cache or work / "cache").resolve()
    tmp.mkdir(parents=True, exist_ok=True)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    entries = parse_queue(args.queue.read_text())
    if pathlib.Path(args.data).exists():
        args.data = str(pathlib.Path(args.data).resolve())
    state = State(work / "state.json")
    folders = [work / "runs", *([args.results] if args.results else [])]
    env = child_env(args, tmp, cache)
    extra = shlex.split(args.train_args or "")

    order: list = []  # Runs in order of value, `@best` entries expanded once resolved
    for entry in entries:
        if isinstance(entry, Run):
            record = state.run(entry)
            if args.results and (args.results / entry.name / "metrics.json").exists():
                record["status"] = "in-results"
            elif (work / "runs" / entry.name / "metrics.json").exists():
                record["status"] = "finished"
            elif record["status"] == "failed" and record["attempts"] < 2:
                record["status"] = "pending"  # a new start gives a failed run one more try
        order.append(entry)
    state.save()
    if args.data and not args.no_warm and \
            time.time() + args.estimate_s <= deadline - args.pack_reserve_s and any(
            state.data["runs"].get(e.name, {}).get("status") in ("pending", "interrupted")
            for e in order if isinstance(e, Run)):
        warm_data(args.data, tmp)

    running: dict[str, tuple[subprocess.Popen, float, object]] = {}
    durations = [r["seconds"] for r in state.data["runs"].values()
                 if r["status"] == "finished" and r.get("seconds")]
    stop_starting = False
    _STOP.clear()
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    code = 0
    try:
        while not _STOP:
            now = time.time()
            for name, (proc, started, log) in list(running.items()):
                if proc.poll() is None:
                    continue
                log.close()
                del running[name]
                record = state.data["runs"][name]
                record["seconds"] = round(now - started, 1)
                if proc.returncode == 0 and (work / "runs" / name / "metrics.json").exists():
                    record["status"] = "finished"
                    durations.append(now - started)
                    top1 = json.loads((work / "runs" / name / "metrics.json").read_text())["top1"]
                    record["steady_epoch_s"] = steady_epoch_seconds(work / "runs" / name)
                    print(f"[queue] finished {name} in {now - started:.0f} s: top-1 {top1} %, "
                          f"{record['steady_epoch_s']} s an epoch after the first, "
                          f"{len(running)} other runs going", flush=True)
                else:
                    record["status"] = "failed"
                    record["exit"] = proc.returncode
                    tail = (work / "logs" / f"{name}.log").read_text()[-1500:]
                    print(f"[queue] FAILED {name} (exit {proc.returncode}):\n{tail}", flush=True)
                state.save()
            pack_at = deadline - args.pack_reserve_s
            if now >= pack_at and running:
                print(f"[queue] deadline: interrupting {', '.join(running)}", flush=True)
                stop_children(running, state)
                stop_starting = True
            resolve_all(order, state, folders)
            estimate = max(durations) if durations else args.estimate_s
            pending = [e for e in order if isinstance(e, Run)
                       and state.data["runs"][e.name]["status"] in ("pending", "interrupted")
                       and e.name not in running]
            while pending and len(running) < args.concurrency and not stop_starting and not _STOP:
                if time.time() + estimate > pack_at:
                    stop_starting = True
                    print(f"[queue] not starting more runs: {estimate:.0f} s each, "
                          f"{max(pack_at - time.time(), 0):.0f} s left before packing", flush=True)
                    break
                run = pending.pop(0)
                running[run.name] = start_run(run, args, work, env, extra, state)
            if not running and (stop_starting or not pending):
                break
            time.sleep(args.poll_s)
        if _STOP:
            print(f"[queue] {_STOP[0]}: interrupting {', '.join(running) or 'nothing'}; state "
                  f"kept in {state.path} (the same command resumes)", flush=True)
            stop_children(running, state)
            code = 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        state.save()
    if code:
        return code
    packed = pack(order, state, work / "runs", out, args)
    write_summary(order, state, packed, out)
    return 0


def steady_epoch_seconds(run_dir: pathlib.Path) -> float | None:
    """Median seconds of epochs 2..N (`history.csv`): what sharing the GPU cost a run."""
    import csv
    import statistics

    with contextlib.suppress(OSError, KeyError, ValueError, statistics.StatisticsError):
        with open(run_dir / "history.csv") as f:
            seconds = [float(row["seconds"]) for row in csv.DictReader(f)]
        return round(statistics.median(seconds[1:] or seconds), 2)
    return None


def resolve_all(order: list, state: State, folders) -> None:
    """Replaces each `@best` entry whose candidates are all done by the runs it stands for."""
    i = 0
    while i < len(order):
        entry = order[i]
        resolved = (resolve_best(entry, order[:i], state.status(), folders)
                    if isinstance(entry, Best) else None)
        if resolved is None:
            i += 1
            continue
        chosen, note = resolved
        print(f"[queue] {note}", flush=True)
        if note not in state.data["notes"]:
            state.data["notes"].append(note)
        order[i:i + 1] = chosen
        for run in chosen:
            state.run(run)
        state.save()
        i += len(chosen)


def start_run(run: Run, args, work: pathlib.Path, env: dict, extra: list, state: State):
    command = [args.python, "-m", "squeeze_keras", "train", run.experiment, "--protocol",
               run.protocol, "--seed", str(run.seed), "--epochs", str(run.epochs), "--data",
               args.data, "--out", str(work / "runs"), "--verbose", "2", *extra]
    record = state.run(run)
    resumed = record["status"] == "interrupted"
    record.update(status="running", attempts=record["attempts"] + 1, log=f"logs/{run.name}.log")
    state.save()
    log = open(work / "logs" / f"{run.name}.log", "a")
    log.write("$ " + shlex.join(command) + "\n")
    log.flush()
    print(f"[queue] {'resuming' if resumed else 'starting'} {run.name}: {run.line()}", flush=True)
    proc = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                            preexec_fn=_die_with_parent)
    return proc, time.time(), log


def stop_children(running: dict, state: State, grace: float = 10.0) -> None:
    """SIGINT (train keeps its last finished epoch), then SIGKILL after `grace` seconds."""
    for proc, _, _ in running.values():
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
    end = time.time() + grace
    for name, (proc, _, log) in list(running.items()):
        try:
            proc.wait(max(end - time.time(), 0.1))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        state.data["runs"][name]["status"] = "interrupted"
        del running[name]
    state.save()


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


def pack(order: list, state: State, runs_dir: pathlib.Path, out: pathlib.Path, args) -> dict:
    """Packs the finished runs into `runs-<k>.tar.gz` in `out`, within the return limits.

    Returns {run: archive name, "(model left behind)" noted in the state}; runs that found
    no room keep the status `finished` and are listed as leftover.
    """
    for old in out.iterdir():  # a restarted queue packs everything again
        if ARCHIVE_RE.fullmatch(old.name):
            old.unlink()
    file_cap = int(args.max_file_mib * MIB)
    others = [p for p in out.iterdir() if p.is_file() and p.name != STATE]
    files_free = args.max_files - len(others) - 1  # the state file
    bytes_free = int(args.max_total_mib * MIB) - sum(p.stat().st_size for p in others) \
        - int(args.reserve_mib * MIB)
    bins: list[dict] = []  # {"runs": {name: members}, "size": estimate}
    notes, placed, left = {}, {}, []
    for entry in order:
        if not isinstance(entry, Run) or state.data["runs"][entry.name]["status"] != "finished":
            continue
        run_dir = runs_dir / entry.name
        members = run_members(run_dir, True, file_cap)
        size = compressed_size(members) + SLACK
        if size > file_cap:
            members = run_members(run_dir, False, file_cap)
            size = compressed_size(members) + SLACK
            notes[entry.name] = "model.keras not returned (over one file's limit)"
        target = next((b for b in bins if b["size"] + size <= file_cap
                       and sum(x["size"] for x in bins) + size <= bytes_free), None)
        if target is None and len(bins) < files_free and \
                sum(x["size"] for x in bins) + size <= bytes_free and size <= file_cap:
            target = {"runs": {}, "size": SLACK}
            bins.append(target)
        if target is None:
            left.append(entry.name)
            continue
        target["runs"][entry.name] = members
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
    if len(returned) + 1 > args.max_files or sum(p.stat().st_size for p in returned) > \
            args.max_total_mib * MIB:
        print(f"[queue] WARNING: {out} holds more than comes back", flush=True)
    for name in state.data["runs"]:
        record = state.data["runs"][name]
        record.pop("archive", None)
        if name in archives:
            record["archive"] = archives[name]
            if name in notes:
                record["note"] = notes[name]
    for name in left:
        state.data["runs"][name]["note"] = "finished, but no room was left in $OUT"
    state.save()
    return archives


def write_summary(order: list, state: State, archives: dict, out: pathlib.Path) -> None:
    """`OUT/queue_state.json`: every run's record, the notes and the leftover queue lines."""
    leftover = []
    for entry in order:
        if isinstance(entry, Best):
            leftover.append(entry.line())
        elif state.data["runs"][entry.name]["status"] != "in-results" and entry.name not in archives:
            leftover.append(entry.line())
    summary = {**state.data, "leftover": leftover,
               "written": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(out / STATE, summary)
    counts = {}
    for record in state.data["runs"].values():
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    print(f"[queue] packed {len(archives)} runs into {len(set(archives.values()))} archives; "
          f"statuses {counts}; {len(leftover)} queue lines left for the next call", flush=True)
    for line in leftover:
        print(f"[queue] left: {line}", flush=True)


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
                    raise QueueError(f"{path.name}: unexpected member {name!r}")
                members[name] = tar.extractfile(info).read()
    except (tarfile.TarError, EOFError, OSError) as err:
        raise QueueError(f"{path.name}: cannot be read ({type(err).__name__}: {err})") from None
    if MANIFEST not in members:
        raise QueueError(f"{path.name}: no {MANIFEST}")
    manifest = json.loads(members.pop(MANIFEST))
    listed = ({n for r in manifest.get("runs", {}).values() for n in r["files"]}
              if manifest.get("kind") == "runs" else set(manifest.get("files", {})))
    if listed != set(members):
        raise QueueError(f"{path.name}: members and manifest differ: "
                         f"{sorted(listed ^ set(members))}")
    digests = ({n: d for r in manifest["runs"].values() for n, d in r["files"].items()}
               if manifest.get("kind") == "runs" else manifest["files"])
    for name, payload in members.items():
        if hashlib.sha256(payload).hexdigest() != digests[name]:
            raise QueueError(f"{path.name}: {name} does not match its SHA-256 in {MANIFEST}")
    return manifest, members


def check_run(name: str, files: dict, data_spec: dict, limit) -> dict:
    """Checks an archived run against the registry; returns its metrics. Raises QueueError."""
    from squeeze_keras import devices, experiments, runs

    def load(file):
        if file not in files:
            raise QueueError(f"{name}: no {file}")
        return json.loads(files[file])

    stored = load("config.json")
    metrics = load("metrics.json")
    try:
        exp = stored["experiment"]
        config = experiments.get(exp["name"]).with_protocol(exp["protocol"]["name"])
        epochs, seed, precision = stored["epochs"], stored["seed"], stored["precision"]
    except (KeyError, TypeError, ValueError) as err:
        raise QueueError(f"{name}: config.json names no registered experiment and protocol "
                         f"({type(err).__name__}: {err})") from None
    if precision not in devices.PRECISIONS or precision == "auto":
        raise QueueError(f"{name}: unknown precision {precision!r}")
    wanted = {"experiment": json.loads(json.dumps(dataclasses.asdict(config))), "epochs": epochs,
              "seed": seed, "data": data_spec, "limit": limit, "precision": precision}
    diff = runs.differences(stored, wanted)
    if diff:
        raise QueueError(f"{name}: config.json differs from the registry's {config.name} "
                         f"({config.protocol.name}, seed {seed}, {epochs} epochs, the given "
                         f"data and limit) in: {', '.join(diff)}")
    if runs.run_name(config, seed) != name:
        raise QueueError(f"{name}: the folder of this run is named {runs.run_name(config, seed)}")
    if (metrics.get("experiment"), metrics.get("protocol"), metrics.get("seed"),
            metrics.get("epochs")) != (config.name, config.protocol.name, seed, epochs):
        raise QueueError(f"{name}: metrics.json is not this run's finished metrics")
    rows = [r for r in files.get("history.csv", b"").decode().splitlines()[1:] if r.strip()]
    if len(rows) != epochs:
        raise QueueError(f"{name}: history.csv has {len(rows)} epochs, not {epochs}")
    if "model.keras" not in files and NOTE not in files:
        raise QueueError(f"{name}: neither model.keras nor {NOTE}")
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
        except QueueError as err:
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
            except QueueError as err:
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

    entries = [e for e in parse_queue(args.queue.read_text()) if isinstance(e, Run)]
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

    p = sub.add_parser("run", help="train a queue of runs, several at once, and pack them")
    p.add_argument("queue", type=pathlib.Path, help="queue file (see this module's docstring)")
    p.add_argument("--data", required=True, help="the CIFAR-10 archive (or `synthetic`)")
    p.add_argument("--out", type=pathlib.Path, required=True, help="the folder that returns ($OUT)")
    p.add_argument("--work", type=pathlib.Path, default=pathlib.Path("/tmp/gpu_queue"),
                   help="run folders, logs and state (default /tmp/gpu_queue)")
    p.add_argument("--results", type=pathlib.Path, default=REPO / "results",
                   help="runs already here are skipped (default: the checkout's results/)")
    p.add_argument("--tmp", type=pathlib.Path, default=None, help="TMPDIR of the runs (default WORK/tmp)")
    p.add_argument("--cache", type=pathlib.Path, default=None,
                   help="SQUEEZE_KERAS_CACHE of the runs; JAX's cache is CACHE/jax (default WORK/cache)")
    p.add_argument("--concurrency", type=int, default=4, help="runs at once (default 4)")
    p.add_argument("--mem-fraction", type=float, default=None,
                   help="XLA_PYTHON_CLIENT_MEM_FRACTION per run (default 0.9 / concurrency)")
    when = p.add_mutually_exclusive_group()
    when.add_argument("--budget-s", type=float, default=480.0,
                      help="seconds from now by which packing must be done (default 480)")
    when.add_argument("--deadline-at", type=float, default=None, help="the same as a Unix time")
    p.add_argument("--pack-reserve-s", type=float, default=40.0,
                   help="seconds kept for stopping runs and packing before the deadline (default 40)")
    p.add_argument("--estimate-s", type=float, default=200.0,
                   help="seconds one run takes until one has finished (default 200)")
    p.add_argument("--train-args", default="", help="more `train` options, e.g. '--limit 64'")
    p.add_argument("--python", default=sys.executable, help="Python of the runs")
    p.add_argument("--max-files", type=int, default=8)
    p.add_argument("--max-file-mib", type=float, default=16.0)
    p.add_argument("--max-total-mib", type=float, default=64.0)
    p.add_argument("--reserve-mib", type=float, default=1.0,
                   help="room kept in OUT for the log's growth after packing (default 1)")
    p.add_argument("--poll-s", type=float, default=2.0)
    p.add_argument("--no-warm", action="store_true", help="do not decode the archive first")
    p.set_defaults(fn=run_queue)

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
    p.add_argument("--queue", type=pathlib.Path, default=REPO / "benchmarks" / "gpu_queue.txt")
    p.add_argument("--experiment", default="e4")
    p.set_defaults(fn=footprint)
    return parser


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    try:
        return args.fn(args)
    except QueueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
