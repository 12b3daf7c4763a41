"""Table 1 from run folders: the report's numbers beside what was measured here, over seeds.

Seed 0 of a run lives in `<run>`, seed k in `<run>_seed<k>` (`runs.run_name`).
Every figure is the top-1 of the final epoch unless a column says otherwise
(`last-3 mean`: the mean test accuracy of the last three epochs, a
lower-noise companion). A run that has not been made shows as missing
(`<NA>`), never as a number.

The report's steps (baseline -> E1 -> E2, then E2 -> E3 and E2 -> E4: E3 and
E4 are both children of E2) are compared as differences of seed means with a
95 % Welch interval (`steps`, `step_sentences`). SciPy is not a dependency:
the Student-t quantile is computed here (`t_quantile`).
"""

from __future__ import annotations

import functools
import json
import math
import pathlib
import re
import statistics

import pandas as pd

from squeeze_keras import experiments
from squeeze_keras.runs import load_run, run_dir_for, run_name

# The report's comparisons, (from, to): E3 and E4 are both children of E2.
# The report's chain (baseline -> E1 -> E2, then E3 and E4 each a change of E2), and E3 -> E4:
# siblings, but the report ranks E4 above E3 as its best model.
REPORT_STEPS = (("baseline", "e1"), ("e1", "e2"), ("e2", "e3"), ("e2", "e4"), ("e3", "e4"))
# What each experiment changes, short enough for a table column.
SHORT_CHANGES = {
    "baseline": "SqueezeNet 1.0",
    "e1": "CIFAR preproc., pool 3->2",
    "e2": "conv1 7->2",
    "e3": "no Fire3, dropout 0.3",
    "e4": "no maxpool1",
    "e5": "E4 on CIFAR-100",
}
LAST_EPOCHS = 3  # epochs averaged by the `last-3 mean` companion figure
WOBBLE_EPOCHS = 5  # epochs over which a run's one-epoch wobble is measured


# ---------------------------------------------------------------- reading runs


def load_runs(results_dir, protocol: str = "paper", names=None) -> dict:
    """`{experiment: RunResult}` for every finished seed-0 run of `protocol` in `results_dir`.

    Args:
        names: the experiments to look for. Defaults to every registered one.
    """
    names = experiments.names() if names is None else names
    runs = {name: _seed0_run(results_dir, name, protocol) for name in names}
    return {name: run for name, run in runs.items() if run is not None}


def protocol_runs(results_dir, experiment: str) -> dict:
    """`{protocol: RunResult}` for the finished seed-0 runs of one experiment, every protocol."""
    runs = {p: _seed0_run(results_dir, experiment, p) for p in experiments.PROTOCOLS}
    return {protocol: run for protocol, run in runs.items() if run is not None}


def _seed0_run(results_dir, experiment: str, protocol: str):
    """The finished seed-0 run of `experiment` under `protocol`, or None."""
    run_dir = run_dir_for(experiments.get(experiment).with_protocol(protocol), results_dir)
    return load_run(run_dir) if (run_dir / "metrics.json").exists() else None


def _runs_named(results_dir, experiment: str, protocol: str, middle: str = ""):
    """`(seed, RunResult)` of the finished runs in `<run><middle>[_seed<k>]` folders."""
    base = run_name(experiments.get(experiment).with_protocol(protocol))
    pattern = re.compile(rf"{re.escape(base)}{middle}(?:_seed(\d+))?")
    for metrics_file in pathlib.Path(results_dir).glob(f"{base}*/metrics.json"):
        match = pattern.fullmatch(metrics_file.parent.name)
        if match:
            yield int(match.group(1) or 0), load_run(metrics_file.parent)


def seed_runs(results_dir, experiment: str, protocol: str = "paper") -> dict:
    """`{seed: RunResult}` for the finished runs of one experiment and protocol, every seed.

    Seed 0 lives in `<run>`, other seeds in `<run>_seed<k>` (`run_experiment(seed=k)`).
    """
    return dict(sorted(_runs_named(results_dir, experiment, protocol)))


