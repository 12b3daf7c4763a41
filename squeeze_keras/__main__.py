"""Command line: `python -m squeeze_keras list | summary | train | queue | export | prune | study | predict`."""

from __future__ import annotations

import argparse
import contextlib
import errno
import importlib.util
import json
import os
import pathlib
import signal
import sys
import threading

# Set before TensorFlow is first imported: its C++ start-up chatter (CUDA
# probes, CPU flags, and "failed call to cuInit", an error-level line, on a
# machine without a GPU) is noise here, as in the notebooks, and its oneDNN
# CPU kernels, which it turns on by itself only on AVX-512-class CPUs, train
# faster on AVX2 ones too (benchmarks/README.md).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

RESUME_HINT = "run the same command again to resume from the last finished epoch"
OVERWRITE_HINT = ("run it again without --overwrite to resume the new run from its last finished "
                  "epoch (if it had none, the old run was put back as it was)")
# Keras backends this package trains under (`numpy` and `openvino` cannot train).
BACKENDS = ("tensorflow", "jax", "torch")


# ---------------------------------------------------------------- argument types


def _int_at_least(minimum: int, words: str, maximum: int | None = None):
    """An argparse type: an integer >= `minimum` (<= `maximum`), refused in `words` otherwise."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum or (maximum is not None and value > maximum):
            raise argparse.ArgumentTypeError(f"must be {words}, got {text}")
        return value

    return parse


_positive_int = _int_at_least(1, "a positive integer")
# NumPy's global seed (`keras.utils.set_random_seed`) takes 0 .. 2**32 - 1.
_seed = _int_at_least(0, f"an integer from 0 to {2**32 - 1} (2**32 - 1)", maximum=2**32 - 1)


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(
            f"must be a fraction between 0 and 1 (e.g. 0.6 for 60 %), got {text}")
    return value


def _holdout(text: str):
    """Images per class (`100`) or a fraction of each class (`0.2`)."""
    try:
        value = int(text)
    except ValueError:
        try:
            value = float(text)
        except ValueError:
            value = None
    if value is None or value <= 0 or (isinstance(value, float) and value >= 1):
        raise argparse.ArgumentTypeError(
            f"must be images per class (a positive integer, e.g. 100) or a fraction of each "
            f"class between 0 and 1 (e.g. 0.2), got {text}")
    return value


def _out_folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("must name a folder, got an empty string")
    if os.path.exists(text) and not os.path.isdir(text):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return text


# ---------------------------------------------------------------- commands


def _list(args):
    from squeeze_keras import experiments

    for name in experiments.names():
        config = experiments.get(name)
        report = f"{config.report_top1:5.2f}" if config.report_top1 is not None else "    -"
        print(f"{name:18s} {config.dataset:9s} report top-1 {report}  {config.description}")


def _summary(args):
    from squeeze_keras import experiments
    from squeeze_keras.model import format_table2, table2

    config = experiments.get(args.experiment)
    model = config.build_model()
    print(format_table2(table2(model)))
    report = f" (report: {config.report_params:,})" if config.report_params else ""
    print(f"\nparameters: {model.count_params():,}{report}")


def _train(args):
    from squeeze_keras import train

    seeds = args.seeds if args.seeds is not None else [args.seed]
    results = train.run_seeds(
        args.experiment, seeds, epochs=args.epochs, data=args.data, out_dir=args.out,
        protocol=args.protocol, limit=args.limit, precision=args.precision,
        data_dir=args.data_dir, overwrite=args.overwrite, verbose=args.verbose,
        holdout=args.holdout, holdout_seed=args.holdout_seed,
    )
    for result in results:
        m = result.metrics
        done = {"trained": "trained", "resumed": "resumed and finished",
                "finished": "already finished, not retrained",
                "rebuilt": f"already finished, not retrained; its metrics.json was "
                           f"{m.get('rebuilt', {}).get('was', 'missing')} and is rebuilt from "
                           f"{' and '.join(m.get('rebuilt', {}).get('from', ['model.keras']))}"
                }[result.status]
        on = m.get("evaluation", "test")
        # None where history.csv lost every row (a rebuilt run).
        speed = m["seconds_per_epoch"] if m["seconds_per_epoch"] is not None else "?"
        print(f"{m['experiment']} ({m['protocol']}, seed {m['seed']}): {done}. "
              f"Top-1 {m['top1']:.2f} % on {on} (report {m['report_top1']}), {m['epochs']} epochs, "
              f"{speed} s/epoch on {m['hardware']} -> {result.run_dir}")


def _queue(args):
    import time

    from squeeze_keras.queue import run_queue

    deadline = args.deadline_at
    if args.time_limit is not None:
        deadline = time.time() + args.time_limit
    return run_queue(args.queue, data=args.data, out=args.out, limit=args.limit,
                     precision=args.precision, concurrency=args.concurrency,
                     skip_finished_in=args.skip_finished_in, deadline=deadline,
                     reserve_s=args.reserve_s, estimate_s=args.estimate_s,
                     dry_run=args.dry_run, figures=args.figures)


def _export(args):
    import pandas as pd

    from squeeze_keras.export import export_run

    table = export_run(args.run, data=args.data, out_dir=args.out, eval_limit=args.limit,
                       data_dir=args.data_dir, overwrite=args.overwrite)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(table.to_string(index=False))
    print(f"\n(top-1 on {table.attrs['test_images']} test images, computed by the LiteRT "
          f"interpreter; latency: batch 1, one thread) -> {table.attrs['out_dir']}")


def _prune(args):
    from squeeze_keras.prune import prune_run, pruned_dir

    out = args.out or pruned_dir(args.run, args.sparsity)
    m = prune_run(args.run, data=args.data, sparsity=args.sparsity, epochs=args.epochs,
                  data_dir=args.data_dir, out_dir=out)
    print(f"sparsity {m['sparsity']:.1%}, top-1 {m['top1']:.2f} % (unpruned {m['unpruned_top1']:.2f} %) "
          f"after {m['fine_tune_epochs']} fine-tuning epochs -> {out} (export it with `export {out}`)")


def _predict(args):
    import json

    from squeeze_keras.classify import classify_files, format_result, load_classifier

    results = classify_files(args.images, load_classifier(args.weights), top=args.top)
    if args.json:
        print(json.dumps(results, indent=2))
    for result in results:
        if "error" in result:
            print(f"error: {result['image']}: {result['error']}", file=sys.stderr)
        elif not args.json:
            print(format_result(result))
    return 1 if any("error" in result for result in results) else 0


def _study(args):
    from squeeze_keras.study import run_study

    run_study(args.notebooks, data=args.data, epochs=args.epochs, seed=args.seed,
              holdout=args.holdout, smoke=args.smoke, only=args.only, train=not args.no_train)


# ---------------------------------------------------------------- parser


def _parser() -> argparse.ArgumentParser:
    data = argparse.ArgumentParser(add_help=False)
    data.add_argument("--data", default="tfds",
                      help="tfds (default; downloads CIFAR), synthetic, or an image folder / "
                           ".tar.gz with train/<class>/* and test/<class>/*")
    data.add_argument("--data-dir", default=None, help="tfds data folder")

    parser = argparse.ArgumentParser(prog="python -m squeeze_keras", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments").set_defaults(fn=_list)
    p = sub.add_parser("summary", help="print Table 2 (layers, shapes, parameters)")
    p.add_argument("experiment")
    p.set_defaults(fn=_summary)

    p = sub.add_parser("train", parents=[data], help="train and evaluate one experiment")
    p.add_argument("experiment")
    p.add_argument("--epochs", type=_positive_int, default=None,
                   help="default: the experiment's (20)")
    p.add_argument("--out", type=_out_folder, default="runs",
                   help="folder of run folders (default: runs; the committed record is results)")
    p.add_argument("--protocol", default=None,
                   help="paper (default), tuned, tuned2 or sgd_onecycle")
    seeds = p.add_mutually_exclusive_group()
    seeds.add_argument("--seed", type=_seed, default=0,
                       help="seed of weights, shuffling and augmentation; k > 0 trains into "
                            "<run>_seed<k>")
    seeds.add_argument("--seeds", type=_seed, nargs="+", default=None,
                       help="several seeds, one after the other in this process")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="a seeded random subset of this many examples per split (smoke runs)")
    p.add_argument("--precision", default="auto",
                   help="auto (default), float32, mixed_float16 or mixed_bfloat16")
    p.add_argument("--holdout", type=_holdout, default=None,
                   help="evaluate on a stratified hold-out of train/: images per class (e.g. "
                        "100) or a fraction (e.g. 0.2); needed for a source without test/, "
                        "whose test/ is otherwise ignored during training. Run folder: "
                        "<run>_holdout<N>")
    p.add_argument("--holdout-seed", type=_seed, default=0,
                   help="seed of the hold-out choice, the same for every run seed (default 0)")
    p.add_argument("--overwrite", action="store_true",
                   help="empty the run folder and train afresh")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="1: a progress bar per epoch (default); 2: one line per epoch")
    p.set_defaults(fn=_train)

    p = sub.add_parser(
        "queue", help="train a queue file's runs, one after another, across sittings",
        description="Train the runs of a queue file (one run a line: `experiment protocol "
                    "seed epochs`) into --out: one at a time on a CPU, several at once where "
                    "a GPU or TPU is visible. Started again, it skips finished runs and "
                    "resumes the interrupted one; it first says what it will do and the time "
                    "left. See docs/queue.md.")
    p.add_argument("queue", help="the queue file, e.g. queue.txt")
    p.add_argument("--data", required=True,
                   help="the runs' data: an image folder / .tar.gz, tfds or synthetic")
    p.add_argument("--out", type=_out_folder, default="results",
                   help="folder of run folders (default: results)")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="the runs' --limit (a subset of each split; smoke runs)")
    p.add_argument("--precision", default="auto",
                   help="of new runs: auto (default), float32, mixed_float16 or mixed_bfloat16; "
                        "an interrupted run resumes in its own")
    p.add_argument("--concurrency", type=_positive_int, default=None,
                   help="runs at once (default: 1 on a CPU, 4 with an accelerator)")
    p.add_argument("--skip-finished-in", action="append", default=[], metavar="FOLDER",
                   help="runs finished in this folder count as made (repeatable)")
    limit = p.add_mutually_exclusive_group()
    limit.add_argument("--time-limit", type=float, default=None, metavar="SECONDS",
                       help="stop by this many seconds from now: start no run that cannot "
                            "finish, stop the others at their last finished epoch")
    limit.add_argument("--deadline-at", type=float, default=None, metavar="UNIX_TIME",
                       help="the same, as a Unix time")
    p.add_argument("--reserve-s", type=float, default=0.0,
                   help="seconds kept before the time limit (e.g. to pack; default 0)")
    p.add_argument("--estimate-s", type=float, default=None,
                   help="seconds a run with no measurement takes, for the time limit "
                        "(default: such a run starts)")
    p.add_argument("--dry-run", action="store_true",
                   help="print what it would do and the time it needs; train nothing")
    p.add_argument("--figures", default=None, metavar="FOLDER",
                   help="draw each finished run's accuracy curves into FOLDER as "
                        "<run>_accuracy.png (the study's record: --figures figures); "
                        "not with --limit")
    p.set_defaults(fn=_queue)

    p = sub.add_parser("export", parents=[data], help="LiteRT export of a run in four forms, measured")
    p.add_argument("run", help="a run folder, e.g. results/e4")
    p.add_argument("--out", type=_out_folder, default=None,
                   help="output folder (default: RUN/litert, or RUN/litert_limit<N> with --limit)")
    p.add_argument("--limit", type=_positive_int, default=None,
                   help="evaluate on a seeded random subset of this many test images")
    p.add_argument("--overwrite", action="store_true", help="replace an existing export")
    p.set_defaults(fn=_export)

    p = sub.add_parser("prune", parents=[data], help="fine-tune a run with magnitude pruning")
    p.add_argument("run", help="a run folder, e.g. results/e4")
    p.add_argument("--sparsity", type=_fraction, default=0.6,
                   help="fraction of Fire-module weights set to zero (default 0.6)")
    p.add_argument("--epochs", type=_positive_int, default=6,
                   help="fine-tuning epochs (default 6)")
    p.add_argument("--out", type=_out_folder, default=None,
                   help="output folder (default: RUN/pruned<percent>)")
    p.set_defaults(fn=_prune)

    p = sub.add_parser("study", help="execute every notebook in order (papermill)")
    p.add_argument("--data", default="tfds", help="tfds (default) or an image folder / .tar.gz path")
    p.add_argument("--epochs", type=_positive_int, default=20)
    p.add_argument("--seed", type=_seed, default=0,
                   help="SEED of the experiment notebooks (k > 0 trains <run>_seed<k>)")
    p.add_argument("--holdout", type=_holdout, default=None,
                   help="HOLDOUT of the experiment notebooks (see train --holdout)")
    p.add_argument("--smoke", action="store_true",
                   help="synthetic data, 1 epoch, copies in a temporary folder")
    p.add_argument("--notebooks", default="notebooks", help="notebooks folder (default: notebooks)")
    p.add_argument("--only", nargs="+", metavar="NOTEBOOK",
                   help="run only these notebooks (stems, e.g. 06_results)")
    p.add_argument("--no-train", action="store_true",
                   help="TRAIN = False: redraw tables and figures from the committed runs, "
                        "train nothing")
    p.set_defaults(fn=_study)

    p = sub.add_parser(
        "predict", help="classify image files (top classes and probabilities)",
        description="Classify PNG or JPEG files of any size, read as training reads images "
                    "(docs/model.md): each is turned as its EXIF orientation says, made RGB "
                    "(grayscale replicated, transparency composited onto white, 16-bit "
                    "grayscale scaled to 8 bits), centre-cropped to a square and resized to "
                    "32x32 with Pillow's antialiased bicubic filter. "
                    "One line per image; a file that cannot be read is an error line, the "
                    "others are still classified, and the exit code is 1.")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (PNG, JPEG)")
    p.add_argument("--weights", default="cifar10",
                   help="cifar10 (default: the weights that ship with the package, E4 tuned2), "
                        "a run folder (e.g. results/e4_tuned2), or a .tflite file made by export")
    p.add_argument("--top", type=_int_at_least(1, "a positive integer"), default=5,
                   help="classes per image (default 5)")
    p.add_argument("--json", action="store_true",
                   help="print one JSON list of {image, predictions: [[class, probability]...]} "
                        "or {image, error}")
    p.set_defaults(fn=_predict)
    return parser


def _keras_config_file() -> pathlib.Path:
    """The `keras.json` Keras reads when imported: in `$KERAS_HOME`, else in `~/.keras`
    (`/tmp/.keras` where the home folder is not writable)."""
    if "KERAS_HOME" in os.environ:
        folder = os.environ["KERAS_HOME"]
    else:
        home = os.path.expanduser("~")
        folder = os.path.join(home if os.access(home, os.W_OK) else "/tmp", ".keras")
    return pathlib.Path(os.path.expanduser(os.path.join(folder, "keras.json")))


def _chosen_backend() -> tuple[str, pathlib.Path | None]:
    """The Keras backend Keras will load, and the `keras.json` that names it (`None`: not one).

    As Keras decides: `KERAS_BACKEND` unless empty (Keras ignores an empty
    one), else the `"backend"` of `keras.json`, else TensorFlow.
    """
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"], None
    file = _keras_config_file()
    try:
        backend = json.loads(file.read_text()).get("backend")
    except (OSError, ValueError, AttributeError):  # Keras ignores an unreadable file too
        backend = None
    return (backend, file) if isinstance(backend, str) else ("tensorflow", None)


def _backend_missing(err: ImportError | None = None) -> str | None:
    """Why the chosen backend cannot load: its package is not installed (or `err` says so)."""
    backend, file = _chosen_backend()
    if backend not in BACKENDS:
        return None
    if err is None:
        missing = importlib.util.find_spec(backend) is None
    else:
        missing = bool(err.name) and err.name.split(".")[0] == backend
    if not missing:
        return None
    if file is None:
        return (f"KERAS_BACKEND={backend} but the {backend!r} package is not installed: "
                f"install it (pip install {backend}) or unset KERAS_BACKEND.")
    return (f"{file} sets the Keras backend to {backend!r} but the {backend!r} package is not "
            f"installed: install it (pip install {backend}), change its \"backend\", or set "
            "KERAS_BACKEND=tensorflow.")


def _backend_unusable() -> str | None:
    """Why the Keras backend this process would get cannot train, before Keras is imported."""
    backend, file = _chosen_backend()
    if backend in BACKENDS:
        return _backend_missing()
    if file is None:
        return (f"KERAS_BACKEND={backend} is not a backend this package trains under: set it to "
                f"one of {', '.join(BACKENDS)}, or unset it (TensorFlow).")
    return (f"{file} sets the Keras backend to {backend!r}, not a backend this package trains "
            f"under: set its \"backend\" to one of {', '.join(BACKENDS)}, or set "
            "KERAS_BACKEND=tensorflow.")


def _import_tensorflow_quietly() -> None:
    """Imports TensorFlow with file descriptor 2 sent to /dev/null while it loads.

    Its C++ libraries print lines as they load ("oneDNN custom operations are
    on", "Could not find cuda drivers"), before any log level applies; the
    notebooks' set-up cell does the same. Python's own errors still show.
    """
    if "tensorflow" in sys.modules or importlib.util.find_spec("tensorflow") is None:
        return
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        import tensorflow  # noqa: F401
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _needs_tensorflow(args) -> bool:
    # `list` reads only the registry; under another Keras backend only export and prune do.
    if args.command == "list":
        return False
    return _chosen_backend()[0] == "tensorflow" or args.command in ("export", "prune")


def main(argv=None) -> int:
    args = _parser().parse_args(argv)
    # Before Keras is imported, which fails on these with a traceback; `list` needs no backend.
    message = None if args.command == "list" else _backend_unusable()
    if message is not None:
        print(f"error: {message}", file=sys.stderr)
        return 2
    if _needs_tensorflow(args):
        _import_tensorflow_quietly()
    try:
        with _sigterm_as_ctrl_c():
            return _run(args)
    except ImportError as err:  # e.g. KERAS_BACKEND=jax without JAX installed
        message = _backend_missing(err)
        if message is None:
            raise
        print(f"error: {message}", file=sys.stderr)
        return 2


class Terminated(KeyboardInterrupt):
    """SIGTERM (a batch system's time limit, `timeout`, `kill`), handled as Ctrl-C is."""


def _raise_terminated(signum, frame):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second one must not cut the clean-up short
    raise Terminated()


@contextlib.contextmanager
def _sigterm_as_ctrl_c():
    """While the block runs, SIGTERM raises `Terminated`: a run stops at its last finished
    epoch, and an overwritten run is put back, as on Ctrl-C (by default SIGTERM ends the
    process at once, leaving an overwritten run in `.replaced/`)."""
    if threading.current_thread() is not threading.main_thread():  # signals reach it only
        yield
        return
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _train_hint(args) -> str:
    return OVERWRITE_HINT if args.overwrite else RESUME_HINT


def _run(args) -> int:
    # DataError is a ValueError and RunFolderError a FileExistsError: caught below without
    # importing their modules, which load Keras (and TensorFlow) before `list` needs neither.
    try:
        status = args.fn(args)
    except KeyboardInterrupt as err:
        hint = f": {_train_hint(args)}" if args.command == "train" else ""
        if isinstance(err, Terminated):
            print(f"\nterminated (SIGTERM){hint}.", file=sys.stderr)
            return 128 + signal.SIGTERM
        print(f"\ninterrupted{hint}.", file=sys.stderr)
        return 130
    except (ValueError, FileExistsError, FileNotFoundError, NotADirectoryError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except PermissionError as err:
        where = pathlib.Path(err.filename).parent if err.filename else "the output folder"
        print(f"error: cannot write into {where} (permission denied); choose another --out.",
              file=sys.stderr)
        return 2
    except OSError as err:
        if err.errno != errno.ENOSPC:
            raise
        where = err.filename or "the output folder"
        then = _train_hint(args) if args.command == "train" else "run the same command again"
        print(f"error: no space left on the disk of {where}: free some space there, then {then}.",
              file=sys.stderr)
        return 2
    except Exception as err:
        if type(err).__name__ == "PapermillExecutionError":
            return 1  # run_study has said which notebook and cell failed
        if type(err).__name__ == "TrainingStoppedError":  # says what is kept and the ways out
            print(f"error: {err}", file=sys.stderr)
            return 1
        raise
    return status or 0


if __name__ == "__main__":
    sys.exit(main())
