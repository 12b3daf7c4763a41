"""Source of notebooks/06_results.ipynb (`python tools/make_notebooks.py 06_results`)."""

# %% [markdown]
# # Results: the report's Table 1 beside this project's runs
#
# Reads every run folder in `RESULTS_DIR` (the committed record of the study) and sets the
# measured top-1 next to the report's, with the seeds, epochs, seconds per epoch, hardware and
# data of each run. A run that has not been made is shown as missing (`<NA>`), never filled
# in. Every number in the prose below is computed from the tables it follows.

# %% [setup]

# %% [markdown]
# ## Parameters
#
# `FIGURES_DIR = None` shows the figures only; the study passes `"../figures"` to save them.
# `SMOKE = True` (or `SQUEEZE_KERAS_SMOKE=1`) saves them into a temporary folder.

# %% tags=["parameters"]
RESULTS_DIR = "../results"
FIGURES_DIR = None
SMOKE = False

# %%
import pathlib

import pandas as pd

from squeeze_keras import experiments, format_table2, notebook, results, table2
from squeeze_keras.plots import plot_validation_curves

if notebook.smoke_requested(SMOKE):
    FIGURES_DIR = notebook.scratch_dir()  # smoke runs never write into figures/
figures = None if FIGURES_DIR is None else pathlib.Path(FIGURES_DIR)
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", None)
print(f"runs from {RESULTS_DIR}; figures {'shown only' if figures is None else 'saved too'}")
print("this machine:", notebook.hardware())

# %% [markdown]
# ## Table 1
#
# Final-epoch top-1 on the CIFAR test split after 20 epochs. `paper` is the report's training
# setting (Adam, constant learning rate 1e-4, batch 64); `paper n` is the number of seeds,
# `last-3 mean` the mean of each run's last three epochs (a lower-noise companion);
# `tuned2` is the best training recipe of this project (AdamW, warm-up and cosine decay,
# label smoothing), run for E4.

# %%
table = results.table1(RESULTS_DIR)
table

# %% [markdown]
# The rarely used columns, one row per experiment, protocol and machine: the seconds per epoch
# and hardware belong to the runs of that row only. Two machines made the runs, a 2-core CPU
# and an H100 GPU, a few hundred times apart in speed.

# %%
results.table1_details(RESULTS_DIR)

# %% [markdown]
# ## Ordering
#
# Does the report's order, baseline < E1 < E2 < E3 < E4, hold under the `paper` protocol?

# %%
paper = results.summary(RESULTS_DIR)
paper = paper[(paper["protocol"] == "paper") & paper["mean"].notna()]
paper = paper[paper["run"].map(lambda name: experiments.get(name).dataset == "cifar10")]
chain = " < ".join(f"{row.run} {row.mean:.2f}" for row in paper.itertuples())
in_order = paper["mean"].is_monotonic_increasing
print(f"{'holds' if in_order else 'does not hold'}: {chain}" if chain else "no runs yet")

# %% [markdown]
# ## Which differences are within run-to-run noise
#
# Each of the report's steps as a difference of seed means. E3 and E4 are both children of E2,
# not a chain. With two or more seeds a step gets a 95 % Welch interval; with one seed per run
# the only yardstick is how much a single run's test accuracy moves from one epoch to the next.

# %%
steps = results.steps(RESULTS_DIR)
print("\n".join(results.step_sentences(RESULTS_DIR)))
steps

# %% [markdown]
# ## Why the numbers differ from the report
#
# The report does not state its optimiser, learning rate or batch size. The `paper` protocol
# (Adam, constant 1e-4) is gentle: it suits the small-feature-map baseline, which overfits,
# and under-trains the models with large feature maps, whose test accuracy is still rising at
# epoch 20. So the spread is compressed at both ends: the baseline beats the report and E4
# trails it. The same E4 architecture trained with the `tuned` and `tuned2` recipes shows how
# much of the gap is the training recipe rather than the model. Ruled out while building the
# project (docs/results.md): the backend and precision (TensorFlow float32 on the CPU and
# JAX bfloat16 on the H100 give the same first epochs within a point), the initialisation
# (torchvision's) and the data (the JPEG copy of CIFAR-10 used offline costs about a point).

# %%
for _, row in paper.iterrows():
    first = next(iter(results.seed_runs(RESULTS_DIR, row["run"]).values()))
    train_top1 = 100 * first.history["accuracy"].iloc[-1]
    print(f"{row['run']}: {row['mean']:.2f} vs report {row['report top-1']:.2f} "
          f"({row['difference']:+.2f} points); training accuracy at the last epoch "
          f"{train_top1:.1f} %")
e4 = results.summary(RESULTS_DIR, names=["e4"])
for row in e4[e4["mean"].notna()].itertuples():
    print(f"E4 under {row.protocol}: {row.mean:.2f} ({row.difference:+.2f} against the report)")

# %% [markdown]
# ## E5 and the hold-out calibration
#
# No copy of CIFAR-100's test split was available offline, so E5 is trained on 400 of each
# class's 500 training images and evaluated on the other 100 (`evaluated on` in Table 1). How
# far such a figure sits from a test-split figure is measured on CIFAR-10, where both exist:
# E4 trained the same way (`--holdout 1000`: 40,000 training images, 10,000 held out) is
# evaluated on its hold-out and on the official test split, beside the official-split E4 run.

# %%
print("\n".join(results.holdout_lines(RESULTS_DIR)))
results.calibration(RESULTS_DIR)

# %% [markdown]
# ## Table 2: the best model of the report (E4)

# %%
# NBVAL_CHECK_OUTPUT
e4_model = experiments.get("e4").build_model()
print(format_table2(table2(e4_model)))
print(f"\nparameters: {e4_model.count_params():,}")

# %% [markdown]
# ## Validation accuracy of every run (`paper` protocol)

# %%
histories = results.seed_histories(RESULTS_DIR)
if histories:
    plot_validation_curves(histories, "validation top-1 of the report's experiments",
                           figures / "validation_curves.png" if figures else None,
                           protocol="paper")
else:
    print("no finished runs yet")

# %% [markdown]
# ## E4 under each training protocol
#
# The same architecture (727,594 parameters) trained with `paper`, `tuned` and `tuned2`;
# training accuracy dashed, so under-fitting shows.

# %%
e4_histories = results.protocol_histories(RESULTS_DIR, "e4")
if e4_histories:
    plot_validation_curves(e4_histories, "E4 on CIFAR-10, each protocol",
                           figures / "e4_protocols.png" if figures else None, training=True)
else:
    print("no finished E4 runs yet")