def holdout_runs(results_dir, experiment: str, protocol: str = "paper") -> dict:
    """`{evaluation: {seed: RunResult}}` of an experiment's runs evaluated on a hold-out.

    Hold-out runs live in `<run>_holdout<N>[_seed<k>]`; `evaluation` is the
    split they were evaluated on (`"train hold-out, 100/class"`). They never
    count among the official-split seeds of `seed_runs`.
    """
    found = {}
    for seed, run in _runs_named(results_dir, experiment, protocol, r"_holdout[0-9.]+"):
        found.setdefault(run.metrics.get("evaluation", "train hold-out"), {})[seed] = run
    return {k: dict(sorted(v.items())) for k, v in sorted(found.items())}


def calibration(results_dir, experiment: str = "e4", protocol: str = "paper") -> pd.DataFrame:
    """How far a hold-out figure sits from the official test split, measured on CIFAR-10.

    One row per seed-0 run of `experiment`: the official-split run (trained on
    every training image, evaluated on the test split) and each hold-out run
    (trained on the rest, evaluated on its hold-out and, separately, on the
    test split). Columns: run, trained on (images), evaluated on, top-1, and
    `official test top-1` (the hold-out runs' evaluation on the test split;
    the official run's own top-1). Missing runs are left out.
    """
    rows = []
    official = seed_runs(results_dir, experiment, protocol).get(0)
    if official is not None:
        m = official.metrics
        rows.append({"run": official.run_dir.name, "trained on": m.get("train_size"),
                     "evaluated on": "test", "top-1": m["top1"], "official test top-1": m["top1"]})
    for evaluation, seeds in holdout_runs(results_dir, experiment, protocol).items():
        if 0 not in seeds:
            continue
        m = seeds[0].metrics
        rows.append({"run": seeds[0].run_dir.name, "trained on": m.get("train_size"),
                     "evaluated on": evaluation, "top-1": m["top1"],
                     "official test top-1": m.get("official_test", {}).get("top1")})
    df = pd.DataFrame(rows, columns=["run", "trained on", "evaluated on", "top-1",
                                     "official test top-1"])
    df["trained on"] = df["trained on"].astype("Int64")
    for col in ("top-1", "official test top-1"):
        df[col] = df[col].astype("Float64")
    return df


def holdout_lines(results_dir) -> list[str]:
    """E5's hold-out figures and the calibration that stands beside them, in words.

    One line per finished E5 hold-out run (top-1, top-5, coarse top-1, on
    which images), then one per E4 hold-out run of `calibration`: its top-1
    on its hold-out and on the test split, and the difference between its
    hold-out figure and the official-split run's, the measured size of the
    protocol's effect on CIFAR-10. Runs not finished yet are said to be so.
    """
    lines = []
    for evaluation, seeds in holdout_runs(results_dir, "e5").items():
        for seed, run in seeds.items():
            m = run.metrics
            coarse = f", coarse top-1 {m['coarse_top1']:.2f} %" if "coarse_top1" in m else ""
            lines.append(f"E5 ({run.run_dir.name}, seed {seed}): top-1 {m['top1']:.2f} %, top-5 "
                         f"{m['top5']:.2f} %{coarse} on the {evaluation} (report, official test "
                         f"split: {experiments.get('e5').report_top1:.2f} %)")
    if not lines:
        lines.append("E5: no finished run yet")
    table = calibration(results_dir)
    if len(table) > 1 and table["official test top-1"].notna().all():
        official = table.iloc[0]
        for _, row in table.iloc[1:].iterrows():
            lines.append(
                f"{row['run']}: {row['top-1']:.2f} on its {row['evaluated on']}, "
                f"{row['official test top-1']:.2f} on the test split; the official-split run "
                f"{official['top-1']:.2f}: hold-out figure minus official-split run "
                f"{row['top-1'] - official['top-1']:+.2f} points")
    else:
        lines.append("calibration: the E4 hold-out run is not finished yet")
    return lines


def seed_histories(results_dir, names=experiments.REPORT, protocol: str = "paper") -> dict:
    """`{experiment: {seed: history}}` of the finished runs, for `plots.plot_validation_curves`.

    Experiments without a finished run are left out.
    """
    out = {}
    for name in names:
        runs = seed_runs(results_dir, name, protocol)
        if runs:
            out[name] = {seed: run.history for seed, run in runs.items()}
    return out


