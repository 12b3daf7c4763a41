"""A queue of training runs, made one after another across as many sittings as it takes.

A queue file lists runs in order of value, one a line, `experiment protocol
seed epochs` (`#` starts a comment):

    e4 paper 1 20            # trains results/e4_seed1
    e4_bn tuned2 0 20        # trains results/e4_bn_tuned2

`run_queue` (the command line's `queue`) checks every line against the
registry before anything trains, then says what it will do: the runs
finished, the run it resumes (at which epoch, in which precision), the runs
left, and the time they need on this machine. It trains each run with
`python -m squeeze_keras train ... --out OUT` in a process of its own: one at
a time on a CPU, several at once where a GPU or TPU is visible. Each run's
output goes to `OUT/.queue/<run>.log`; the queue prints a line per finished
epoch (read from the run's `history.csv`).

Started again, the queue skips finished runs and resumes an unfinished one
from its last finished epoch (the epoch-keyed randomness makes the resumed run
the one that would have been made in one go), in the precision it was started
with (its `config.json`). A run whose folder another process holds (its lock:
another queue, a notebook) is skipped and left to that process. A run that
fails is marked failed (`OUT/.queue/<run>.failed`, with its log's last lines)
and the queue goes on to the next; it is tried again at the next start.
Ctrl-C (or SIGTERM, as a batch system sends at its time limit) stops the
running runs at their last finished epoch and prints the command that
continues.

The estimate of the time left uses this machine's measured seconds per
epoch: the `seconds` of `history.csv` of runs trained on the same hardware
line (`devices.hardware`) in the same precision on the same data, per sitting
where a run was trained on several machines. A run with no measurement of its
own experiment and protocol is scaled from the measured one closest in
training FLOPs (`model.forward_gflops`); with no measurement at all, the
estimate says so.

For a batch job with a time limit, `deadline` keeps the queue from starting a
run it cannot finish and stops the running ones in time (`reserve_s` before
it); `skip_finished_in` names folders whose finished runs count as made (say,
the committed record, when the job trains into a scratch folder).
"""

from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import functools
import math
import os
import pathlib
import shlex
import signal
import statistics
import subprocess
import sys
import time

import keras

from squeeze_keras import devices, experiments, fileio, runs, sources
from squeeze_keras.model import forward_gflops

QUEUE_DIR = ".queue"  # in the output folder: each run's log, and the mark of a failed run
TAIL_LINES = 15  # of a failed run's log, printed and kept in its mark
PACKAGE_ROOT = pathlib.Path(__file__).resolve().parents[1]


class QueueError(ValueError):
    """A queue file that cannot be run as it is (the message names the line)."""


# ---------------------------------------------------------------- the queue file


@dataclasses.dataclass(frozen=True)
class Run:
    """One queue line: a run of `experiment` under `protocol` with `seed`, for `epochs`."""

    experiment: str
    protocol: str
    seed: int
    epochs: int

    @property
    def name(self) -> str:
        """The run folder's name (`runs.run_name`): `e4_seed1`, `e4_bn_tuned2`."""
        return runs.run_name(experiments.get(self.experiment).with_protocol(self.protocol),
                             self.seed)

    def line(self) -> str:
        return f"{self.experiment} {self.protocol} {self.seed} {self.epochs}"


