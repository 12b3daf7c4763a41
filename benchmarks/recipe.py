"""Short proxy runs that compare training recipes for the best SqueezeNet under 1 M parameters.

Each proxy trains one architecture under one protocol for a few epochs (4 by
default: every schedule is compressed into them, its warm-up to one epoch) on
the real CIFAR-10 training images, and is evaluated on the test split, with
and without test-time flip (`train.flip_tta_probabilities`). Each proxy
changes one thing against a named control, and the table says what that
change did and what the proxy cost:

    python benchmarks/recipe.py --data <the CIFAR-10 JPEG archive>
    python benchmarks/recipe.py --data <archive> --only bn_sgd bn_sgd_ls02
    python benchmarks/recipe.py --table      # the table of the proxies already run

Runs go to `benchmarks/results/recipe/<proxy>/` through `train.run_experiment`,
so an interrupted proxy resumes where it stopped and a finished one is not run
again; the table is `benchmarks/results/recipe/proxies.md`. Not part of the test
suite. The background (airbench, which choices carried over) is in
`docs/recipe.md`.
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "benchmarks" / "results" / "recipe"
EPOCHS = 4


@dataclasses.dataclass(frozen=True)
class Proxy:
    """One proxy: `experiment` trained under `protocol` with `model` changes, against `control`."""

    name: str
    change: str
    experiment: str
    protocol: dict
    model: dict = dataclasses.field(default_factory=dict)
    control: str | None = None


# `tuned2` with its warm-up compressed to one of the proxy's epochs.
ADAMW = dict(optimizer="adamw", learning_rate=2e-3, batch_size=128, weight_decay=0.02,
             schedule="warmup_cosine", warmup_epochs=1, label_smoothing=0.1)
# SGD with Nesterov momentum and a one-cycle triangle, at the rate per image and the decay
# per step of airbench94 (docs/recipe.md): peak 0.2 at batch 128, decoupled decay 5e-3
# (each step takes lr * 5e-3 = 1e-3 of every weight at the peak).
SGD = dict(optimizer="sgd_nesterov", learning_rate=0.2, batch_size=128, weight_decay=5e-3,
           schedule="warmup_linear", warmup_epochs=1, label_smoothing=0.1)

PROXIES = (
    Proxy("e4_adamw", "E4 (no batch norm) under tuned2", "e4", ADAMW),
    Proxy("bn_adamw", "+ batch norm (e4_bn)", "e4_bn", ADAMW, control="e4_adamw"),
    Proxy("bn_sgd", "AdamW cosine -> SGD Nesterov one-cycle", "e4_bn", SGD,
          control="bn_adamw"),
    Proxy("bn_sgd_ls02", "label smoothing 0.1 -> 0.2", "e4_bn",
          {**SGD, "label_smoothing": 0.2}, control="bn_sgd"),
    Proxy("bn_sgd_drop0", "dropout 0.5 -> 0", "e4_bn", SGD, {"dropout": 0.0},
          control="bn_sgd"),
    Proxy("bn_sgd_lr04", "peak rate 0.2 -> 0.4", "e4_bn", {**SGD, "learning_rate": 0.4},
          control="bn_sgd"),
    Proxy("bn_sgd_lr01", "peak rate 0.2 -> 0.1", "e4_bn", {**SGD, "learning_rate": 0.1},
          control="bn_sgd"),
    Proxy("bn_sgd_bypass", "+ simple bypass (e4_bypass, same parameters)", "e4_bypass", SGD,
          {"batch_norm": True}, control="bn_sgd"),
    Proxy("bn_sgd_pct75", "75 % 3x3 expand filters (e4_pct75, 982,282 parameters)", "e4_pct75",
          SGD, {"batch_norm": True}, control="bn_sgd"),
)
BY_NAME = {proxy.name: proxy for proxy in PROXIES}

# What the search chose (docs/recipe.md): the proxy whose protocol is registered, stretched
# from EPOCHS to the study's 20 epochs, as PROTOCOL, and trained on its architecture.
WINNER = "bn_sgd"
PROTOCOL = "sgd_onecycle"


def stretched(proxy: Proxy, name: str, epochs: int = 20):
    """The proxy's protocol over `epochs` epochs: its warm-up stretched in proportion."""
    from squeeze_keras import experiments

    warmup = proxy.protocol.get("warmup_epochs", 0) * epochs // EPOCHS
    return experiments.Protocol(name=name, **{**proxy.protocol, "warmup_epochs": warmup})


