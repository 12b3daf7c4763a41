"""Table 1 over seeds, the report's steps with Welch intervals and the best run, read from runs."""

import dataclasses
import json
import math
import pathlib

import pandas as pd
import pytest

from squeeze_keras import experiments, results, runs

COMMITTED = pathlib.Path(__file__).resolve().parents[1] / "results"


def fake_run(results_dir, experiment, top1, protocol="paper", seed=0, hardware="test machine",
             seconds=100.0, last=None, folder=None):
    """A finished run folder in the committed format; the test curve rises to `top1` (%)."""
    if folder is None:
        config = experiments.get(experiment).with_protocol(protocol)
        run_dir = runs.run_dir_for(config, results_dir, seed)
        run_dir.mkdir(parents=True)
        (run_dir / "config.json").write_text(json.dumps(
            {"experiment": dataclasses.asdict(config), "epochs": 5, "seed": seed,
             "source": "synthetic", "limit": None}))
    else:  # a folder of an experiment the registry does not know
        run_dir = results_dir / folder
        run_dir.mkdir(parents=True)
    val = [top1 - 8, top1 - 6, *(last or [top1 - 1, top1 - 2]), top1]
    pd.DataFrame({"epoch": range(5), "accuracy": [v / 100 + 0.05 for v in val],
                  "loss": 1.0, "val_accuracy": [v / 100 for v in val], "val_loss": 1.1}).to_csv(
        run_dir / "history.csv", index=False)
    metrics = {"experiment": experiment, "protocol": protocol, "dataset": "cifar10", "epochs": 5,
               "top1": top1, "top5": 95.0, "seconds_per_epoch": seconds, "precision": "float32",
               "hardware": hardware, "seed": seed, "data_source": "synthetic"}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


# ---------------------------------------------------------------- the Student-t quantile


@pytest.mark.parametrize("df, expected", [(2, 4.302653), (4, 2.776445), (30, 2.042272),
                                          (1e6, 1.959964), (math.inf, 1.959964)])
def test_t_quantile_matches_tables(df, expected):
    assert results.t_quantile(0.975, df) == pytest.approx(expected, abs=5e-6)
    assert results.t_quantile(0.025, df) == pytest.approx(-expected, abs=5e-6)


def test_t_quantile_refuses_impossible_arguments():
    with pytest.raises(ValueError, match="`p` must be in"):
        results.t_quantile(1.0, 3)
    with pytest.raises(ValueError, match="`df` must be positive"):
        results.t_quantile(0.975, 0)


def test_welch_interval_equals_the_pooled_one_for_equal_spreads():
    # Equal n and variance: Welch-Satterthwaite gives df = 2 (n - 1) = 4.
    ci = results.welch_interval([60.0, 61.0, 62.0], [62.0, 63.0, 64.0])
    half = 2.776445 * math.sqrt(2 / 3)
    assert ci["difference"] == pytest.approx(2.0) and ci["df"] == pytest.approx(4.0)
    assert (ci["low"], ci["high"]) == pytest.approx((2.0 - half, 2.0 + half), abs=1e-5)


def test_welch_interval_is_undefined_below_two_values_a_side():
    assert results.welch_interval([60.0], [62.0, 63.0]) == {
        "difference": pytest.approx(2.5), "low": None, "high": None, "df": None}
    assert results.welch_interval([], [62.0])["difference"] is None


# ---------------------------------------------------------------- Table 1


def test_table1_summarises_seeds_beside_the_report_and_leaves_missing_runs_missing(tmp_path):
    for seed, top1 in enumerate([67.0, 66.0, 68.0]):
        fake_run(tmp_path, "e4", top1, seed=seed)
    fake_run(tmp_path, "e1", 60.0)
    fake_run(tmp_path, "e4", 82.5, protocol="tuned2")
    table = results.table1(tmp_path).set_index("run")
    e4, e1 = table.loc["e4"], table.loc["e1"]
    assert (e4["paper n"], e4["paper mean"], e4["paper min-max"]) == (3, 67.0, "66.00-68.00")
    assert e4["paper sd"] == pytest.approx(1.0)
    assert e4["mean - report"] == pytest.approx(67.0 - 72.05)
    assert e4["tuned2 mean (n)"] == "82.50 (1)"
    assert e1["paper n"] == 1 and e1["paper mean"] == 60.0 and pd.isna(e1["paper sd"])
    assert table.loc["e2", "paper n"] == 0
    for col in ("paper mean", "paper sd", "paper min-max", "mean - report", "tuned2 mean (n)"):
        assert pd.isna(table.loc["e2", col])
    assert table.loc["e3", "params"] == 715_162
    assert list(table.index) == list(experiments.REPORT)