def parse_queue(text: str) -> list[Run]:
    """The runs of a queue file, in its order, each line checked against the registry.

    Raises:
        QueueError: a line names an unknown experiment or protocol, has a field
            that is not a number where one is needed, has other than four
            fields, or names a run an earlier line names; the message gives
            the line's number and text.
    """
    found, seen = [], {}
    for number, raw in enumerate(text.splitlines(), 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        try:
            run = _parse_line(words)
            if run.name in seen:
                raise ValueError(f"the same run ({run.name}) as line {seen[run.name]}")
        except ValueError as err:
            raise QueueError(f"queue line {number}: {raw.strip()!r}: {err}") from None
        seen[run.name] = number
        found.append(run)
    return found


def _parse_line(words: list[str]) -> Run:
    if words[0] == "@best":
        raise ValueError("`@best` lines are no longer read: name the runs themselves")
    if len(words) != 4:
        raise ValueError(f"expected `experiment protocol seed epochs`, got {len(words)} fields")
    experiment, protocol, seed, epochs = words
    experiments.get(experiment).with_protocol(protocol)  # unknown names raise, listing the known
    for key, value, minimum in (("seed", seed, 0), ("epochs", epochs, 1)):
        if not value.isdigit() or int(value) < minimum:
            raise ValueError(f"`{key}` must be an integer >= {minimum}. Received: {key}={value}")
    if int(seed) > 2**32 - 1:  # NumPy's seed range, as `train --seed` is bounded
        raise ValueError(f"`seed` must be at most {2**32 - 1}. Received: seed={seed}")
    return Run(experiment, protocol, int(seed), int(epochs))


# ---------------------------------------------------------------- what a run folder holds


def lock_holder(run_dir: pathlib.Path) -> str | None:
    """Who holds the lock of a run folder (`"process 1234"`), or None if nobody does."""
    if not (run_dir / ".lock").exists():
        return None
    try:
        with runs.locked(run_dir):
            return None
    except runs.RunFolderError:
        with contextlib.suppress(OSError):
            return (run_dir / ".lock").read_text().strip() or "another process"
        return "another process"


def _read_config(run_dir: pathlib.Path) -> dict | None:
    try:
        stored = fileio.read_json(run_dir / "config.json")
    except (OSError, ValueError):
        return None
    return stored if isinstance(stored, dict) else None


def _sittings(run_dir: pathlib.Path) -> list[tuple[str, float, int]]:
    """`(hardware, median seconds per epoch, epochs)` of each sitting of a run's trained epochs."""
    metrics = runs.read_metrics(run_dir)
    if metrics is not None and "sittings" not in metrics:
        with contextlib.suppress(KeyError, TypeError):
            return [(metrics["hardware"], float(metrics["seconds_per_epoch"]),
                     int(metrics["epochs"]))]
        return []
    try:
        history = runs.read_history(run_dir)
        history = history.drop_duplicates("epoch", keep="last").sort_values("epoch")
        seconds = list(history["seconds"])
    except (OSError, ValueError, KeyError):
        return []
    if metrics is not None:
        summary = metrics["sittings"]
    else:
        try:
            summary = runs.sittings_summary(fileio.read_json(run_dir / runs.SITTINGS), seconds)
        except (OSError, ValueError, KeyError, TypeError):
            return []
    found = []
    for sitting in summary:
        first, _, last = str(sitting["epochs"]).partition("-")
        count = int(last or first) - int(first) + 1
        if sitting.get("seconds_per_epoch") is not None and count > 0:
            found.append((sitting["hardware"], float(sitting["seconds_per_epoch"]), count))
    return found


def seconds_per_epoch(run_dir: pathlib.Path, hardware: str) -> float | None:
    """A run folder's measured seconds per epoch on `hardware` (its sittings there, weighted
    by their epochs), or None if none of its epochs was trained there."""
    here = [(seconds, count) for machine, seconds, count in _sittings(run_dir)
            if machine == hardware]
    if not here:
        return None
    return sum(s * c for s, c in here) / sum(c for _, c in here)


@dataclasses.dataclass(frozen=True)
class Measured:
    """A run trained (in part) on this machine: what it was and its seconds per epoch here."""

    run: str
    experiment: str
    protocol: str
    precision: str
    seconds: float


def measurements(folders, hardware: str, data_identity: dict, limit) -> list[Measured]:
    """Every run in `folders` with epochs trained on `hardware`, on the same data and limit.

    Runs evaluated on a hold-out train on fewer images and are left out.
    """
    found = []
    for folder in folders:
        for run_dir in sorted(pathlib.Path(folder).glob("*/config.json")):
            run_dir = run_dir.parent
            stored = _read_config(run_dir)
            try:
                data = stored["data"]
                same = (isinstance(data, dict) and "holdout" not in data
                        and runs.same_data(data, data_identity) and stored["limit"] == limit)
                name = stored["experiment"]["name"]
                protocol, precision = stored["experiment"]["protocol"]["name"], stored["precision"]
            except (KeyError, TypeError):
                continue
            seconds = seconds_per_epoch(run_dir, hardware) if same else None
            if seconds is not None:
                found.append(Measured(run_dir.name, name, protocol, precision, seconds))
    return found


@functools.cache
def _gflops(experiment: str) -> float:
    return forward_gflops(experiments.get(experiment).build_model())


def estimate(run: Run, precision: str, measured: list[Measured],
             own: float | None = None) -> tuple[float | None, str]:
    """Seconds per epoch of `run` in `precision` on this machine, and how it was found.

    In order: the run's own epochs here (`own`); runs of the same experiment
    and protocol; the measured experiment closest in training FLOPs, scaled
    by the ratio of their FLOPs (the same images per epoch, a step costing
    about 3x the forward pass for both).
    """
    if own is not None:
        return own, "measured (this run)"
    mine = [m for m in measured if m.precision == precision]
    same = [m for m in mine if (m.experiment, m.protocol) == (run.experiment, run.protocol)]
    if same:
        return (statistics.median(m.seconds for m in same),
                f"measured ({', '.join(m.run for m in same)})")
    if not mine:
        return None, f"no measurement on this machine in {precision}"
    by_kind = {}
    for m in mine:
        by_kind.setdefault((m.experiment, m.protocol), []).append(m.seconds)
    target = _gflops(run.experiment)
    (experiment, protocol), seconds = min(
        by_kind.items(), key=lambda item: (abs(math.log(_gflops(item[0][0]) / target)),
                                           item[0][1] != run.protocol))
    reference = statistics.median(seconds)
    return (reference * target / _gflops(experiment),
            f"scaled by training FLOPs from {experiment} {protocol} ({reference:.0f} s/epoch)")


# ---------------------------------------------------------------- the plan


@dataclasses.dataclass
class Entry:
    """A queue line and what its run folder holds now."""

    run: Run
    run_dir: pathlib.Path
    status: str  # "finished", "resume", "new" or "busy"
    done: int = 0  # epochs trained
    precision: str = ""  # what it trains in (a resumed run: what it was started with)
    holder: str | None = None  # who holds its lock (busy)
    failed: str | None = None  # the first line of its last failure's mark
    seconds: float | None = None  # per epoch, estimated
    basis: str = ""  # how `seconds` was found

    @property
    def left_s(self) -> float | None:
        return None if self.seconds is None else self.seconds * (self.run.epochs - self.done)


def inspect(run: Run, out: pathlib.Path, skip_finished_in=(), precision: str = "float32") -> Entry:
    """What `run`'s folder in `out` (or a finished one in `skip_finished_in`) holds now."""
    for folder in (out, *skip_finished_in):
        run_dir = pathlib.Path(folder) / run.name
        if runs.read_metrics(run_dir) is not None:
            return Entry(run, run_dir, "finished", done=run.epochs)
    run_dir = out / run.name
    mark = out / QUEUE_DIR / f"{run.name}.failed"
    failed = mark.read_text().splitlines()[0] if mark.exists() else None
    holder = lock_holder(run_dir)
    stored = _read_config(run_dir) or {}
    done = runs.resumable_epochs(run_dir)  # where `train` resumes, whatever history.csv says
    entry = Entry(run, run_dir, "resume" if stored else "new", done=done,
                  precision=stored.get("precision", precision), holder=holder, failed=failed)
    if holder is not None:
        entry.status = "busy"
    return entry


def make_plan(queue: list[Run], out, *, data, limit=None, precision="float32",
              skip_finished_in=()) -> list[Entry]:
    """Each run's `Entry`, with its estimated seconds per epoch on this machine."""
    out = pathlib.Path(out)
    plan = [inspect(run, out, skip_finished_in, precision) for run in queue]
    hardware = devices.hardware()
    measured = measurements([out, *skip_finished_in], hardware, runs.data_identity(data), limit)
    for entry in plan:
        if entry.status != "finished":
            own = seconds_per_epoch(entry.run_dir, hardware) if entry.done else None
            entry.seconds, entry.basis = estimate(entry.run, entry.precision, measured, own)
    return plan


def duration(seconds: float | None) -> str:
    """`"45 s"`, `"12 min"`, `"3.4 h"`; `"?"` for an unknown duration."""
    if seconds is None:
        return "?"
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def describe_plan(plan: list[Entry], *, here_auto: str, accelerated: bool, restart_command,
                  concurrency: int = 1) -> list[str]:
    """What the queue will do, in lines: finished, resumed, busy, left, and the time left."""
    lines = []
    finished = [e.run.name for e in plan if e.status == "finished"]
    lines.append(f"  finished ({len(finished)}): {', '.join(finished) or 'none'}")
    for e in plan:
        if e.status == "resume" and e.done:
            lines.append(f"  resumes {e.run.name} at epoch {e.done + 1}/{e.run.epochs} in "
                         f"{e.precision}, the precision it was started with (its config.json)")
            if not accelerated and e.precision.startswith("mixed") and here_auto != e.precision:
                lines.append(
                    f"  warning: {e.precision} is slow on this CPU (`auto` picks {here_auto} "
                    f"here: no AMX for bfloat16). To restart {e.run.name} in {here_auto}, "
                    f"losing its {e.done} epochs: {restart_command(e, here_auto)}")
    for e in plan:
        if e.status == "busy":
            lines.append(f"  busy: {e.run.name} ({e.holder} holds its folder): skipped, left to it")
        if e.failed and e.status != "busy":
            lines.append(f"  failed last time: {e.run.name} ({e.failed}): tried again")
    left = [e for e in plan if e.status in ("new", "resume")]
    lines.append(f"  left ({len(left)})" + (", in order:" if left else ""))
    if left:
        width = max(len(e.run.name) for e in left)
        for e in left:
            epochs = e.run.epochs - e.done
            cost = (f"{epochs} epochs x {e.seconds:.0f} s = {duration(e.left_s)}"
                    if e.seconds is not None else f"{epochs} epochs x ?")
            lines.append(f"    {e.run.name:{width}s}  {cost}  ({e.precision}; {e.basis})")
        known = [e.left_s for e in left if e.left_s is not None]
        unknown = len(left) - len(known)
        if known:
            alone = "one run at a time" if concurrency == 1 else (
                f"their times alone added up; {concurrency} at once share the machine")
            lines.append(f"  time left: about {duration(sum(known))} of training, {alone}"
                         + (f"; {_runs(unknown)} with no measurement not counted"
                            if unknown else ""))
        else:
            lines.append("  time left: not known (no run measured on this machine yet)")
    return lines


# ---------------------------------------------------------------- running


_STOP: list[str] = []  # signals received; the loop stops the runs at its next check


def _request_stop(signum, frame):
    _STOP.append(signal.Signals(signum).name)


def _die_with_parent():
    """The child gets SIGTERM if the queue dies (Linux), so no orphan keeps a run's lock."""
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def _say(text: str) -> None:
    print(f"[queue {time.strftime('%H:%M')}] {text}", flush=True)


def _history_rows(run_dir: pathlib.Path) -> list[dict]:
    try:
        with open(run_dir / "history.csv", newline="") as f:
            return list(csv.DictReader(f))
    except OSError:
        return []


def _percent(row: dict, key: str) -> str:
    try:
        return f"{key} {100 * float(row[key]):.1f} %"
    except (KeyError, TypeError, ValueError):
        return ""


@dataclasses.dataclass
class _Running:
    entry: Entry
    proc: subprocess.Popen
    log: object
    started: float
    # The history rows reported (or there when it started), as text: a resumed run may
    # train an epoch whose row is already there, and `train` then replaces that row.
    seen: set
    seconds: list = dataclasses.field(default_factory=list)  # this sitting's epochs

    def left_s(self) -> float | None:
        per = statistics.median(self.seconds) if self.seconds else self.entry.seconds
        done = self.entry.done + len(self.seconds)
        return None if per is None else per * (self.entry.run.epochs - done)


def _tail(path: pathlib.Path, lines: int = TAIL_LINES) -> list[str]:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return []
    return [line for line in text.splitlines() if line.strip()][-lines:]


def run_queue(queue_file, *, data: str, out="results", limit: int | None = None,
              precision: str = "auto", concurrency: int | None = None, skip_finished_in=(),
              deadline: float | None = None, reserve_s: float = 0.0, start_s: float = 30.0,
              estimate_s: float | None = None, dry_run: bool = False, poll_s: float = 1.0,
              train_command=None, command: str | None = None, figures=None) -> int:
    """Trains the runs of a queue file into `out`; returns 0, 1 (a run failed) or 130 (stopped).

    Args:
        queue_file: the queue file (see this module's docstring).
        data: the runs' `--data`: `"tfds"`, `"synthetic"`, an image folder or archive.
        out: folder of run folders. Defaults to `"results"`.
        limit: the runs' `--limit` (a subset per split, for smoke runs). Defaults to `None`.
        precision: the precision of new runs, `"auto"` or a policy name; a resumed run
            keeps its own. Defaults to `"auto"`.
        concurrency: runs at once. Defaults to 1 on a CPU, 4 where an accelerator is visible.
        skip_finished_in: folders whose finished runs count as made. Defaults to none.
        deadline: a Unix time by which the queue must have stopped: no run starts that
            would not finish `reserve_s` before it (runs without an estimate are given
            `estimate_s`, or start), and runs still going then are stopped at their last
            finished epoch. Defaults to `None`.
        reserve_s: seconds kept before the deadline (to pack, say). Defaults to `0`.
        start_s: seconds a run needs beyond its epochs (start-up, compiling). Defaults to `30`.
        estimate_s: the length of a run with no measurement, for the deadline. Defaults to
            `None`.
        dry_run: print what the queue would do, and train nothing. Defaults to `False`.
        poll_s: seconds between looks at the runs. Defaults to `1`.
        train_command: the command a run's arguments follow. Defaults to
            `python -m squeeze_keras train`.
        command: the command line that continues the queue, printed on Ctrl-C. Defaults to
            one rebuilt from the arguments.
        figures: a folder to draw each finished run's accuracy curves into, as
            `<run>_accuracy.png` (`plots.plot_history`, as the notebooks draw them), or
            `None` for none. Refused with `limit`: a smoke run draws no figure.
            Defaults to `None`.

    Raises:
        QueueError: a queue line is refused (before anything trains).
    """
    if figures is not None and limit is not None:
        raise ValueError("`figures` is for full runs: a run with `limit` (a smoke run) draws "
                         f"no figure. Received: figures={str(figures)!r}, limit={limit!r}")
    queue_file = pathlib.Path(queue_file)
    queue = parse_queue(queue_file.read_text())
    out = pathlib.Path(out)
    # The queue only asks what the machine has: under JAX it must not take the accelerator's
    # memory, which its runs need (they get the environment without this).
    runner_only = {}
    if keras.backend.backend() == "jax" and "XLA_PYTHON_CLIENT_PREALLOCATE" not in os.environ:
        runner_only["XLA_PYTHON_CLIENT_PREALLOCATE"] = "false"
        os.environ.update(runner_only)
    accelerated = bool(devices.accelerators())
    concurrency = concurrency or (4 if accelerated else 1)
    if concurrency < 1:
        raise ValueError(f"`concurrency` must be a positive integer. Received: {concurrency!r}")
    policy = devices.select_precision(precision)
    here_auto = policy if precision == "auto" else devices.select_precision("auto")
    command = command or continue_command(queue_file, data=data, out=out, limit=limit,
                                          precision=precision, concurrency=concurrency,
                                          figures=figures)
    plan = make_plan(queue, out, data=data, limit=limit, precision=policy,
                     skip_finished_in=skip_finished_in)

    def restart(entry, new_precision):
        words = [entry.run.experiment, "--protocol", entry.run.protocol, "--seed",
                 str(entry.run.seed), "--epochs", str(entry.run.epochs), "--data", data,
                 "--out", str(out), *(["--limit", str(limit)] if limit else []),
                 "--precision", new_precision, "--overwrite"]
        return "python -m squeeze_keras train " + shlex.join(words)

    at_once = "one run at a time" if concurrency == 1 else f"{concurrency} runs at once"
    _say(f"{queue_file}: {_runs(len(queue))} into {out}/ on {devices.hardware()}, {at_once}; "
         f"new runs in {policy}" + (" (auto)" if precision == "auto" else ""))
    for line in describe_plan(plan, here_auto=here_auto, accelerated=accelerated,
                              restart_command=restart, concurrency=concurrency):
        print(line, flush=True)
    todo = [e for e in plan if e.status in ("new", "resume")]
    busy = [e for e in plan if e.status == "busy"]
    if dry_run:
        return 0
    if not todo:
        _say("nothing to train" + (f"; {_runs(len(busy))} trained by another process"
                                    if busy else ""))
        return 0

    (out / QUEUE_DIR).mkdir(parents=True, exist_ok=True)
    env = _child_env(concurrency, accelerated, runner_only)
    train_command = list(train_command or [sys.executable, "-m", "squeeze_keras", "train"])
    if concurrency > 1 and pathlib.Path(data).is_file():
        _warm(data, queue[0])
    running: list[_Running] = []
    finished, failed = [], []
    _STOP.clear()
    previous = {sig: signal.signal(sig, _request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    stop_starting = False
    try:
        while (todo and not stop_starting) or running:
            if _STOP:
                break
            for job in list(running):
                _report_epochs(job, running, todo)
                if job.proc.poll() is None:
                    continue
                running.remove(job)
                job.log.close()
                _finish(job, out, finished, failed, busy, todo, running, figures)
            if deadline is not None and running and time.time() >= deadline - reserve_s:
                _say(f"time limit: stopping {', '.join(j.entry.run.name for j in running)}")
                _stop_all(running)
                stop_starting = True
            while todo and len(running) < concurrency and not stop_starting and not _STOP:
                entry = todo.pop(0)
                now = inspect(entry.run, out, skip_finished_in, policy)
                if now.status == "finished":
                    _say(f"{entry.run.name}: finished meanwhile by another process")
                    continue
                if now.status == "busy":
                    _say(f"{entry.run.name}: {now.holder} holds its folder now: skipped")
                    busy.append(now)
                    continue
                if deadline is not None:
                    need = entry.left_s if entry.left_s is not None else estimate_s
                    if need is not None and time.time() + start_s + need > deadline - reserve_s:
                        _say(f"time limit: not starting {entry.run.name} ({duration(need)} "
                             f"of epochs, {duration(max(deadline - reserve_s - time.time(), 0))}"
                             " left)")
                        todo.insert(0, entry)
                        stop_starting = True
                        break
                entry.done, entry.precision = now.done, now.precision
                running.append(_start(entry, out, data, limit, train_command, env))
            if (todo or running) and not _STOP:
                time.sleep(poll_s)
        if _STOP:
            _say(f"{_STOP[0]}: stopping " + (", ".join(j.entry.run.name for j in running)
                                             or "(no run was going)"))
            _stop_all(running)
            print(f"To continue: {command}", flush=True)
            return 130
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        for job in running:  # only on an error of the queue itself
            with contextlib.suppress(ProcessLookupError):
                job.proc.kill()
    _summarise(finished, failed, busy, todo, out)
    return 1 if failed else 0


def continue_command(queue_file, *, data, out, limit, precision, concurrency,
                     figures=None) -> str:
    """The command line that starts this queue again."""
    words = [str(queue_file), "--data", str(data), "--out", str(out)]
    if figures is not None:
        words += ["--figures", str(figures)]
    if limit is not None:
        words += ["--limit", str(limit)]
    if precision != "auto":
        words += ["--precision", precision]
    if concurrency != 1:
        words += ["--concurrency", str(concurrency)]
    return "python -m squeeze_keras queue " + shlex.join(words)


def _child_env(concurrency: int, accelerated: bool, runner_only: dict) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in runner_only}
    env["PYTHONUNBUFFERED"] = "1"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), env.get("PYTHONPATH")) if p)
    if accelerated and concurrency > 1:
        # Several runs share the accelerator's memory (JAX would take 75 % for one).
        env.setdefault("XLA_PYTHON_CLIENT_MEM_FRACTION", f"{0.9 / concurrency:.3f}")
    return env


