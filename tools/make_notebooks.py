"""Writes the notebooks in notebooks/ (without outputs) from one template.

The experiment notebooks differ only in their experiment and prose, so they
are generated here; edit this file, rerun it, then execute the notebooks
(`python -m squeeze_keras study ...`) to refresh their outputs.

    python tools/make_notebooks.py
    python -m squeeze_keras study --smoke        # prints the folder of executed copies
    python tools/make_notebooks.py --checked-outputs-from /tmp/squeeze_keras_study_XXXX

The second form stores the outputs of the `# NBVAL_CHECK_OUTPUT` cells (the
deterministic ones: config and architecture) for notebooks whose experiment
has no real run yet; notebooks with a real run are executed in place by
`study` with the real data instead.
"""

from __future__ import annotations

import argparse
import pathlib

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

REPO = "squeeze-keras/squeeze-keras"
ROOT = pathlib.Path(__file__).resolve().parents[1]

EXPERIMENTS = [
    ("00_baseline", "baseline", "Baseline: SqueezeNet 1.0 as published",
     "The reference point: torchvision's SqueezeNet 1.0 unchanged, a 7x7 stride-2 conv1 and "
     "three 3x3 stride-2 max-pools, with ImageNet-style input normalisation and no augmentation. "
     "Those settings were made for 224x224 ImageNet images; on 32x32 CIFAR images they shrink "
     "the feature map to 13x13 after conv1 and to 1x1 before Fire9, which is why the report "
     "(sections 4.2 and 6) expects this model to do worst."),
    ("01_e1_preprocessing_maxpool", "e1", "E1: CIFAR preprocessing and 2x2 max-pools",
     "Two changes at once (report, section 4.2): CIFAR-style preprocessing (the CIFAR-10 "
     "per-channel mean/std, random 4-pixel-padded crops and horizontal flips on the training "
     "split) and max-pool kernels of 2 instead of 3. Smaller pooling windows keep more of a "
     "small image's spatial detail; the parameter count does not change."),
    ("02_e2_conv_kernel", "e2", "E2: conv1 kernel 7 -> 2",
     "E1 with a 2x2 first convolution (stride 1, padding 1, as the report's Table 2 lists it) "
     "instead of 7x7 stride 2. The first layer no longer throws away three quarters of the "
     "pixels, so every later stage sees larger feature maps; conv1 shrinks from 14,208 to "
     "1,248 parameters."),
    ("03_e3_fire3_dropout", "e3", "E3: Fire3 removed, dropout 0.5 -> 0.3",
     "E2 without the Fire3 module, and with dropout before conv10 lowered from 0.5 to 0.3 "
     "(report, section 4.2). A shallower network with less regularisation. The report prints "
     "715,169 parameters; removing Fire3's 12,432 from E2 leaves 715,162, which is what the "
     "model below has (a typo of 7 in the report)."),
    ("04_e4_delayed_downsampling", "e4", "E4: delayed downsampling (maxpool1 removed)",
     "E2 with the max-pool after conv1 removed, so Fire2-Fire4 work on 33x33 maps and the "
     "first downsampling happens after Fire4: the layout of the report's Table 2, its best "
     "CIFAR-10 model. Fire3 stays (Table 2 lists it and the parameter count, 727,594, needs "
     "it) and so does E2's dropout of 0.5, since the report names only the pooling change. "
     "The larger maps make it several times slower to train than E2."),
    ("05_e5_cifar100", "e5", "E5: the best model (E4) on CIFAR-100",
     "The E4 architecture trained on CIFAR-100: the same layers with a 100-way conv10, which "
     "adds 46,170 parameters. With ten times the classes and a tenth of the images per class, "
     "the report (section 6) sees accuracy drop sharply. No CIFAR-100 copy exists on the "
     "offline machines this project was built on, so CIFAR-100 runs need tfds and internet."),
]


def colab_badge(name: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{REPO}/blob/main/notebooks/{name}.ipynb)")


COLAB_SETUP = f"""# In Colab: fetch the project and install it (elsewhere: `pip install -e .` in the repo).
import sys

if "google.colab" in sys.modules:
    !git clone -q https://github.com/{REPO}
    %cd squeeze-keras/notebooks
    !pip install -q -e .."""


def checked(source: str) -> str:
    return "# NBVAL_CHECK_OUTPUT\n" + source