def test_table1_has_a_last_three_epochs_companion_column(tmp_path):
    fake_run(tmp_path, "e1", 60.0, last=[57.0, 57.5])  # last three epochs 57.0, 57.5, 60.0
    fake_run(tmp_path, "e1", 62.0, seed=1, last=[58.0, 58.5])  # 58.0, 58.5, 62.0
    row = results.table1(tmp_path).set_index("run").loc["e1"]
    assert row["paper mean"] == 61.0
    assert row["paper last-3 mean"] == pytest.approx((57.0 + 57.5 + 60 + 58 + 58.5 + 62) / 6,
                                                     abs=0.005)


def test_table1_details_give_hardware_and_speed_of_each_protocols_own_runs(tmp_path):
    fake_run(tmp_path, "e4", 67.0, hardware="GPU", seconds=4.0)
    fake_run(tmp_path, "e4", 66.0, seed=1, hardware="GPU", seconds=5.0)
    fake_run(tmp_path, "e4", 68.0, seed=2, hardware="CPU", seconds=170.0)
    fake_run(tmp_path, "e4", 80.0, protocol="tuned2", hardware="CPU", seconds=1029.0)
    details = results.table1_details(tmp_path)
    e4 = details[details["run"] == "e4"].set_index(["protocol", "seeds"])
    assert e4.loc[("paper", "0, 1"), ["hardware", "s/epoch", "mean"]].tolist() == ["GPU", 4.5, 66.5]
    assert e4.loc[("paper", "2"), ["hardware", "s/epoch"]].tolist() == ["CPU", 170.0]
    assert e4.loc[("tuned2", "0"), ["hardware", "s/epoch"]].tolist() == ["CPU", 1029.0]
    e2 = details[details["run"] == "e2"].iloc[0]  # not run: one paper row, all missing
    assert e2["protocol"] == "paper" and pd.isna(e2["hardware"]) and pd.isna(e2["s/epoch"])
    assert e2["params"] == 727_594 and e2["report params"] == 727_594


def committed_top1(run_glob):
    """Final top-1 of the committed run folders matching `run_glob`, read straight from disk."""
    return [json.loads(f.read_text())["top1"] for f in sorted(COMMITTED.glob(f"{run_glob}/metrics.json"))]


def test_table1_shows_the_committed_runs():
    table = results.table1(COMMITTED).set_index("run")
    baseline = committed_top1("baseline") + committed_top1("baseline_seed*")
    assert table.loc["baseline", "paper n"] == len(baseline)
    assert table.loc["baseline", "paper mean"] == pytest.approx(sum(baseline) / len(baseline), abs=0.01)
    assert table.loc["baseline", "mean - report"] == pytest.approx(
        sum(baseline) / len(baseline) - 46.54, abs=0.01)
    assert table.loc["e4", "tuned2 mean (n)"] == f"{committed_top1('e4_tuned2')[0]:.2f} (1)"
    e5 = json.loads((COMMITTED / "e5_holdout100" / "metrics.json").read_text())
    assert table.loc["e5", ["paper n", "paper mean"]].tolist() == [1, e5["top1"]]
    assert table.loc["e5", "evaluated on"] == e5["evaluation"] == "train hold-out, 100/class"
    # One row per (run, protocol, machine): E4 `paper` seed 0 (H100) is a row of its own.
    details = results.table1_details(COMMITTED).set_index(["run", "protocol", "seeds"])
    tuned2 = json.loads((COMMITTED / "e4_tuned2" / "metrics.json").read_text())
    paper = json.loads((COMMITTED / "e4" / "metrics.json").read_text())
    assert details.loc[("e4", "tuned2", "0"), ["hardware", "s/epoch"]].tolist() == [
        tuned2["hardware"], tuned2["seconds_per_epoch"]]
    assert details.loc[("e4", "paper", "0"), ["hardware", "s/epoch"]].tolist() == [
        paper["hardware"], paper["seconds_per_epoch"]]