def config_of(proxy: Proxy):
    """The proxy's `ExperimentConfig`: named for the proxy, so each has its own run folder."""
    from squeeze_keras import experiments

    base = experiments.get(proxy.experiment)
    return dataclasses.replace(
        base, name=proxy.name, description=f"{proxy.experiment}: {proxy.change}",
        model=dataclasses.replace(base.model, **proxy.model),
        protocol=experiments.Protocol(name="proxy", **proxy.protocol),
        report_top1=None, report_params=None)


def run(proxy: Proxy, data: str, epochs: int):
    from squeeze_keras import train

    return train.run_experiment(config_of(proxy), epochs=epochs, data=data, out_dir=OUT,
                                verbose=2)


def rows(out=OUT):
    """One row per finished proxy, in `PROXIES` order, with its gain over its control."""
    from squeeze_keras import runs

    folders = {proxy.name: out / f"{proxy.name}_proxy" for proxy in PROXIES}
    found = {name: m for name, folder in folders.items()
             if (m := runs.read_metrics(folder)) is not None}
    table = []
    for proxy in PROXIES:
        if proxy.name not in found:
            continue
        m = found[proxy.name]
        control = found.get(proxy.control)
        gain = (f"{m['top1'] - control['top1']:+.2f}" if control else
                "control" if proxy.control is None else f"({proxy.control} not run)")
        history = runs.history_frame(folders[proxy.name])
        table.append({
            "proxy": proxy.name, "change": proxy.change, "against": proxy.control or "-",
            "top1": m["top1"], "flip_tta": m.get("top1_flip_tta"), "gain": gain,
            "train_top1": round(100 * history["accuracy"].iloc[-1], 2) if len(history) else None,
            "params": m["params"], "epochs": m["epochs"],
            "s_per_epoch": m["seconds_per_epoch"], "precision": m["precision"],
            "hardware": m["hardware"]})
    return table


def write_table(out=OUT) -> str:
    table = rows(out)
    lines = [
        "# Recipe proxies (generated by `benchmarks/recipe.py --table`)", "",
        "CIFAR-10, 50,000 training images, test split (10,000). Each proxy trains for the "
        "epochs shown with its whole schedule compressed into them, seed 0; `gain` is its "
        "top-1 minus its control's. One seed each: differences under about 1 point are "
        "within seed noise (E4 `paper` seeds differ by up to 5 points after 1-3 epochs).", "",
        "| proxy | change | against | top-1 | with flip TTA | gain | train top-1 | params "
        "| epochs | s/epoch | precision |",
        "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in table:
        lines.append(
            f"| {r['proxy']} | {r['change']} | {r['against']} | {r['top1']:.2f} | "
            f"{r['flip_tta'] if r['flip_tta'] is not None else '-'} | {r['gain']} | "
            f"{r['train_top1']} | {r['params']:,} | {r['epochs']} | {r['s_per_epoch']} | "
            f"{r['precision']} |")
    machines = sorted({r["hardware"] for r in table})
    lines += ["", "Hardware: " + ("; ".join(machines) if machines else "no proxy has run yet")
              + ". The seconds per epoch were measured while other training shared the two "
              "cores, so they compare proxies only roughly.", ""]
    text = "\n".join(lines)
    (out / "proxies.md").write_text(text)
    return text


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="the CIFAR-10 archive or image folder")
    parser.add_argument("--only", nargs="+", choices=sorted(BY_NAME), help="proxies to run")
    parser.add_argument("--epochs", type=int, default=EPOCHS)
    parser.add_argument("--table", action="store_true", help="only write the table")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    if not args.table:
        if not args.data:
            parser.error("--data is required to run proxies (or pass --table)")
        for proxy in (BY_NAME[n] for n in args.only) if args.only else PROXIES:
            result = run(proxy, args.data, args.epochs)
            print(f"{proxy.name}: top-1 {result.metrics['top1']:.2f}, flip TTA "
                  f"{result.metrics.get('top1_flip_tta')}", flush=True)
            write_table()
    print(write_table())
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