def protocol_histories(results_dir, experiment: str) -> dict:
    """`{protocol: {seed: history}}` of one experiment's finished runs, every protocol."""
    out = {}
    for protocol in experiments.PROTOCOLS:
        runs = seed_runs(results_dir, experiment, protocol)
        if runs:
            out[protocol] = {seed: run.history for seed, run in runs.items()}
    return out


def last_epochs_top1(history: pd.DataFrame, epochs: int = LAST_EPOCHS) -> float:
    """Mean test top-1 (%) of the last `epochs` epochs (`val_accuracy` in `history.csv`)."""
    return 100 * float(history["val_accuracy"].tail(epochs).mean())


def epoch_wobble(history: pd.DataFrame, epochs: int = WOBBLE_EPOCHS) -> float:
    """Largest change of test top-1 (points) from one epoch to the next over the last `epochs`."""
    return 100 * float(history["val_accuracy"].diff().tail(epochs).abs().max())


# ---------------------------------------------------------------- Table 1


@functools.lru_cache(maxsize=None)
def _params(name: str) -> int:
    return experiments.get(name).build_model().count_params()


def _stats(top1s: list[float]) -> dict:
    """n, mean, sample sd, min and max of a list of top-1 values (missing where undefined)."""
    n = len(top1s)
    return {
        "n": n,
        "mean": round(statistics.mean(top1s), 2) if n else None,
        "sd": round(statistics.stdev(top1s), 2) if n > 1 else None,
        "min": min(top1s) if n else None,
        "max": max(top1s) if n else None,
    }


def summary(results_dir, names=experiments.REPORT) -> pd.DataFrame:
    """Final top-1 over seeds, one row per experiment and protocol: the numbers behind Table 1.

    Every experiment has a `paper` row (missing values where no run is
    finished); other protocols have a row where at least one run is.
    Columns: run, protocol, n, mean, sd (sample), min, max, last-3 mean
    (over seeds, of each run's mean of its last three epochs), report top-1
    and difference (mean - report).
    """
    rows = []
    for name in names:
        config = experiments.get(name)
        for protocol in experiments.PROTOCOLS:
            runs = seed_runs(results_dir, name, protocol)
            if not runs and protocol != "paper":
                continue
            stats = _stats([r.metrics["top1"] for r in runs.values()])
            last = [last_epochs_top1(r.history) for r in runs.values()]
            mean = stats["mean"]
            rows.append({
                "run": name, "protocol": protocol, **stats,
                "last-3 mean": round(statistics.mean(last), 2) if last else None,
                "report top-1": config.report_top1,
                "difference": (round(mean - config.report_top1, 2)
                               if mean is not None and config.report_top1 is not None else None),
            })
    df = pd.DataFrame(rows, columns=["run", "protocol", "n", "mean", "sd", "min", "max",
                                     "last-3 mean", "report top-1", "difference"])
    df["n"] = df["n"].astype("Int64")
    for col in ("mean", "sd", "min", "max", "last-3 mean", "report top-1", "difference"):
        df[col] = df[col].astype("Float64")
    return df


def _holdout_stats(config, seeds: dict) -> dict:
    """The `summary` row's numbers for the hold-out runs of one experiment."""
    stats = _stats([r.metrics["top1"] for r in seeds.values()])
    last = statistics.mean(last_epochs_top1(r.history) for r in seeds.values())
    difference = (round(stats["mean"] - config.report_top1, 2)
                  if config.report_top1 is not None else None)
    return {**stats, "last-3 mean": round(last, 2), "difference": difference}


def _min_max(row) -> object:
    return pd.NA if pd.isna(row["min"]) else f"{row['min']:.2f}-{row['max']:.2f}"


def _mean_n(row) -> object:
    return pd.NA if pd.isna(row["mean"]) else f"{row['mean']:.2f} ({int(row['n'])})"


