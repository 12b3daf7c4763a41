"""Template of the experiment notebooks 00-05 (`tools/make_notebooks.py` fills it in).

Each notebook is this file with its header (`<stem>.md`) in front and its
experiment in the `EXPERIMENT = ...` line. Run as a script from notebooks/
(`python source/experiment.py`) it is the E4 notebook without its set-up cell.
"""

# %% [markdown]
# Runs on a GPU when one is visible (mixed precision), else on the CPU; nothing in the notebook
# changes. Training is `squeeze_keras.train.run_experiment`: Keras `fit` with CSV history, a
# best checkpoint, `BackupAndRestore` (an interrupted run resumes) and `TerminateOnNaN`.

# %% [setup]

# %% [markdown]
# ## Parameters
#
# With these defaults the notebook trains nothing: it shows the runs of this experiment that
# are committed in `RESULTS_DIR` (numbers, curves, hardware, seconds per epoch), which works
# on a fresh clone without internet.
#
# - `TRAIN = True` trains a run of your own (`PROTOCOL`, `SEED`, `EPOCHS`) into `RUNS_DIR`,
#   `../runs/<experiment>[_<protocol>][_seed<k>]`, a folder that git ignores; the committed
#   runs are never touched. Running it again resumes an interrupted run or shows the finished
#   one. `FIGURES_DIR` (default `None`: shown only) is where its curves are saved.
# - `DATA` is `"tfds"` (downloads CIFAR) or the path of an image folder with
#   `train/<class>/*` and `test/<class>/*` (or a `.tar.gz` of one).
# - `PROTOCOL` is `"paper"` (the report's setting) or `"tuned"` / `"tuned2"`
#   (`squeeze_keras.experiments.PROTOCOLS`).
# - `HOLDOUT` (default `None`: evaluate on the test split) holds out that many training images
#   per class (or a fraction, e.g. `0.2`) and evaluates on them instead; needed for an image
#   folder without `test/`. The run goes into `<run>_holdout<N>` and its numbers are labelled
#   with the split; a `test/` folder, if there is one, is evaluated once at the end.
# - `SMOKE = True` (or `SQUEEZE_KERAS_SMOKE=1`) trains one epoch on a few batches of synthetic
#   data in a temporary folder: a check that everything runs, not a result.

# %% tags=["parameters"]
EXPERIMENT = "e4"
TRAIN = False
PROTOCOL = "paper"
SEED = 0
EPOCHS = 20
DATA = "tfds"
HOLDOUT = None
RUNS_DIR = "../runs"
RESULTS_DIR = "../results"
FIGURES_DIR = None
SMOKE = False

# %%
from IPython.display import display

from squeeze_keras import format_table2, notebook, table2
from squeeze_keras.plots import plot_history, plot_validation_curves

run = notebook.settings(EXPERIMENT, train=TRAIN, protocol=PROTOCOL, seed=SEED, epochs=EPOCHS,
                        data=DATA, holdout=HOLDOUT, runs_dir=RUNS_DIR, figures_dir=FIGURES_DIR,
                        smoke=SMOKE)
print(run)
print("this machine:", notebook.hardware())

# %% [markdown]
# ## The experiment's configuration
#
# The frozen config from `squeeze_keras.experiments`: what this run changes relative to its
# parent is exactly what differs here.

# %%
# NBVAL_CHECK_OUTPUT
config = run.config
print(config.description)
print(f"dataset: {config.dataset}, preprocessing: {config.preprocessing}")
print(config.protocol)
print(config.model)

# %% [markdown]
# ## Architecture (the report's Table 2 layout)
#
# Output size, kernel/stride/padding and Fire widths of each stage, with the parameter count
# set beside the report's.

# %%
# NBVAL_CHECK_OUTPUT
model = config.build_model()
print(format_table2(table2(model)))
print(f"\nparameters: {model.count_params():,} (report: {config.report_params:,})")

# %% [markdown]
# ## Training a run of your own
#
# Only with `TRAIN = True` (or in smoke mode): Keras `fit` prints one line per epoch. A
# finished run with the same settings in `RUNS_DIR` is shown as it is; one with other settings
# is refused with the fields that differ.

# %%
result = run.run() if run.train else None
if result is None:
    print(run.how_to_train())
else:
    display(result.history.round(4))

# %%
if result is not None:
    plot_history(result.history, f"{config.name}: {config.description}", run.figure_path,
                 report_top1=config.report_top1, protocol=config.protocol.name, seed=run.seed,
                 evaluation=run.evaluation)
    print(notebook.result_line(result.metrics))

# %% [markdown]
# ## The committed runs
#
# Every run of this experiment in `RESULTS_DIR` (the one just trained included, when
# `RUNS_DIR` is `RESULTS_DIR`): each protocol and seed, with the machine it
# ran on and its median seconds per epoch (test evaluation included). The machines differ by
# a factor of a few hundred, so the seconds compare runs on the same hardware only. Top-1 is
# that of the last epoch on the split in `evaluated on`: the test split, as in the report, or a
# hold-out of the training images.

# %%
committed = notebook.committed_runs(EXPERIMENT, RESULTS_DIR)
print(notebook.committed_summary(config, committed, RESULTS_DIR))
if committed:
    display(notebook.runs_table(committed))

# %% [markdown]
# ## Hold-out figures beside the test split
#
# A run evaluated on a hold-out of its training images (E5, and E4's calibration run) does not
# give a test-split figure. Where this experiment has such a run, this cell sets E5's figures
# beside the calibration measured on CIFAR-10: E4 trained by the same rule, evaluated on its
# hold-out and on the test split, and the official-split E4 run. Otherwise it prints nothing.

# %%
notebook.holdout_beside(committed, RESULTS_DIR)

# %% [markdown]
# ## Their training and validation curves (the report's appendix)
#
# Validation is the test split, as in the report (or the hold-out, for a hold-out run); the
# dotted line is the report's top-1.

# %%
for committed_run in committed.values():
    plot_history(committed_run.history, f"{config.name}: {config.description}",
                 report_top1=config.report_top1, protocol=committed_run.metrics["protocol"],
                 seed=committed_run.metrics.get("seed", 0),
                 evaluation=committed_run.metrics.get("evaluation", "test"))
if len(committed) > 1:
    plot_validation_curves(notebook.histories_by_protocol(committed),
                           f"{config.name}: every committed run", training=True)

# %% [markdown]
# All runs side by side: `06_results.ipynb`.
