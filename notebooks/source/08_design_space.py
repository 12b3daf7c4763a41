"""Source of notebooks/08_design_space.ipynb (`python tools/make_notebooks.py 08_design_space`)."""

# %% [markdown]
# # The SqueezeNet design space on CIFAR-10
#
# The report ends where the SqueezeNet paper's own exploration starts (Iandola et al. 2016,
# sections 5 and 6): the squeeze ratio (SR, squeeze filters per expand filter), the share of
# 3x3 filters in the expand layers (pct3x3), simple and complex bypass connections, and
# SqueezeNet 1.1. Here each is a variant of E4 (or, for 1.1, of the baseline) in
# `squeeze_keras.experiments.DESIGN_SPACE`, trained for 20 epochs under the `tuned2` protocol
# (under `paper` every model from E2 on is still learning at epoch 20, so a comparison there
# would measure how fast a variant learns, not what it reaches) and set against its parameter
# count. E4 itself under `tuned2` (80.19 %, seed 0) is committed; the variants wait in the
# study's queue (`queue.txt`, below).

# %% [setup]

# %% [markdown]
# ## Parameters
#
# With the defaults nothing is trained: the notebook shows the parameter count of every
# variant and the committed runs in `RESULTS_DIR`, and names the runs still missing.
# `TRAIN = True` trains every variant for each of `SEEDS` into `RUNS_DIR` (minutes each on a
# GPU, hours on a 2-core CPU; finished runs are reused). The study makes them one at a time
# with `python -m squeeze_keras queue queue.txt --data <CIFAR-10>`, which resumes across
# sittings. `SMOKE = True` (or `SQUEEZE_KERAS_SMOKE=1`) trains two variants
# for one epoch on synthetic data in a temporary folder, to exercise the plots.

# %% tags=["parameters"]
TRAIN = False
SEEDS = (0,)
EPOCHS = 20
DATA = "tfds"
PROTOCOL = "tuned2"
RUNS_DIR = "../runs"
RESULTS_DIR = "../results"
FIGURES_DIR = None
SMOKE = False

# %%
import pathlib

import matplotlib.pyplot as plt
import pandas as pd

from squeeze_keras import experiments, notebook, results
from squeeze_keras.train import run_seeds

VARIANTS = ("e4", *experiments.DESIGN_SPACE)  # E4: the reference point of both sweeps
limit, to_train = None, VARIANTS if TRAIN else ()
if notebook.smoke_requested(SMOKE):
    scratch = notebook.scratch_dir()  # never runs/, results/ or figures/
    RUNS_DIR, FIGURES_DIR, DATA, EPOCHS = scratch / "runs", scratch / "figures", "synthetic", 1
    SEEDS, limit, to_train = (0,), notebook.SMOKE_LIMIT, ("e4_sr250", "e4_pct25")
runs_from = RUNS_DIR if to_train else RESULTS_DIR
figures = None if FIGURES_DIR is None else pathlib.Path(FIGURES_DIR)
pd.set_option("display.width", 160)
pd.set_option("display.max_columns", None)
print(f"{len(VARIANTS)} variants; runs read from {pathlib.Path(runs_from).as_posix() if not limit else 'a temporary folder'}; "
      f"training {'nothing' if not to_train else ', '.join(to_train)}")

# %% [markdown]
# ## Every variant and its parameter count
#
# Counted from the built Keras models (10 classes). The SR sweep changes the squeeze widths
# only; the pct3x3 sweep moves expand filters between 1x1 and 3x3 at a fixed expand width.

# %%
# NBVAL_CHECK_OUTPUT
variants = pd.DataFrame([
    {"variant": name, "change": experiments.get(name).description,
     "params": experiments.get(name).build_model().count_params()}
    for name in VARIANTS
])
print(variants.to_string(index=False))

# %% [markdown]
# ## Training (only with `TRAIN = True`, or in smoke mode)

# %%
for name in to_train:
    run_seeds(name, SEEDS, epochs=EPOCHS, data=DATA, out_dir=RUNS_DIR, protocol=PROTOCOL,
              limit=limit, verbose=0 if limit else 2)