def table1(results_dir, protocols=("tuned2",), names=experiments.REPORT) -> pd.DataFrame:
    """The report's Table 1 beside this project's runs, compact enough for a notebook page.

    One row per experiment: `evaluated on` (the test split, or for an
    experiment with no official-split run, the hold-out its runs were
    evaluated on), `report top-1`; for the `paper` protocol the
    number of seeds (`paper n`), the `paper mean`, `paper sd` (sample) and
    `paper min-max` of the final-epoch top-1, `paper last-3 mean` (the mean of
    each run's last three epochs, a lower-noise companion) and `mean - report`;
    then `<protocol> mean (n)` for each of `protocols`, and `params`. Hardware,
    seconds per epoch and the other rarely used columns are in
    `table1_details`.

    Args:
        protocols: the protocols other than `paper` shown. Defaults to `("tuned2",)`.
        names: the experiments, in order. Defaults to the report's.
    """
    stats = summary(results_dir, names).set_index(["run", "protocol"])
    rows = []
    for name in names:
        config = experiments.get(name)
        paper = stats.loc[(name, "paper")]
        evaluated_on = "test" if paper["n"] else pd.NA
        if pd.isna(paper["mean"]):
            # No official-split run (E5 offline): its hold-out runs, named as such.
            for evaluation, seeds in holdout_runs(results_dir, name).items():
                paper, evaluated_on = _holdout_stats(config, seeds), evaluation
                break
        row = {
            "run": name,
            "change": SHORT_CHANGES.get(name, config.description),
            "evaluated on": evaluated_on,
            "report top-1": config.report_top1,
            "paper n": paper["n"],
            "paper mean": paper["mean"],
            "paper sd": paper["sd"],
            "paper min-max": _min_max(paper),
            "paper last-3 mean": paper["last-3 mean"],
            "mean - report": paper["difference"],
        }
        for protocol in protocols:
            key = (name, protocol)
            row[f"{protocol} mean (n)"] = _mean_n(stats.loc[key]) if key in stats.index else pd.NA
        row["params"] = _params(name)
        rows.append(row)
    df = pd.DataFrame(rows)
    df["paper n"] = df["paper n"].fillna(0).astype("Int64")
    for col in ("report top-1", "paper mean", "paper sd", "paper last-3 mean", "mean - report"):
        df[col] = df[col].astype("Float64")
    for col in ("evaluated on", "paper min-max", *(f"{p} mean (n)" for p in protocols)):
        df[col] = df[col].astype("string")
    df["params"] = df["params"].astype("Int64")
    return df


def table1_details(results_dir, names=experiments.REPORT) -> pd.DataFrame:
    """The rarely used columns of Table 1, one row per experiment, protocol and machine.

    Hardware and seconds per epoch belong to the runs of that row only (seeds
    made on another machine or in another precision get a row of their own).
    Every experiment has a `paper` row, missing where no run is finished; an
    experiment with hold-out runs only (E5 offline) shows those.
    Columns: run, protocol, seeds, mean (final top-1 over those seeds),
    report params, params, epochs, s/epoch (median over those seeds),
    hardware, data, precision.
    """
    rows = []
    for name in names:
        config = experiments.get(name)
        base = {"run": name, "report params": config.report_params, "params": _params(name)}
        for protocol in experiments.PROTOCOLS:
            runs = seed_runs(results_dir, name, protocol)
            if not runs and protocol == "paper":
                # No official-split run (E5 offline): its hold-out runs, as in `table1`.
                runs = next(iter(holdout_runs(results_dir, name).values()), {})
                if not runs:
                    rows.append({**base, "protocol": protocol})
            groups: dict[tuple, list] = {}
            for seed, run in runs.items():
                m = run.metrics
                key = (m.get("hardware"), m.get("precision"), m.get("data_source"), m.get("epochs"))
                groups.setdefault(key, []).append((seed, m))
            for (hardware, precision, data, epochs), members in groups.items():
                seconds = [m["seconds_per_epoch"] for _, m in members if m.get("seconds_per_epoch")]
                rows.append({
                    **base, "protocol": protocol,
                    "seeds": ", ".join(str(seed) for seed, _ in members),
                    "mean": round(statistics.mean(m["top1"] for _, m in members), 2),
                    "epochs": epochs,
                    "s/epoch": statistics.median(seconds) if seconds else None,
                    "hardware": hardware, "data": data, "precision": precision,
                })
    columns = ["run", "protocol", "seeds", "mean", "report params", "params", "epochs",
               "s/epoch", "hardware", "data", "precision"]
    df = pd.DataFrame(rows).reindex(columns=columns)
    for col in ("seeds", "hardware", "data", "precision"):
        df[col] = df[col].astype("string")
    for col in ("mean", "s/epoch"):
        df[col] = df[col].astype("Float64")
    for col in ("report params", "params", "epochs"):
        df[col] = df[col].astype("Int64")
    return df