def experiment_notebook(stem, name, title, about):
    cells = [
        new_markdown_cell(
            f"# {title}\n\n{colab_badge(stem)}\n\n{about}\n\n"
            "Runs on a GPU when one is visible (mixed float16), else on the CPU; nothing in "
            "the notebook changes. The training itself is `squeeze_keras.train.run_experiment`: "
            "Keras `fit` with CSV history, best-checkpoint, `BackupAndRestore` (an interrupted "
            "run resumes) and `TerminateOnNaN` callbacks. A finished run in the results folder "
            "is loaded instead of trained again."),
        new_code_cell(COLAB_SETUP),
        new_markdown_cell(
            "## Parameters\n\n`DATA` is `\"tfds\"` (downloads CIFAR), or the path of an image "
            "folder with `train/<class>/*` and `test/<class>/*` (or a `.tar.gz` of one). "
            "`SMOKE = True` (or `SQUEEZE_KERAS_SMOKE=1`) trains one epoch on a few batches of "
            "synthetic data in a temporary folder: a check that everything runs, not a result. "
            "`PROTOCOL` is `\"paper\"` (the report's setting) or another protocol of "
            "`squeeze_keras.experiments.PROTOCOLS` (`\"tuned\"`, `\"tuned2\"`)."),
        new_code_cell(
            f'EXPERIMENT = "{name}"\nEPOCHS = 20\nDATA = "tfds"\nSMOKE = False\nSEED = 0\n'
            'PROTOCOL = "paper"',
            metadata={"tags": ["parameters"]}),
        new_code_cell(
            "from squeeze_keras import format_table2, notebook, table2\n"
            "from squeeze_keras.plots import plot_history\n\n"
            "run = notebook.settings(EXPERIMENT, epochs=EPOCHS, data=DATA, smoke=SMOKE, seed=SEED,\n"
            "                       protocol=PROTOCOL)\n"
            "print(run)\n"
            "# A finished run is reloaded, not retrained: the hardware it ran on is printed\n"
            "# with its result at the end.\n"
            "print(\"this machine:\", notebook.hardware())"),
        new_markdown_cell("## The experiment's configuration\n\nThe frozen config from "
                          "`squeeze_keras.experiments`: what this run changes relative to its "
                          "parent is exactly what differs here."),
        new_code_cell(checked(
            "config = run.config\n"
            "print(config.description)\n"
            "print(f\"dataset: {config.dataset}, preprocessing: {config.preprocessing}\")\n"
            "print(config.protocol)\n"
            "print(config.model)")),
        new_markdown_cell("## Architecture (the report's Table 2 layout)\n\nOutput size, "
                          "kernel/stride/padding and Fire widths of each stage, with the "
                          "parameter count set beside the report's."),
        new_code_cell(checked(
            "model = config.build_model()\n"
            "print(format_table2(table2(model)))\n"
            "print(f\"\\nparameters: {model.count_params():,} (report: {config.report_params:,})\")")),
        new_markdown_cell("## Training"),
        new_code_cell("result = run.run()\nresult.history.round(4)"),
        new_markdown_cell("## Training and validation curves (the report's appendix)\n\n"
                          "Validation is the test split, as in the report. The figure is saved "
                          "to `figures/` (a temporary folder in smoke mode)."),
        new_code_cell(
            "fig = plot_history(result.history, f\"{config.name}: {config.description}\",\n"
            "                   run.figure_path, report_top1=config.report_top1)"),
        new_markdown_cell("## Result beside the report"),
        new_code_cell(
            "m = result.metrics\n"
            "print(f\"top-1 {m['top1']:.2f} % (report: {config.report_top1:.2f} %), top-5 {m['top5']:.2f} %\")\n"
            "print(f\"{m['epochs']} epochs, {m['seconds_per_epoch']} s/epoch, {m['precision']}, \"\n"
            "      f\"{m['hardware']}; data: {m['data_source']}\")"),
        new_markdown_cell("All runs side by side: `06_results.ipynb`."),
    ]
    return new_notebook(cells=cells, metadata=KERNEL)


