"""The notebooks as a new user meets them: committed form, Colab set-up, fresh-clone defaults.

nbval (pyproject.toml) runs every notebook in smoke mode; these tests check
what it cannot: no papermill leftovers, notebooks in sync with their sources,
the set-up cell in a fresh kernel, and a fresh clone's defaults offline.
"""

import hashlib
import importlib.util
import os
import pathlib
import shutil
import subprocess

import nbformat
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = ROOT / "notebooks"
# The committed notebooks: study's in-progress copies (.<stem>.running.ipynb) are not among them.
COMMITTED_NOTEBOOKS = sorted(NOTEBOOKS.glob("[!.]*.ipynb"))


def _converter():
    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _text(nb) -> str:
    out = []
    for cell in nb.cells:
        for o in cell.get("outputs", []):
            out.append(o.get("text", "") if "text" in o else str(o.get("data", {}).get("text/plain", "")))
    return "\n".join(out)


def _tree_hash(folder: pathlib.Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("path", COMMITTED_NOTEBOOKS, ids=lambda p: p.stem)
def test_committed_notebook_has_no_injected_parameters(path):
    nb = nbformat.read(path, as_version=4)
    tags = [c.metadata.get("tags", []) for c in nb.cells]
    assert not any("injected-parameters" in t for t in tags), (
        f"{path.name} holds papermill's injected-parameters cell: it would override the "
        "user's parameters. Execute through `squeeze_keras.study` (which strips it).")
    assert sum("parameters" in t for t in tags) == 1


def test_notebooks_match_their_sources():
    assert _converter().main(["--check"]) == 0, "run `python tools/make_notebooks.py`"


def test_every_listed_notebook_exists():
    from squeeze_keras.study import NOTEBOOKS as LISTED

    assert sorted(f"{stem}.ipynb" for stem in LISTED) == [p.name for p in COMMITTED_NOTEBOOKS]


def test_run_study_refuses_an_empty_selection():
    from squeeze_keras.study import run_study

    with pytest.raises(ValueError, match="at least one"):
        run_study(NOTEBOOKS, only=[])


def _run(client, code: str, timeout=300) -> tuple[str, list]:
    """Runs `code` in the kernel; returns its stdout and any errors."""
    stdout, errors = [], []

    def hook(msg):
        content = msg["content"]
        if msg["msg_type"] == "stream" and content["name"] == "stdout":
            stdout.append(content["text"])
        elif msg["msg_type"] == "error":
            errors.append(f"{content['ename']}: {content['evalue']}")

    client.execute_interactive(code, output_hook=hook, timeout=timeout)
    return "".join(stdout), errors


def test_colab_setup_cell_works_in_the_running_kernel(tmp_path):
    """Colab faked: the set-up cell clones (a local checkout), and the next cell imports."""
    from jupyter_client.manager import KernelManager

    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    setup = _converter().setup_cells()[-1].source
    home = tmp_path / "clone"
    env = {**os.environ, "SQUEEZE_KERAS_REPO": str(ROOT), "SQUEEZE_KERAS_HOME": str(home)}
    env.pop("PYTHONPATH", None)
    manager = KernelManager(kernel_name="python3")
    manager.start_kernel(cwd=str(NOTEBOOKS), env=env)
    client = manager.client()
    client.start_channels()
    try:
        client.wait_for_ready(timeout=120)
        _, errors = _run(client, "import sys, types\nsys.modules['google.colab'] = types.ModuleType('google.colab')")
        assert not errors
        for attempt in (1, 2):  # the second run must neither re-clone nor fail
            _, errors = _run(client, setup)
            assert not errors, f"set-up cell, run {attempt}: {errors}"
        out, errors = _run(client, "import os, squeeze_keras\nprint(squeeze_keras.__file__)\nprint(os.getcwd())")
        assert not errors, errors
        module_file, cwd = out.split()
        assert pathlib.Path(module_file).is_relative_to(home)
        assert pathlib.Path(cwd) == home / "notebooks"
    finally:
        client.stop_channels()
        manager.shutdown_kernel(now=True)


def test_colab_setup_installs_every_dependency_colab_lacks():
    """Each of the package's dependencies is either one Colab ships or one the cell installs."""
    import ast
    import re
    import tomllib

    colab_ships = {"tensorflow", "keras", "pandas", "matplotlib", "pillow"}
    setup = _converter().setup_cells()[-1].source
    needed = next(ast.literal_eval(node.value) for node in ast.walk(ast.parse(setup))
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "needed")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = {re.split(r"[<>=!~ ;\[]", spec, maxsplit=1)[0].lower().replace("_", "-") for spec in declared}
    installed = {pip.lower().replace("_", "-") for pip in needed.values()}
    assert names - colab_ships - installed == set()
    for module in needed:
        assert importlib.util.find_spec(module) is not None, f"{module} is not the module's import name"


@pytest.fixture(scope="module")
def fresh_clone(tmp_path_factory):
    """The repository's files as a fresh clone of this working tree has them, without data/."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
                            cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    copy = tmp_path_factory.mktemp("fresh") / "squeeze-keras"
    for name in filter(None, listed):
        source = ROOT / name
        if name.startswith("data/") or not source.is_file():
            continue
        (copy / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, copy / name)
    return copy


def _execute(notebook: pathlib.Path, out: pathlib.Path, monkeypatch, **parameters):
    import papermill

    monkeypatch.delenv("SQUEEZE_KERAS_SMOKE", raising=False)  # the user's defaults, not nbval's
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")  # offline: any download fails fast
    papermill.execute_notebook(str(notebook), str(out), parameters=parameters,
                               cwd=str(notebook.parent), kernel_name="python3", progress_bar=False)
    return nbformat.read(out, as_version=4)


def test_fresh_clone_defaults_show_the_committed_e4_runs(fresh_clone, tmp_path, monkeypatch):
    nb = _execute(fresh_clone / "notebooks" / "04_e4_delayed_downsampling.ipynb",
                  tmp_path / "04.ipynb", monkeypatch)
    text = _text(nb)
    assert "80.19" in text and "67.01" in text  # tuned2 and paper, side by side
    assert "TRAIN = False" in text
    assert "E0000" not in text and "absl::InitializeLog" not in text  # no TensorFlow log noise
    assert not (fresh_clone / "runs").exists()


def test_fresh_clone_smoke_training_leaves_the_record_alone(fresh_clone, tmp_path, monkeypatch):
    before = {d: _tree_hash(fresh_clone / d) for d in ("results", "figures")}
    nb = _execute(fresh_clone / "notebooks" / "04_e4_delayed_downsampling.ipynb",
                  tmp_path / "04_smoke.ipynb", monkeypatch, TRAIN=True, SMOKE=True)
    assert "SMOKE" in _text(nb)
    assert {d: _tree_hash(fresh_clone / d) for d in ("results", "figures")} == before
    assert not (fresh_clone / "runs").exists()


def test_the_study_gives_each_notebook_its_data_and_seed():
    from squeeze_keras.study import parameters_for

    params = parameters_for("01_e1_preprocessing_maxpool", data="../data/c.tar.gz", epochs=20,
                            smoke=False, seed=2, holdout=100)
    assert (params["SEED"], params["HOLDOUT"], params["DATA"]) == (2, 100, "../data/c.tar.gz")
    assert "HOLDOUT" not in parameters_for("00_baseline", data="tfds", epochs=20, smoke=False)
    assert parameters_for("09_use_the_model", data="../data/c.tar.gz", epochs=20,
                          smoke=False)["DATA"] == "../data/c.tar.gz"


def _parameters_cell_names(path) -> set[str]:
    nb = nbformat.read(path, as_version=4)
    cell = next(c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", []))
    return {line.split("=")[0].strip() for line in cell.source.splitlines()
            if "=" in line and not line.startswith("#")}


def test_study_no_train_sets_train_false_in_every_notebook_that_trains():
    """`study --no-train` redraws from the committed runs: each notebook with a `TRAIN`
    parameter gets False, and no notebook gets a parameter its parameters cell lacks."""
    from squeeze_keras import __main__ as cli
    from squeeze_keras.study import NOTEBOOKS as STEMS, parameters_for

    with_train = set()
    for stem in STEMS:
        declared = _parameters_cell_names(NOTEBOOKS / f"{stem}.ipynb")
        for train in (True, False):
            params = parameters_for(stem, data="../d.tar.gz", epochs=20, smoke=False, train=train)
            assert set(params) <= declared, (stem, set(params) - declared)
            if "TRAIN" in declared:
                assert params["TRAIN"] is train, stem
        with_train |= {stem} if "TRAIN" in declared else set()
    assert {"04_e4_delayed_downsampling", "07_small_models", "08_design_space"} <= with_train
    args = cli._parser().parse_args(["study", "--only", "08_design_space", "--no-train"])
    assert args.no_train and args.only == ["08_design_space"]


def test_no_committed_notebook_or_figure_shows_dataset_images():
    """Cells tagged dataset-images keep no pictures; 09's image grids are not saved as figures."""
    import nbformat

    from squeeze_keras.study import DATASET_IMAGES, NOTEBOOKS as STEMS

    tagged = 0
    for stem in STEMS:
        nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
        for cell in nb.cells:
            if DATASET_IMAGES in cell.get("metadata", {}).get("tags", []):
                tagged += 1
                assert not any(k.startswith("image/") for o in cell.get("outputs", [])
                               for k in o.get("data", {})), stem
    assert tagged >= 2
    figures = NOTEBOOKS.parent / "figures"
    assert not list(figures.glob("*predictions*.png")) + list(figures.glob("*wrong*.png"))


def test_no_committed_notebook_holds_tensorflow_log_lines():
    import nbformat

    from squeeze_keras.study import NOTEBOOKS as STEMS
    from squeeze_keras.study import TF_LOG_LINE, strip_log_noise

    for stem in STEMS:
        nb = nbformat.read(NOTEBOOKS / f"{stem}.ipynb", as_version=4)
        for cell in nb.cells:
            for output in cell.get("outputs", []):
                if output.get("name") == "stderr":
                    assert not TF_LOG_LINE.search(output["text"]), (stem, output["text"][:200])
    # What `study` strips: the C++ line goes, a real warning beside it stays.
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x", outputs=[
        nbformat.v4.new_output("stream", name="stderr", text=(
            "E0000 00:00:1796189302.900568   23115 cuda_platform.cc:52] failed call to cuInit\n"
            "UserWarning: something real\n")),
        nbformat.v4.new_output("stream", name="stderr", text=(
            "I0000 00:00:1796187161.364666    2854 port.cc:153] oneDNN custom operations\n"))])])
    (cell,) = strip_log_noise(nb).cells
    assert [o["text"] for o in cell.outputs] == ["UserWarning: something real\n"]