# ---------------------------------------------------------------- the report's steps


def test_steps_with_one_seed_give_no_interval_and_say_so(tmp_path):
    fake_run(tmp_path, "e2", 65.5)
    fake_run(tmp_path, "e4", 67.0)
    row = results.steps(tmp_path).set_index("step").loc["E2 -> E4"]
    assert row["difference"] == pytest.approx(1.5) and row["verdict"] == "one seed"
    assert pd.isna(row["ci low"]) and pd.isna(row["ci high"])
    sentence = results.step_sentences(tmp_path)[3]
    assert sentence.startswith("E2 -> E4: +1.50 points (n = 1 and 1, no interval")
    assert "with one seed on each side no interval can separate the step" in sentence


def test_steps_with_seeds_give_a_welch_interval_and_a_verdict(tmp_path):
    for seed in range(3):
        fake_run(tmp_path, "e2", 65.0 + seed, seed=seed)  # 65, 66, 67
        fake_run(tmp_path, "e4", 66.0 + seed, seed=seed)  # 66, 67, 68: +1, within the noise
        fake_run(tmp_path, "e3", 70.0 + seed, seed=seed)  # 70, 71, 72: +5, real
    table = results.steps(tmp_path).set_index("step")
    half = 2.776445 * math.sqrt(2 / 3)
    e4 = table.loc["E2 -> E4"]
    assert (e4["ci low"], e4["ci high"]) == pytest.approx((1 - half, 1 + half), abs=0.01)
    assert e4["verdict"] == "within the noise" and table.loc["E2 -> E3", "verdict"] == "real"
    sentences = results.step_sentences(tmp_path)
    assert sentences[3] == ("E2 -> E4: +1.00 points (95 % CI -1.3 to +3.3, Welch t, "
                            "n = 3 and 3): within the noise.")
    assert sentences[2].endswith("): real at n = 3.")
    assert sentences[0] == "baseline -> E1: not measured (no finished baseline or E1 run)."


def test_steps_on_the_committed_runs_are_differences_of_seed_means():
    table = results.steps(COMMITTED)
    assert list(table["step"]) == ["baseline -> E1", "E1 -> E2", "E2 -> E3", "E2 -> E4", "E3 -> E4"]
    mean = {name: sum(v) / len(v) for name, v in {
        "baseline": committed_top1("baseline") + committed_top1("baseline_seed*"),
        **{e: committed_top1(e) + committed_top1(f"{e}_seed*") for e in ("e1", "e2", "e3", "e4")},
    }.items()}
    expected = [mean["e1"] - mean["baseline"], mean["e2"] - mean["e1"],
                mean["e3"] - mean["e2"], mean["e4"] - mean["e2"], mean["e4"] - mean["e3"]]
    assert table["difference"].tolist() == pytest.approx(expected, abs=0.01)
    # Rounded as Table 1 rounds them: a step's means are the table's, to the last digit.
    table1 = results.table1(COMMITTED).set_index("run")["paper mean"]
    for _, row in table.iterrows():
        assert (row["mean from"], row["mean to"]) == (table1[row["from"]], table1[row["to"]])
    sentences = results.step_sentences(COMMITTED)
    for (_, row), sentence in zip(table.iterrows(), sentences):
        if min(row["n from"], row["n to"]) < 2:  # an interval needs two seeds on each side
            assert row["verdict"] == "one seed" and "no interval can separate" in sentence


# ---------------------------------------------------------------- reading runs


def test_seed_runs_and_histories_collect_every_seed_of_one_protocol(tmp_path):
    fake_run(tmp_path, "e4", 67.0)
    fake_run(tmp_path, "e4", 66.0, seed=1)
    fake_run(tmp_path, "e4", 74.0, protocol="tuned")
    fake_run(tmp_path, "e4", 75.0, protocol="tuned", seed=1)
    fake_run(tmp_path, "e4_bypass", 70.0)  # another experiment whose name starts with e4
    assert list(results.seed_runs(tmp_path, "e4")) == [0, 1]
    assert list(results.seed_runs(tmp_path, "e4", "tuned")) == [0, 1]
    assert {k: list(v) for k, v in results.seed_histories(tmp_path).items()} == {"e4": [0, 1]}
    assert {k: list(v) for k, v in results.protocol_histories(tmp_path, "e4").items()} == {
        "paper": [0, 1], "tuned": [0, 1]}