def results_notebook():
    cells = [
        new_markdown_cell(
            f"# Results: the report's Table 1 beside this project's runs\n\n{colab_badge('06_results')}\n\n"
            "Reads every run folder in `results/` and sets the measured top-1 next to the "
            "report's, with epochs, seconds per epoch, hardware and data of each run. A run "
            "that has not been made is shown as missing (`<NA>`), never filled in."),
        new_code_cell(COLAB_SETUP),
        new_code_cell('RESULTS_DIR = "../results"\nFIGURES_DIR = "../figures"\nSMOKE = False',
                      metadata={"tags": ["parameters"]}),
        new_code_cell(
            "import os, tempfile\n\n"
            "import pandas as pd\n\n"
            "from squeeze_keras import experiments, format_table2, notebook, results, table2\n"
            "from squeeze_keras.plots import plot_validation_curves\n\n"
            "if SMOKE or os.environ.get(\"SQUEEZE_KERAS_SMOKE\") == \"1\":\n"
            "    FIGURES_DIR = tempfile.mkdtemp()  # smoke runs never write into figures/\n"
            "pd.set_option(\"display.width\", 200)\n"
            "pd.set_option(\"display.max_columns\", None)\n"
            "print(\"this machine:\", notebook.hardware())"),
        new_markdown_cell("## Table 1"),
        new_code_cell("table = results.table1(RESULTS_DIR)\ntable"),
        new_markdown_cell("## Table 2: the best model of the report (E4)"),
        new_code_cell(checked(
            "e4 = experiments.get(\"e4\").build_model()\n"
            "print(format_table2(table2(e4)))\n"
            "print(f\"\\nparameters: {e4.count_params():,}\")")),
        new_markdown_cell("## Validation accuracy of every run"),
        new_code_cell(
            "runs = results.load_runs(RESULTS_DIR)\n"
            "if runs:\n"
            "    plot_validation_curves({name: r.history for name, r in runs.items()},\n"
            "                           \"validation top-1, paper protocol\",\n"
            "                           os.path.join(FIGURES_DIR, \"validation_curves.png\"))\n"
            "else:\n"
            "    print(\"no finished runs yet\")"),
        new_markdown_cell(
            "## E4 under each training protocol\n\n"
            "The same architecture (727,594 parameters) trained with `paper`, `tuned` and "
            "`tuned2` (see the README); training accuracy dashed, so under-fitting shows."),
        new_code_cell(
            "e4_runs = results.protocol_runs(RESULTS_DIR, \"e4\")\n"
            "if e4_runs:\n"
            "    plot_validation_curves({p: r.history for p, r in e4_runs.items()},\n"
            "                           \"E4 on CIFAR-10, one run per protocol\",\n"
            "                           os.path.join(FIGURES_DIR, \"e4_protocols.png\"), training=True)\n"
            "else:\n"
            "    print(\"no finished E4 runs yet\")"),
    ]
    return new_notebook(cells=cells, metadata=KERNEL)