# ---------------------------------------------------------------- steps and their noise


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the incomplete beta function (modified Lentz)."""
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 100_000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((a - 1.0 + m2) * (a + m2)),
                   -(a + m) * (a + b + m) * x / ((a + m2) * (a + 1.0 + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            return h
    return h


def _betainc(a: float, b: float, x: float, y: float) -> float:
    """Regularised incomplete beta I_x(a, b), with y = 1 - x given exactly."""
    if x <= 0.0:
        return 0.0
    if y <= 0.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                     + a * math.log(x) + b * math.log(y))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, y) / b


def _t_upper_tail(t: float, df: float) -> float:
    """P(T > t) for t >= 0 and Student's t with `df` degrees of freedom."""
    if math.isinf(df):
        return 0.5 * math.erfc(t / math.sqrt(2.0))
    return 0.5 * _betainc(df / 2.0, 0.5, df / (df + t * t), t * t / (df + t * t))


def t_quantile(p: float, df: float) -> float:
    """The `p` quantile of Student's t distribution with `df` (> 0, may be fractional) df.

    Bisection on the CDF, which comes from the regularised incomplete beta
    function (a continued fraction); `df=math.inf` gives the normal quantile.

    Raises:
        ValueError: `p` not in (0, 1) or `df` not positive.
    """
    if not 0.0 < p < 1.0:
        raise ValueError(f"`p` must be in (0, 1). Received: p={p!r}")
    if not df > 0:
        raise ValueError(f"`df` must be positive. Received: df={df!r}")
    if p == 0.5:
        return 0.0
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    tail = 1.0 - p
    lo, hi = 0.0, 1.0
    while _t_upper_tail(hi, df) > tail:
        lo, hi = hi, 2.0 * hi
    while hi - lo > 1e-12 * max(1.0, hi):
        mid = 0.5 * (lo + hi)
        lo, hi = (mid, hi) if _t_upper_tail(mid, df) > tail else (lo, mid)
    return 0.5 * (lo + hi)


def welch_interval(a, b, level: float = 0.95) -> dict:
    """Difference of means `mean(b) - mean(a)` with a Welch t interval (unequal variances).

    Degrees of freedom by Welch-Satterthwaite. With fewer than two values on
    either side the interval is undefined: `low`, `high` and `df` are None.
    Two sides without any spread give a zero-width interval.

    Returns:
        `{"difference", "low", "high", "df"}` (the difference is None if a side is empty).
    """
    a, b = list(a), list(b)
    if not a or not b:
        return {"difference": None, "low": None, "high": None, "df": None}
    difference = statistics.mean(b) - statistics.mean(a)
    if len(a) < 2 or len(b) < 2:
        return {"difference": difference, "low": None, "high": None, "df": None}
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    se = math.sqrt(va + vb)
    if se == 0.0:
        return {"difference": difference, "low": difference, "high": difference, "df": None}
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    half = t_quantile(0.5 + level / 2.0, df) * se
    return {"difference": difference, "low": difference - half, "high": difference + half,
            "df": df}


def _label(name: str) -> str:
    return name if name == "baseline" else name.upper()