def test_protocol_and_load_runs_take_seed_0_only(tmp_path):
    fake_run(tmp_path, "e4", 67.0)
    fake_run(tmp_path, "e4", 80.5, protocol="tuned2")
    fake_run(tmp_path, "e4", 66.0, seed=1)  # another seed: not a protocol
    fake_run(tmp_path, "e3", 70.0, protocol="tuned")
    runs_ = results.protocol_runs(tmp_path, "e4")
    assert list(runs_) == ["paper", "tuned2"] and runs_["tuned2"].metrics["top1"] == 80.5
    assert results.protocol_runs(tmp_path, "e2") == {}
    assert list(results.load_runs(tmp_path)) == ["e4"]
    assert list(results.load_runs(tmp_path, "tuned", names=["e3", "e4"])) == ["e3"]


def test_best_run_is_the_highest_report_run_of_the_dataset_and_skips_the_rest(tmp_path):
    with pytest.raises(FileNotFoundError, match="No finished cifar10 run"):
        results.best_run(tmp_path)
    fake_run(tmp_path, "e1", 60.0)
    best = fake_run(tmp_path, "e4", 81.0, protocol="tuned")
    fake_run(tmp_path, "e5", 90.0)  # CIFAR-100: another task
    fake_run(tmp_path, "e4_bn", 95.0)  # design space: not the report's
    fake_run(tmp_path, "v9_future", 99.0, folder="v9_future")  # not registered
    assert results.best_run(tmp_path) == best
    assert results.best_run(tmp_path, "cifar100").name == "e5"
    assert results.table1(tmp_path).set_index("run").loc["e4", "paper n"] == 0


def fake_holdout_run(results_dir, experiment, top1, holdout=100, official=None, seed=0):
    """A finished hold-out run folder (`<run>_holdout<N>`), evaluated on its hold-out."""
    config = experiments.get(experiment)
    folder = runs.run_name(config, seed, holdout)
    run_dir = fake_run(results_dir, experiment, top1, seed=seed, folder=folder)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    metrics.update(evaluation=f"train hold-out, {holdout}/class", train_size=40_000,
                   dataset=config.dataset)
    if official is not None:
        metrics["official_test"] = {"top1": official, "top5": 95.0, "images": 10_000}
    (run_dir / "metrics.json").write_text(json.dumps(metrics))
    return run_dir


def test_holdout_runs_stay_out_of_the_seeds_and_name_their_split_in_table1(tmp_path):
    fake_run(tmp_path, "e4", 67.0)
    fake_holdout_run(tmp_path, "e4", 66.2, holdout=1000, official=65.8)
    fake_holdout_run(tmp_path, "e5", 37.5)
    assert list(results.seed_runs(tmp_path, "e4")) == [0]  # the hold-out run is no seed of e4
    table = results.table1(tmp_path).set_index("run")
    assert table.loc["e4", "paper n"] == 1 and table.loc["e4", "paper mean"] == 67.0
    assert table.loc["e4", "evaluated on"] == "test"
    assert table.loc["e5", "paper mean"] == 37.5 and table.loc["e5", "paper n"] == 1
    assert table.loc["e5", "evaluated on"] == "train hold-out, 100/class"
    details = results.table1_details(tmp_path).set_index(["run", "protocol"])
    assert details.loc[("e5", "paper"), ["seeds", "mean"]].tolist() == ["0", 37.5]
    assert details.loc[("e4", "paper"), "seeds"] == "0"  # the hold-out run is not among them
    assert results.best_run(tmp_path).name == "e4"  # a hold-out figure never wins
    with pytest.raises(FileNotFoundError):
        results.best_run(tmp_path, "cifar100")
    cal = results.calibration(tmp_path).set_index("run")
    assert cal.loc["e4", "official test top-1"] == 67.0
    assert cal.loc["e4_holdout1000", "top-1"] == 66.2
    assert cal.loc["e4_holdout1000", "official test top-1"] == 65.8
    assert cal.loc["e4_holdout1000", "evaluated on"] == "train hold-out, 1000/class"


