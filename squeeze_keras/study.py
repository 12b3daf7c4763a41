"""Runs the whole study headless: every notebook in order, executed in place as the record.

`NOTEBOOKS` is the one list of the notebooks (`tools/make_notebooks.py` reads
it too). Each is executed with papermill with `TRAIN = True` (or `False`:
redraw from the committed runs) and the committed folders
(`RUNS_DIR = "../results"`, `FIGURES_DIR = "../figures"`), so its outputs become the record of the run. The executed copy replaces the
notebook atomically, without papermill's `injected-parameters` cell (the
notebook prints the settings it ran with instead) and without absolute paths
in its metadata. `smoke=True` executes copies in a temporary folder in smoke
mode instead, leaving the committed notebooks alone.
"""

from __future__ import annotations

import os
import pathlib
import re
import tempfile
import time

from squeeze_keras.data import NAMED_SOURCES

# {notebook stem: the experiment it trains, or None for the notebooks that read runs}.
NOTEBOOKS = {
    "00_baseline": "baseline",
    "01_e1_preprocessing_maxpool": "e1",
    "02_e2_conv_kernel": "e2",
    "03_e3_fire3_dropout": "e3",
    "04_e4_delayed_downsampling": "e4",
    "05_e5_cifar100": "e5",
    "06_results": None,
    "07_small_models": None,
    "08_design_space": None,
    "09_use_the_model": None,
}
EXPERIMENT_NOTEBOOKS = tuple(stem for stem, name in NOTEBOOKS.items() if name is not None)
RESULTS_NOTEBOOK = "06_results"
SMALL_MODELS_NOTEBOOK = "07_small_models"
DESIGN_SPACE_NOTEBOOK = "08_design_space"
USE_NOTEBOOK = "09_use_the_model"
# Where the study keeps its record, relative to the notebooks folder.
RESULTS_DIR = "../results"
FIGURES_DIR = "../figures"


def scrub_paths(nb, name: str):
    """Replaces the absolute paths papermill records in a notebook's metadata by its name."""
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in meta:
            meta[key] = name
    return nb