def _warm(data: str, run: Run) -> None:
    """Unpacks and decodes an archive once, before several runs would each do it at once."""
    start = time.time()
    sources.folder_arrays(pathlib.Path(data), experiments.get(run.experiment).classes)
    _say(f"data unpacked and decoded once for all runs ({time.time() - start:.0f} s)")


def _start(entry: Entry, out, data, limit, train_command, env) -> _Running:
    run = entry.run
    words = [run.experiment, "--protocol", run.protocol, "--seed", str(run.seed), "--epochs",
             str(run.epochs), "--data", str(data), "--out", str(out), "--verbose", "2",
             "--precision", entry.precision, *(["--limit", str(limit)] if limit else [])]
    argv = [*train_command, *words]
    log_path = pathlib.Path(out) / QUEUE_DIR / f"{run.name}.log"
    log = open(log_path, "a")
    log.write(f"# {time.strftime('%Y-%m-%d %H:%M:%S')}\n$ {shlex.join(argv)}\n")
    log.flush()
    if entry.done:
        _say(f"resuming {run.name} at epoch {entry.done + 1}/{run.epochs} ({entry.precision}); "
             f"log {log_path}")
    else:
        _say(f"starting {run.name}: {run.line()} ({entry.precision}); log {log_path}")
    # A session of its own: Ctrl-C reaches the queue, which stops the run with one SIGINT.
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True, preexec_fn=_die_with_parent)
    seen = {_row_key(row) for row in _history_rows(entry.run_dir)}
    return _Running(entry, proc, log, time.time(), seen)