def test_holdout_lines_and_the_notebooks_calibration_cell(tmp_path, capsys):
    from squeeze_keras import notebook

    fake_run(tmp_path, "e1", 61.0)
    assert results.holdout_lines(tmp_path) == [
        "E5: no finished run yet", "calibration: the E4 hold-out run is not finished yet"]
    e5 = fake_holdout_run(tmp_path, "e5", 37.5)
    metrics = json.loads((e5 / "metrics.json").read_text())
    metrics.update(top5=66.0, coarse_top1=48.25)
    (e5 / "metrics.json").write_text(json.dumps(metrics))
    fake_run(tmp_path, "e4", 67.0)
    fake_holdout_run(tmp_path, "e4", 66.2, holdout=1000, official=65.8)
    assert results.holdout_lines(tmp_path) == [
        "E5 (e5_holdout100, seed 0): top-1 37.50 %, top-5 66.00 %, coarse top-1 48.25 % on the "
        "train hold-out, 100/class (report, official test split: 38.39 %)",
        "e4_holdout1000: 66.20 on its train hold-out, 1000/class, 65.80 on the test split; the "
        "official-split run 67.00: hold-out figure minus official-split run -0.80 points"]
    # The experiment notebooks' cell: E5's runs get the calibration beside them, E1's nothing.
    e5_runs = notebook.committed_runs("e5", tmp_path)
    table = notebook.holdout_beside(e5_runs, tmp_path)
    assert table["run"].tolist() == ["e4", "e4_holdout1000"]
    assert "coarse top-1 48.25 %" in capsys.readouterr().out
    assert notebook.holdout_beside(notebook.committed_runs("e1", tmp_path), tmp_path) is None
    assert capsys.readouterr().out == ""
    # The runs table shows the coarse and official-test columns only where a run has them.
    assert "coarse top-1" in notebook.runs_table(e5_runs).columns
    assert "official test top-1" in notebook.runs_table(notebook.committed_runs("e4", tmp_path))
    e1_table = notebook.runs_table(notebook.committed_runs("e1", tmp_path))
    assert not {"coarse top-1", "official test top-1"} & set(e1_table.columns)


# Pages that show the measured Table 1: the README's summary and the full table of the results page.
TABLE1_PAGES = ("README.md", "docs/results.md")


def table1_rows(page):
    """The rows of the measured Table 1 on `page` (the table whose header has `paper` n), by column."""
    lines = (COMMITTED.parent / page).read_text().splitlines()
    start = next(i for i, line in enumerate(lines)
                 if line.startswith("| run |") and "`paper` n" in line)
    table = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        table.append([cell.strip() for cell in line.strip().strip("|").split("|")])
    header, rows = table[0], table[2:]
    assert {"run", "report top-1", "`paper` n", "`paper` top-1", "difference"} <= set(header), page
    return [dict(zip(header, row, strict=True)) for row in rows]


@pytest.mark.parametrize("page", TABLE1_PAGES)
def test_table1_pages_show_the_committed_runs(page):
    """Each page's measured Table 1 says what results/ holds: a landed run changes it."""
    rows = table1_rows(page)
    table = results.table1(COMMITTED, protocols=("tuned", "tuned2")).set_index("run")
    assert [row["run"] for row in rows] == list(table.index), page
    for row in rows:
        run = row["run"]
        want = table.loc[run]
        shown = (float(row["report top-1"]), int(row["`paper` n"]))
        assert shown == (want["report top-1"], want["paper n"]), run
        assert row["params"] == f"{want['params']:,}", run
        paper = row["`paper` top-1"]
        if want["paper n"] == 0:
            assert paper.startswith(("in training", "not run")), run
            continue
        expected = f"{want['paper mean']:.2f}"
        if want["paper n"] > 1:
            expected += f" (sd {want['paper sd']:.2f}, {want['paper min-max']})"
        assert paper == expected or paper.startswith(expected + " ("), run
        if want["evaluated on"] != "test":
            assert want["evaluated on"] in paper, run  # a hold-out figure names its split
        if "last-3 mean" in row:
            assert row["last-3 mean"] == f"{want['paper last-3 mean']:.2f}", run
        assert row["difference"] == f"{want['mean - report']:+.2f}", run
        for protocol in ("tuned", "tuned2"):
            if f"`{protocol}`" in row:
                shown = want[f"{protocol} mean (n)"]
                cell = row[f"`{protocol}`"].strip("*")
                assert cell == ("" if pd.isna(shown) else shown.split(" (")[0]), (run, protocol)