def strip_injected_parameters(nb):
    """Removes papermill's `injected-parameters` cells (the notebook prints its settings)."""
    nb.cells = [c for c in nb.cells
                if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    return nb


DATASET_IMAGES = "dataset-images"  # the tag of cells whose pictures are dataset images


def strip_dataset_images(nb):
    """Drops the pictures of cells tagged `dataset-images` (they show CIFAR images, which the
    repository does not redistribute); their text outputs stay."""
    for cell in nb.cells:
        if DATASET_IMAGES in cell.get("metadata", {}).get("tags", []):
            cell.outputs = [o for o in cell.get("outputs", [])
                            if not any(k.startswith("image/") for k in o.get("data", {}))]
    return nb


# TensorFlow's C++ log lines (`E0000 00:00:1796189302.900568 23115 cuda_platform.cc:52] ...`),
# which a kernel prints to stderr whatever Python's logging says.
TF_LOG_LINE = re.compile(r"^(?:[IWEF]\d{4} \d\d:\d\d:\d+\.\d+ +\d+ \S+:\d+\] .*|WARNING: All log "
                         r"messages before absl::InitializeLog\(\) is called.*)\n?", re.M)


def strip_log_noise(nb):
    """Removes TensorFlow's C++ log lines from stderr outputs (and outputs left empty)."""
    for cell in nb.cells:
        outputs = []
        for output in cell.get("outputs", []):
            if output.get("output_type") == "stream" and output.get("name") == "stderr":
                output["text"] = TF_LOG_LINE.sub("", output["text"])
                if not output["text"].strip():
                    continue
            outputs.append(output)
        if cell.cell_type == "code":
            cell.outputs = outputs
    return nb


def finish_notebook(path, name: str | None = None) -> None:
    """Strips injected parameters, dataset images and TensorFlow log lines and scrubs paths of
    an executed notebook, in place, atomically."""
    import nbformat

    path = pathlib.Path(path)
    nb = nbformat.read(path, as_version=4)
    nb = strip_log_noise(strip_dataset_images(strip_injected_parameters(nb)))
    scrub_paths(nb, name or path.name)
    write_atomically(nb, path)


def write_atomically(nb, path) -> None:
    """Writes a notebook next to `path`, then renames it over `path`."""
    import nbformat

    path = pathlib.Path(path)
    tmp = path.with_name(f".{path.stem}.partial.ipynb")
    try:
        nbformat.write(nb, tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def parameters_for(stem: str, *, data: str, epochs: int, smoke: bool, seed: int = 0,
                   holdout=None, train: bool = True) -> dict:
    """The papermill parameters the study runs a notebook with (`seed`, `holdout`: experiment
    notebooks; `train=False`: every notebook reads the committed runs and trains nothing)."""
    params = {"SMOKE": smoke}
    if smoke:
        return params
    if stem in EXPERIMENT_NOTEBOOKS:
        params.update(TRAIN=train, SEED=seed, EPOCHS=epochs, DATA=data, RUNS_DIR=RESULTS_DIR,
                      FIGURES_DIR=FIGURES_DIR)
        if holdout is not None:
            params["HOLDOUT"] = holdout
    elif stem == SMALL_MODELS_NOTEBOOK:
        params.update(TRAIN=train, DATA=data, RESULTS_DIR=RESULTS_DIR, FIGURES_DIR=FIGURES_DIR)
    elif stem == DESIGN_SPACE_NOTEBOOK:
        params.update(TRAIN=train, EPOCHS=epochs, DATA=data, RUNS_DIR=RESULTS_DIR,
                      FIGURES_DIR=FIGURES_DIR)
    elif stem == USE_NOTEBOOK:
        params.update(DATA=data, FIGURES_DIR=FIGURES_DIR)
    else:
        params.update(RESULTS_DIR=RESULTS_DIR, FIGURES_DIR=FIGURES_DIR)
    return params


def run_study(notebooks_dir="notebooks", *, data="tfds", epochs=20, seed=0, holdout=None,
              smoke=False, only=None, train=True, log=print):
    """Executes the notebooks in the report's order; stops at the first failure.

    Args:
        notebooks_dir: folder of the notebooks. Defaults to `"notebooks"`.
        data: `DATA` parameter (`"tfds"` or an image-folder path). Paths are
            passed relative to the notebooks folder, where they run, so no
            absolute path of this machine lands in the notebooks.
        epochs: `EPOCHS` parameter. Defaults to `20`.
        seed: `SEED` parameter of the experiment notebooks (seed k > 0 trains
            `<run>_seed<k>`). Defaults to `0`.
        holdout: `HOLDOUT` parameter of the experiment notebooks (evaluate on a
            hold-out of the training images). Defaults to `None`.
        smoke: run copies in smoke mode in a temporary folder. Defaults to `False`.
        only: stems of the notebooks to run (default `None`: all, in order).
        train: `False` executes every notebook with `TRAIN = False`: it redraws
            its tables and figures from the committed runs and trains nothing
            (e.g. 08 after the queue adds a run). Defaults to `True`.
        log: where progress lines go.

    Returns:
        The paths of the executed notebooks.

    Raises:
        ValueError: `only` is empty or names an unknown notebook.
    """
    import papermill

    stems = list(NOTEBOOKS)
    if only is not None:
        only = list(only)
        if not only:
            raise ValueError(f"`only` must name at least one notebook. Received: only=[]. "
                             f"Known: {stems}")
        unknown = sorted(set(only) - set(stems))
        if unknown:
            raise ValueError(f"Unknown notebooks {unknown}. Known: {stems}")
        stems = [s for s in stems if s in only]
    notebooks_dir = pathlib.Path(notebooks_dir).resolve()
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"No notebooks folder at {notebooks_dir}.")
    if data not in NAMED_SOURCES:
        path = pathlib.Path(os.path.abspath(data))  # keep links: no machine path in notebooks
        if not path.exists():
            raise FileNotFoundError(f"Data path {data} does not exist.")
        data = os.path.relpath(path, notebooks_dir)
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="squeeze_keras_study_")) if smoke else notebooks_dir
    done = []
    for i, stem in enumerate(stems, 1):
        source = notebooks_dir / f"{stem}.ipynb"
        target = out_dir / f"{stem}.ipynb"
        partial = out_dir / f".{stem}.running.ipynb"
        params = parameters_for(stem, data=data, epochs=epochs, smoke=smoke, seed=seed,
                                holdout=holdout, train=train)
        mode = ("smoke" if smoke else "from the committed runs" if not train
                else f"{epochs} epochs, seed {seed}" if stem in EXPERIMENT_NOTEBOOKS else "full")
        log(f"[{i}/{len(stems)}] {stem}: running ({mode})")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source), str(partial), parameters=params, cwd=str(notebooks_dir),
                progress_bar=False, kernel_name="python3",
            )
        except papermill.PapermillExecutionError as err:
            log(f"[{i}/{len(stems)}] {stem}: FAILED in cell {err.exec_count}: "
                f"{err.ename}: {err.evalue}\nSee {partial}; {source} is unchanged. Stopping here.")
            raise
        finish_notebook(partial, target.name)
        os.replace(partial, target)
        log(f"[{i}/{len(stems)}] {stem}: done in {time.perf_counter() - start:.0f} s -> {target}")
        done.append(target)
    return done
