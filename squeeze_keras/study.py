"""Runs the whole study headless: every experiment notebook in order, then the results.

Each notebook is executed with papermill, in place (its outputs become the
record of the run), with the parameters given here. `smoke=True` executes
copies in a temporary folder instead, leaving the committed notebooks alone.
"""

from __future__ import annotations

import os
import pathlib
import tempfile
import time

EXPERIMENT_NOTEBOOKS = (
    "00_baseline", "01_e1_preprocessing_maxpool", "02_e2_conv_kernel",
    "03_e3_fire3_dropout", "04_e4_delayed_downsampling", "05_e5_cifar100",
)
RESULTS_NOTEBOOK = "06_results"
SMALL_MODELS_NOTEBOOK = "07_small_models"


def scrub_paths(notebook_path):
    """Replaces the absolute paths papermill records in a notebook's metadata by its name."""
    import nbformat

    notebook_path = pathlib.Path(notebook_path)
    nb = nbformat.read(notebook_path, as_version=4)
    meta = nb.metadata.get("papermill", {})
    for key in ("input_path", "output_path"):
        if key in meta:
            meta[key] = notebook_path.name
    nbformat.write(nb, notebook_path)


def run_study(notebooks_dir="notebooks", *, data="tfds", epochs=20, smoke=False,
              only=None, log=print):
    """Executes the notebooks in the report's order; stops at the first failure.

    Args:
        notebooks_dir: folder of the notebooks. Defaults to `"notebooks"`.
        data: `DATA` parameter (`"tfds"` or an image-folder path). Paths are
            passed relative to the notebooks folder, where they run, so no
            absolute path of this machine lands in the notebooks.
        epochs: `EPOCHS` parameter. Defaults to `20`.
        smoke: run copies in smoke mode in a temporary folder. Defaults to `False`.
        only: stems of the notebooks to run (default: all, in order).
        log: where progress lines go.

    Returns:
        The paths of the executed notebooks.
    """
    import papermill

    notebooks_dir = pathlib.Path(notebooks_dir).resolve()
    if not notebooks_dir.is_dir():
        raise FileNotFoundError(f"No notebooks folder at {notebooks_dir}.")
    if data not in ("tfds", "synthetic"):
        path = pathlib.Path(os.path.abspath(data))  # keep links: no machine path in notebooks
        if not path.exists():
            raise FileNotFoundError(f"Data path {data} does not exist.")
        data = os.path.relpath(path, notebooks_dir)
    stems = [*EXPERIMENT_NOTEBOOKS, RESULTS_NOTEBOOK, SMALL_MODELS_NOTEBOOK]
    if only:
        unknown = sorted(set(only) - set(stems))
        if unknown:
            raise ValueError(f"Unknown notebooks {unknown}. Known: {stems}")
        stems = [s for s in stems if s in only]
    out_dir = pathlib.Path(tempfile.mkdtemp(prefix="squeeze_keras_study_")) if smoke else notebooks_dir
    done = []
    for i, stem in enumerate(stems, 1):
        source = notebooks_dir / f"{stem}.ipynb"
        target = out_dir / f"{stem}.ipynb"
        params = {"SMOKE": smoke}
        if stem in EXPERIMENT_NOTEBOOKS:
            params.update(EPOCHS=epochs, DATA=data)
        elif stem == SMALL_MODELS_NOTEBOOK:
            params.update(DATA=data)
        mode = "smoke" if smoke else f"{epochs} epochs" if stem in EXPERIMENT_NOTEBOOKS else "full"
        log(f"[{i}/{len(stems)}] {stem}: running ({mode})")
        start = time.perf_counter()
        try:
            papermill.execute_notebook(
                str(source), str(target), parameters=params, cwd=str(notebooks_dir),
                progress_bar=False, kernel_name="python3",
            )
        except papermill.PapermillExecutionError as err:
            log(f"[{i}/{len(stems)}] {stem}: FAILED in cell {err.exec_count}: "
                f"{err.ename}: {err.evalue}\nSee {target}. Stopping here.")
            raise
        scrub_paths(target)
        log(f"[{i}/{len(stems)}] {stem}: done in {time.perf_counter() - start:.0f} s -> {target}")
        done.append(target)
    return done