def _row_key(row: dict) -> tuple:
    """A history row as text, its empty cells left out: a column that appears later (the
    file is rewritten with every column) does not make the earlier rows new."""
    return tuple(sorted((str(key), str(value)) for key, value in row.items()
                        if value not in ("", None)))


def _report_epochs(job: _Running, running: list[_Running], todo: list[Entry] = ()) -> None:
    """A line for each epoch the run's `history.csv` gained or rewrote since the last look."""
    for row in _history_rows(job.entry.run_dir):
        if _row_key(row) in job.seen:
            continue
        job.seen.add(_row_key(row))
        with contextlib.suppress(KeyError, ValueError):
            job.seconds.append(float(row["seconds"]))
        try:
            epoch = int(float(row["epoch"])) + 1
        except (KeyError, TypeError, ValueError):  # a damaged row: count it
            epoch = job.entry.done + len(job.seconds)
        left = [j.left_s() for j in running] + [e.left_s for e in todo]
        unknown = sum(s is None for s in left)
        queue_left = duration(sum(s for s in left if s is not None)) + " in the queue" + (
            f" (and {_runs(unknown)} not measured)" if unknown else "")
        scores = ", ".join(s for s in (_percent(row, "accuracy"), _percent(row, "val_accuracy"))
                           if s)
        _say(f"{job.entry.run.name} epoch {epoch}/{job.entry.run.epochs}: "
             f"{float(row.get('seconds') or 0):.0f} s, {scores}; about "
             f"{duration(job.left_s())} left in this run, {queue_left}")