def small_models_notebook():
    cells = [
        new_markdown_cell(
            f"# Small models: what SqueezeNet is for\n\n{colab_badge('07_small_models')}\n\n"
            "SqueezeNet was designed to be small: AlexNet-level ImageNet accuracy in 4.8 MB, and "
            "0.47 MB after Deep Compression (pruning, trained quantization, Huffman coding). This "
            "notebook measures the same path for a trained CIFAR model of this project: LiteRT "
            "(TFLite) export in four forms (float32, float16, dynamic-range int8, full-integer "
            "int8), then magnitude pruning with fine-tuning and the int8 export of the pruned "
            "model. Each form is measured for bytes on disk, bytes after gzip (a stand-in for "
            "Huffman coding), top-1 on the test split computed by the LiteRT interpreter itself, "
            "and batch-1 CPU latency. Steps whose files exist in the run folder are reused."),
        new_code_cell(COLAB_SETUP),
        new_markdown_cell(
            "## Parameters\n\n`RUN` is a run folder, or `\"best\"` for the finished CIFAR-10 "
            "run with the highest top-1 in `RESULTS_DIR`. `DATA` is where its test split (and "
            "the fine-tuning data) come from, as in the experiment notebooks. `SPARSITY` is the "
            "fraction of Fire-module weights pruned to zero. `SMOKE = True` trains a throwaway "
            "model on synthetic data in a temporary folder and measures that instead."),
        new_code_cell(
            'RUN = "best"\nRESULTS_DIR = "../results"\nFIGURES_DIR = "../figures"\n'
            'DATA = "tfds"\nSPARSITY = 0.6\nPRUNE_EPOCHS = 6\nSMOKE = False',
            metadata={"tags": ["parameters"]}),
        new_code_cell(
            "import json, os, pathlib\n\n"
            "import pandas as pd\n\n"
            "from squeeze_keras import export, notebook, results\n"
            "from squeeze_keras.plots import plot_size_vs_accuracy\n\n"
            "pd.set_option(\"display.width\", 200)\n"
            "pd.set_option(\"display.max_columns\", None)\n"
            "limits = {}\n"
            "if SMOKE or os.environ.get(notebook.SMOKE_ENV) == \"1\":\n"
            "    smoke = notebook.settings(\"e1\", smoke=True)  # a throwaway model, temporary folder\n"
            "    run_dir, DATA, FIGURES_DIR = smoke.run(verbose=0).run_dir, \"synthetic\", smoke.figures_dir\n"
            "    PRUNE_EPOCHS = 1\n"
            "    limits = dict(limit=notebook.SMOKE_LIMIT, representative=16, latency_runs=5)\n"
            "elif RUN == \"best\":\n"
            "    run_dir = results.best_run(RESULTS_DIR)\n"
            "else:\n"
            "    run_dir = pathlib.Path(RUN)\n"
            "metrics = json.loads((run_dir / \"metrics.json\").read_text())\n"
            "print(f\"run: {run_dir.name}, {metrics['description']}\")\n"
            "print(f\"float top-1 {metrics['top1']:.2f} %, {metrics['params']:,} parameters, \"\n"
            "      f\"{metrics['epochs']} epochs on {metrics['data_source']}\")\n"
            "print(\"this machine:\", notebook.hardware())"),
        new_markdown_cell(
            "## Export, prune, export again\n\nOne call: `export.compress_run`. The pruning keeps "
            "conv1 and conv10 dense and raises the sparsity of every Fire kernel along a cubic "
            "schedule during fine-tuning (`squeeze_keras.prune`). The full-integer model is "
            "calibrated on train images and takes and gives uint8."),
        new_code_cell(
            "table = export.compress_run(run_dir, data=DATA, sparsity=SPARSITY,\n"
            "                            prune_epochs=PRUNE_EPOCHS, **limits)\n"
            "table"),
        new_markdown_cell(
            "## The bars\n\nDense full-integer int8 under 850,000 bytes and within 1 point of "
            "the float model; pruned + int8 + gzip under 500,000 bytes (the paper's 0.47 MB) "
            "within 1.5 points."),
        new_code_cell("export.check_bars(table)"),
        new_markdown_cell(
            "## Accuracy against size\n\nThe vertical lines are the sizes of ImageNet models "
            "from the SqueezeNet paper, for scale: their accuracies are on another task and are "
            "not comparable with these CIFAR numbers. Saved to `figures/small_models.png` (a "
            "temporary folder in smoke mode)."),
        new_code_cell(
            "fig = plot_size_vs_accuracy(table, f\"{run_dir.name}: top-1 vs compressed size\",\n"
            "                            pathlib.Path(FIGURES_DIR) / \"small_models.png\")"),
    ]
    return new_notebook(cells=cells, metadata=KERNEL)


KERNEL = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
    "accelerator": "GPU",
    "colab": {"provenance": []},
}


def copy_checked_outputs(notebook, executed_path):
    """Takes the outputs of the `# NBVAL_CHECK_OUTPUT` cells from an executed copy."""
    executed = nbformat.read(executed_path, as_version=4)
    sources = {c.source: c for c in executed.cells if c.cell_type == "code"}
    for cell in notebook.cells:
        if cell.cell_type == "code" and cell.source.startswith("# NBVAL_CHECK_OUTPUT"):
            # Library warnings on stderr are not part of what is checked.
            cell.outputs = [o for o in sources[cell.source].outputs
                            if not (o.output_type == "stream" and o.name == "stderr")]
            cell.execution_count = sources[cell.source].execution_count  # nbval: "was run"
    return notebook


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checked-outputs-from", type=pathlib.Path, default=None,
                        help="folder of executed copies (e.g. from `study --smoke`) whose "
                             "checked cells' outputs to store")
    parser.add_argument("--only", nargs="*", help="notebook stems to write (default: all)")
    args = parser.parse_args(argv)
    out = ROOT / "notebooks"
    out.mkdir(exist_ok=True)
    notebooks = {stem: experiment_notebook(stem, name, title, about)
                 for stem, name, title, about in EXPERIMENTS}
    notebooks["06_results"] = results_notebook()
    notebooks["07_small_models"] = small_models_notebook()
    for stem, notebook in notebooks.items():
        if args.only and stem not in args.only:
            continue
        if args.checked_outputs_from:
            copy_checked_outputs(notebook, args.checked_outputs_from / f"{stem}.ipynb")
        nbformat.write(notebook, out / f"{stem}.ipynb")


if __name__ == "__main__":
    main()