def steps(results_dir, protocol: str = "paper", pairs=REPORT_STEPS) -> pd.DataFrame:
    """Each of the report's steps as a difference of seed means with a 95 % Welch interval.

    Columns: step, from, to, n from, n to, mean from, mean to, difference
    (to - from, points of final-epoch top-1), last-3 difference (the same for
    the last-3-epoch means), wobble (the largest `epoch_wobble` of the runs
    on either side), ci low, ci high, verdict: `real` (the interval excludes
    0), `within the noise`, `one seed` (fewer than two seeds on a side: no
    interval) or `not measured` (a side has no run).
    """
    rows = []
    for start, end in pairs:
        runs = {name: seed_runs(results_dir, name, protocol) for name in (start, end)}
        top1 = {name: [r.metrics["top1"] for r in rs.values()] for name, rs in runs.items()}
        last = {name: [last_epochs_top1(r.history) for r in rs.values()]
                for name, rs in runs.items()}
        ci = welch_interval(top1[start], top1[end])
        if ci["difference"] is None:
            verdict = "not measured"
        elif ci["low"] is None:
            verdict = "one seed"
        else:
            verdict = "within the noise" if ci["low"] <= 0 <= ci["high"] else "real"
        last_diff = (statistics.mean(last[end]) - statistics.mean(last[start])
                     if last[start] and last[end] else None)
        wobbles = [epoch_wobble(r.history) for rs in runs.values() for r in rs.values()]
        rows.append({
            "step": f"{_label(start)} -> {_label(end)}", "from": start, "to": end,
            "n from": len(top1[start]), "n to": len(top1[end]),
            "mean from": statistics.mean(top1[start]) if top1[start] else None,
            "mean to": statistics.mean(top1[end]) if top1[end] else None,
            "difference": ci["difference"], "last-3 difference": last_diff,
            "wobble": max(wobbles) if wobbles else None,
            "ci low": ci["low"], "ci high": ci["high"], "verdict": verdict,
        })
    df = pd.DataFrame(rows)
    for col in ("n from", "n to"):
        df[col] = df[col].astype("Int64")
    for col in ("mean from", "mean to", "difference", "last-3 difference", "wobble", "ci low",
                "ci high"):
        # Python's round, as `summary` rounds: pandas' rounds 65.265 to 65.26, Python's to 65.27.
        df[col] = pd.array([None if v is None or pd.isna(v) else round(float(v), 2)
                            for v in df[col]], dtype="Float64")
    return df


def describe_step(row) -> str:
    """One plain sentence for a row of `steps`."""
    step, n = row["step"], f"n = {row['n from']} and {row['n to']}"
    if row["verdict"] == "not measured":
        missing = [_label(row[side]) for side in ("from", "to") if row[f"n {side}"] == 0]
        return f"{step}: not measured (no finished {' or '.join(missing)} run)."
    head = f"{step}: {row['difference']:+.2f} points"
    if row["verdict"] == "one seed":
        relation = "within" if abs(row["difference"]) <= row["wobble"] else "larger than"
        return (f"{head} ({n}, no interval; last-3-epoch means {row['last-3 difference']:+.2f}): "
                f"with one seed on {'a side' if max(row['n from'], row['n to']) > 1 else 'each side'}"
                f" no interval can separate the step; the difference is {relation} the "
                f"largest one-epoch change of these runs over their last {WOBBLE_EPOCHS} epochs "
                f"({row['wobble']:.2f}).")
    interval = f"95 % CI {row['ci low']:+.1f} to {row['ci high']:+.1f}, Welch t, {n}"
    if row["verdict"] == "real":
        sizes = sorted({int(row["n from"]), int(row["n to"])})
        return f"{head} ({interval}): real at n = {' and '.join(map(str, sizes))}."
    return f"{head} ({interval}): within the noise."


def step_sentences(results_dir, protocol: str = "paper", pairs=REPORT_STEPS) -> list[str]:
    """`describe_step` for every row of `steps(results_dir, protocol, pairs)`."""
    return [describe_step(row) for _, row in steps(results_dir, protocol, pairs).iterrows()]


# ---------------------------------------------------------------- the best run


def best_run(results_dir, dataset: str = "cifar10", names=experiments.REPORT) -> pathlib.Path:
    """The run folder with the highest top-1 on `dataset`, over every protocol and seed.

    Only runs of `names` (default: the report's experiments) count; run
    folders of other or unregistered experiments, and runs evaluated on a
    hold-out, are skipped.

    Raises:
        FileNotFoundError: no finished run of `dataset` in `results_dir`.
    """
    runs = []
    for metrics_file in pathlib.Path(results_dir).glob("*/metrics.json"):
        metrics = json.loads(metrics_file.read_text())
        name = metrics.get("experiment")
        if name not in names or "top1" not in metrics:
            continue
        if metrics.get("evaluation", "test") != "test":
            continue  # a hold-out figure is not comparable with test-split ones
        try:
            run_dataset = experiments.get(name).dataset
        except ValueError:  # listed in `names` but no longer registered
            continue
        if run_dataset == dataset:
            runs.append((metrics["top1"], metrics_file.parent))
    if not runs:
        raise FileNotFoundError(f"No finished {dataset} run in {results_dir}.")
    return max(runs)[1]