def draw_figure(run_dir, figures) -> pathlib.Path:
    """Draws a finished run's accuracy curves into `figures/<run>_accuracy.png`."""
    from squeeze_keras import plots

    result = runs.load_run(run_dir)
    config, metrics = runs.stored_config(run_dir), result.metrics  # the run's own config
    path = pathlib.Path(figures) / f"{pathlib.Path(run_dir).name}_accuracy.png"
    path.parent.mkdir(parents=True, exist_ok=True)
    plots.plot_history(result.history, f"{config.name}: {config.description}", path,
                       report_top1=config.report_top1, protocol=metrics["protocol"],
                       seed=metrics.get("seed", 0),
                       evaluation=metrics.get("evaluation", "test"))
    plots.plt.close("all")
    return path


def _finish(job: _Running, out, finished, failed, busy, todo, running, figures=None) -> None:
    name, code = job.entry.run.name, job.proc.returncode
    mark = pathlib.Path(out) / QUEUE_DIR / f"{name}.failed"
    log_path = pathlib.Path(job.log.name)
    metrics = runs.read_metrics(job.entry.run_dir)
    if code == 0 and metrics is not None:
        mark.unlink(missing_ok=True)
        finished.append(name)
        left = len(todo) + len(running)
        _say(f"finished {name}: top-1 {metrics.get('top1')} % after {metrics.get('epochs')} "
             f"epochs, {metrics.get('seconds_per_epoch')} s/epoch ({metrics.get('precision')}) "
             f"in {duration(time.time() - job.started)}; {_runs(left)} left")
        if figures is not None:
            try:
                _say(f"{name}: its figure is {draw_figure(job.entry.run_dir, figures)}")
            except Exception as err:  # the run is made: a figure is not worth stopping for
                _say(f"{name}: no figure ({type(err).__name__}: {err})")
        return
    tail = _tail(log_path)
    if any("is in use by" in line for line in tail):  # another process took it first
        _say(f"{name}: another process holds its folder: skipped, left to it")
        busy.append(job.entry)
        return
    failed.append(name)
    fileio.write_text(mark, f"exit {code} at {time.strftime('%Y-%m-%d %H:%M:%S')}, log "
                            f"{log_path}\n" + "\n".join(tail) + "\n")
    _say(f"FAILED {name} (exit {code}); the last lines of {log_path}:")
    for line in tail:
        print(f"    {line}", flush=True)
    _say("going on with the next run" if todo else "no run left to go on with")


