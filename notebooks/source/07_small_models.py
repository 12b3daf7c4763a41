"""Source of notebooks/07_small_models.ipynb (`python tools/make_notebooks.py 07_small_models`)."""

# %% [markdown]
# # Small models: what SqueezeNet is for
#
# SqueezeNet was designed to be small: AlexNet-level ImageNet accuracy in 4.8 MB, and 0.47 MB
# after Deep Compression (pruning, trained quantization, Huffman coding). This notebook
# measures the same path for a trained CIFAR model of this project: LiteRT (TFLite) export in
# four forms (float32, float16, dynamic-range int8, full-integer int8), then magnitude pruning
# with fine-tuning and the int8 export of the pruned model. Each form is measured for bytes on
# disk, bytes after gzip (a stand-in for Huffman coding), top-1 on the test split computed by
# the LiteRT interpreter itself, and batch-1 CPU latency.

# %% [setup]

# %% [markdown]
# ## Parameters
#
# With the defaults this notebook computes nothing: it reads the committed measurements of the
# best run in `RESULTS_DIR` (`litert/litert.csv` and `pruned*/litert/litert.csv` of the run
# folder). `TRAIN = True` makes the measurements that are missing or stale (export, pruning
# with `SPARSITY` and `PRUNE_EPOCHS` fine-tuning epochs on `DATA`, export again) in that run
# folder. `RUN` is a run folder, or `"best"` for the finished CIFAR-10 run with the highest
# top-1. `SMOKE = True` trains a throwaway model on synthetic data in a temporary folder and
# measures that instead.

# %% tags=["parameters"]
RUN = "best"
RESULTS_DIR = "../results"
TRAIN = False
DATA = "tfds"
SPARSITY = 0.6
PRUNE_EPOCHS = 6
FIGURES_DIR = None
SMOKE = False

# %%
import pathlib

import pandas as pd

from squeeze_keras import notebook, results, runs, smallmodels
from squeeze_keras.plots import plot_size_vs_accuracy

pd.set_option("display.width", 160)
pd.set_option("display.max_columns", None)
limits = {}
if notebook.smoke_requested(SMOKE):
    smoke = notebook.settings("e1", smoke=True)  # a throwaway model in a temporary folder
    run_dir, DATA, FIGURES_DIR = smoke.run(verbose=0).run_dir, "synthetic", smoke.figures_dir
    TRAIN, PRUNE_EPOCHS = True, 1
    limits = dict(limit=notebook.SMOKE_LIMIT, representative=16, latency_runs=5)
elif RUN == "best":
    run_dir = results.best_run(RESULTS_DIR)
else:
    run_dir = pathlib.Path(RUN)
metrics = runs.load_run(run_dir).metrics
print(f"run: {run_dir.name}, {metrics['description']} ({metrics['protocol']} protocol)")
print(f"float top-1 {metrics['top1']:.2f} %, {metrics['params']:,} parameters, "
      f"{metrics['epochs']} epochs on {metrics['data_source']}")
print("TRAIN = True: measuring what is missing" if TRAIN else
      "TRAIN = False: the committed measurements of this run")
print("this machine:", notebook.hardware())

# %% [markdown]
# ## Export, prune, export again
#
# `smallmodels.compress_run` does all three, reusing each step whose output exists and was made
# from the current model. The pruning keeps conv1 and conv10 dense and raises the sparsity of
# every Fire kernel along a cubic schedule during fine-tuning (`squeeze_keras.prune`). The
# full-integer model is calibrated on train images and takes and gives uint8. Without `TRAIN`,
# `smallmodels.size_table` reads the committed tables.

# %%
if TRAIN:
    table = smallmodels.compress_run(run_dir, data=DATA, sparsity=SPARSITY,
                                     prune_epochs=PRUNE_EPOCHS, **limits)
else:
    table = smallmodels.size_table(run_dir)
table

# %% [markdown]
# ## The bars
#
# Dense full-integer int8 under 850,000 bytes and within 1 point of the float model; pruned +
# int8 + gzip under 500,000 bytes (the paper's 0.47 MB) within 1.5 points.

# %%
smallmodels.check_bars(table)

# %% [markdown]
# ## Accuracy against size
#
# The reference lines are sizes of ImageNet models from the SqueezeNet paper, for scale: their
# accuracies are on another task and are not comparable with these CIFAR numbers.
# `FIGURES_DIR = None` shows the figure only (the study saves it as
# `figures/small_models.png`).

# %%
figure_path = None if FIGURES_DIR is None else pathlib.Path(FIGURES_DIR) / "small_models.png"
fig = plot_size_vs_accuracy(table, f"{run_dir.name}: top-1 vs compressed size", figure_path)
