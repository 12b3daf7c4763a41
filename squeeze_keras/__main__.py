"""Command line: `python -m squeeze_keras list | summary | train | export | prune | study`."""

from __future__ import annotations

import argparse
import sys


def _list(args):
    from squeeze_keras import experiments

    for name in experiments.names():
        config = experiments.get(name)
        print(f"{name:9s} {config.dataset:9s} report top-1 {config.report_top1:5.2f}  "
              f"{config.description}")


def _summary(args):
    from squeeze_keras import experiments
    from squeeze_keras.model import format_table2, table2

    config = experiments.get(args.experiment)
    model = config.build_model()
    print(format_table2(table2(model)))
    print(f"\nparameters: {model.count_params():,} (report: {config.report_params:,})")


def _train(args):
    from squeeze_keras.train import run_experiment

    result = run_experiment(
        args.experiment, epochs=args.epochs, data=args.data, out_dir=args.out,
        seed=args.seed, protocol=args.protocol, limit=args.limit,
        precision=args.precision, data_dir=args.data_dir, overwrite=args.overwrite,
        verbose=args.verbose,
    )
    m = result.metrics
    print(f"{m['experiment']} ({m['protocol']}): top-1 {m['top1']:.2f}% "
          f"(report {m['report_top1']}), {m['epochs']} epochs, "
          f"{m['seconds_per_epoch']} s/epoch on {m['hardware']} -> {result.run_dir}")


def _export(args):
    import pandas as pd

    from squeeze_keras.export import export_run

    table = export_run(args.run, data=args.data, out_dir=args.out, eval_limit=args.limit,
                       data_dir=args.data_dir)
    with pd.option_context("display.width", 160, "display.max_columns", None):
        print(table.to_string(index=False))
    print(f"\n(top-1 on {table.attrs['test_images']} test images, computed by the LiteRT "
          "interpreter; latency: batch 1, one thread)")


def _prune(args):
    from squeeze_keras.prune import prune_run, pruned_dir

    out = args.out or pruned_dir(args.run, args.sparsity)
    m = prune_run(args.run, data=args.data, sparsity=args.sparsity, epochs=args.epochs,
                  data_dir=args.data_dir, out_dir=out)
    print(f"sparsity {m['sparsity']:.1%}, top-1 {m['top1']:.2f} % (unpruned {m['unpruned_top1']:.2f} %) "
          f"after {m['fine_tune_epochs']} fine-tuning epochs -> {out} (export it with `export {out}`)")


def _study(args):
    from squeeze_keras.study import run_study

    run_study(args.notebooks, data=args.data, epochs=args.epochs, smoke=args.smoke,
              only=args.only)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m squeeze_keras", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the experiments").set_defaults(fn=_list)
    p = sub.add_parser("summary", help="print Table 2 (layers, shapes, parameters)")
    p.add_argument("experiment")
    p.set_defaults(fn=_summary)
    p = sub.add_parser("train", help="train and evaluate one experiment")
    p.add_argument("experiment")
    p.add_argument("--epochs", type=int, default=None, help="default: the experiment's (20)")
    p.add_argument("--data", default="tfds",
                   help="tfds (default), synthetic, or an image folder / .tar.gz path")
    p.add_argument("--data-dir", default=None, help="tfds data folder")
    p.add_argument("--out", default="results", help="folder of run folders (default: results)")
    p.add_argument("--protocol", default=None, help="paper (default), tuned or tuned2")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of weights, shuffling and augmentation; k > 0 trains into <run>_seed<k>")
    p.add_argument("--limit", type=int, default=None, help="examples per split (smoke runs)")
    p.add_argument("--precision", default="auto",
                   help="auto (default), float32, mixed_float16 or mixed_bfloat16")
    p.add_argument("--overwrite", action="store_true", help="retrain a finished run")
    p.add_argument("--verbose", type=int, default=1, choices=(0, 1, 2),
                   help="1: a progress bar per epoch (default); 2: one line per epoch")
    p.set_defaults(fn=_train)
    p = sub.add_parser("export", help="LiteRT export of a run in four forms, measured")
    p.add_argument("run", help="a run folder, e.g. results/e4")
    p.add_argument("--data", default="tfds", help="where the test split comes from (as train)")
    p.add_argument("--data-dir", default=None, help="tfds data folder")
    p.add_argument("--out", default=None, help="output folder (default: RUN/litert)")
    p.add_argument("--limit", type=int, default=None, help="evaluate on this many test images")
    p.set_defaults(fn=_export)
    p = sub.add_parser("prune", help="fine-tune a run with magnitude pruning")
    p.add_argument("run", help="a run folder, e.g. results/e4")
    p.add_argument("--data", default="tfds", help="training data source (as train)")
    p.add_argument("--data-dir", default=None, help="tfds data folder")
    p.add_argument("--sparsity", type=float, default=0.6, help="fraction of zeros (default 0.6)")
    p.add_argument("--epochs", type=int, default=6, help="fine-tuning epochs (default 6)")
    p.add_argument("--out", default=None, help="output folder (default: RUN/pruned<percent>)")
    p.set_defaults(fn=_prune)
    p = sub.add_parser("study", help="execute every notebook in order (papermill)")
    p.add_argument("--data", default="tfds", help="tfds (default) or an image folder / .tar.gz path")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--smoke", action="store_true",
                   help="synthetic data, 1 epoch, copies in a temporary folder")
    p.add_argument("--notebooks", default="notebooks", help="notebooks folder (default: notebooks)")
    p.add_argument("--only", nargs="*", help="run only these notebooks (stems)")
    p.set_defaults(fn=_study)
    args = parser.parse_args(argv)
    try:
        args.fn(args)
    except (ValueError, FileExistsError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except Exception as err:  # a notebook failed: run_study has said where
        if type(err).__name__ != "PapermillExecutionError":
            raise
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