def _stop_all(running: list[_Running], grace: float = 60.0) -> None:
    """SIGINT (each run keeps its last finished epoch); SIGKILL after `grace` s or a 2nd signal."""
    signals_before = len(_STOP)
    for job in running:
        with contextlib.suppress(ProcessLookupError):
            job.proc.send_signal(signal.SIGINT)
    end = time.time() + grace
    for job in list(running):
        while job.proc.poll() is None and time.time() < end and len(_STOP) <= signals_before + 1:
            time.sleep(0.1)
        if job.proc.poll() is None:
            job.proc.kill()
            job.proc.wait()
        job.log.close()
        _report_epochs(job, running)
        running.remove(job)
        # The resume state, not history.csv, says where it resumes: a kill between the two
        # writes leaves the history one epoch ahead.
        done = runs.resumable_epochs(job.entry.run_dir)
        if runs.read_metrics(job.entry.run_dir) is not None:
            _say(f"{job.entry.run.name}: had finished")
        else:
            kept = f"epochs 1-{done} are kept" if done else "no epoch was finished"
            _say(f"{job.entry.run.name}: stopped; {kept}, it resumes at epoch {done + 1}")


def _summarise(finished, failed, busy, todo, out) -> None:
    parts = [f"{_runs(len(finished))} finished now"]
    if failed:
        parts.append(f"{_runs(len(failed))} failed ({', '.join(failed)}; see "
                     f"{pathlib.Path(out) / QUEUE_DIR}/<run>.log)")
    if busy:
        parts.append(f"{_runs(len(busy))} left to the process that holds them "
                     f"({', '.join(e.run.name for e in busy)})")
    if todo:
        parts.append(f"{_runs(len(todo))} not started ({', '.join(e.run.name for e in todo)})")
    _say("done: " + "; ".join(parts))