found = {name: results.seed_runs(runs_from, name, PROTOCOL) for name in VARIANTS}
missing = [name for name, seeds in found.items() if len(seeds) < len(SEEDS)]
FIRST_ROUND = ("v1_1", "e4_bypass", "e4_bn", "e4_pct25", "e4_pct75", "e4_sr250")
if missing:
    left = [name for name in FIRST_ROUND if name in missing]
    print(f"Missing {PROTOCOL} runs (fewer than {len(SEEDS)} seed(s) in "
          f"{pathlib.Path(runs_from).as_posix() if not limit else 'the smoke folder'}): "
          f"{', '.join(missing)}.\nThe first round's {len(left)} left ({', '.join(left)}) wait "
          "in the study's queue, queue.txt, ahead of the rest of the sweeps; it gives each run's "
          "cost: 20 epochs each, "
          "40 min to 2.2 h on a 2-core CPU in bfloat16 with AMX, twice that in float32 "
          "(minutes each on a GPU). Make them with "
          "`python -m squeeze_keras queue queue.txt --data <CIFAR-10>`, or TRAIN = True here.")

# %% [markdown]
# ## Table: top-1 per variant, over seeds

# %%
rows = []
for name in VARIANTS:
    top1s = [run.metrics["top1"] for run in found[name].values()]
    rows.append({"variant": name, "params": int(variants.set_index("variant").loc[name, "params"]),
                 "seeds": len(top1s),
                 "mean top-1": round(sum(top1s) / len(top1s), 2) if top1s else None,
                 "per seed": ", ".join(f"{t:.2f}" for t in top1s)})
table = pd.DataFrame(rows)
table

# %% [markdown]
# ## Accuracy against parameter count
#
# One point per seed; variants without a run are ticks on the size axis.

# %%
points = [(name, run.metrics["params"], run.metrics["top1"])
          for name, seeds in found.items() for run in seeds.values()]
fig, ax = plt.subplots(figsize=(8, 4.5))
for name, params, top1 in points:
    ax.scatter(params, top1, color="C0")
    ax.annotate(name, (params, top1), textcoords="offset points", xytext=(4, 3), fontsize=7)
ax.plot(variants["params"], [0] * len(variants), "|", color="grey", transform=ax.get_xaxis_transform(),
        markersize=12, label="variants (parameter count)")
ax.set(xlabel="parameters", ylabel="top-1 (%)", title=f"design space, {PROTOCOL} protocol, "
       f"{EPOCHS} epochs" + ("" if points else ": no runs yet"))
ax.grid(alpha=0.3)
ax.legend(fontsize=8)
fig.tight_layout()
if figures and points:
    figures.mkdir(parents=True, exist_ok=True)
    fig.savefig(figures / "design_space.png", dpi=120)

# %% [markdown]
# ## The paper's Fig. 3: squeeze ratio and share of 3x3 filters
#
# Top-1 per seed against SR (left) and pct3x3 (right), each sweep on E4's layout; E4 itself is
# the point SR 0.125, pct3x3 0.5 of both. The parameter count of each point is written beside
# the axis.

# %%
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
for ax, (label, sweep) in zip(axes, (("squeeze ratio (SR)", experiments.SR_SWEEP),
                                     ("share of 3x3 expand filters (pct3x3)",
                                      experiments.PCT3X3_SWEEP))):
    for value, name in sweep.items():
        for run in found[name].values():
            ax.scatter(value, run.metrics["top1"], color="C0")
        params = int(variants.set_index("variant").loc[name, "params"])
        ax.annotate(f"{params / 1e6:.2f}M", (value, 0), xycoords=("data", "axes fraction"),
                    textcoords="offset points", xytext=(0, 4), ha="center", fontsize=7)
    ax.set(xlabel=label, ylabel="top-1 (%)", xticks=list(sweep))
    ax.grid(alpha=0.3)
fig.suptitle(f"SqueezeNet paper Fig. 3 on CIFAR-10 ({PROTOCOL} protocol, {EPOCHS} epochs)"
             + ("" if points else ": no runs yet"))
fig.tight_layout()
if figures and points:
    fig.savefig(figures / "design_space_sweeps.png", dpi=120)
