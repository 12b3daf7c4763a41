"""tfds, the default data source, offline: what a fresh install needs, and the project's tfds path.

No test here touches the network. tfds's own builders run until the download would open
its first connection (a fresh install from `requirements.txt` once failed before that, for
want of a module that tfds imports but does not declare, which `tfds.testing.mock_data`
alone never notices); a fake CIFAR archive served in its place is prepared into a tfds
folder; the rest runs under `mock_data`; and the default notebook, offline, must say in one
line that it has no network.
"""

import hashlib
import io
import pathlib
import re
import shutil
import socket
import tarfile
import time

import nbformat
import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
import yaml
from packaging.requirements import Requirement

from squeeze_keras import data, notebook
from squeeze_keras.train import run_experiment

ROOT = pathlib.Path(__file__).resolve().parents[1]
URLS = {"cifar10": "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz",
        "cifar100": "https://www.cs.toronto.edu/~kriz/cifar-100-binary.tar.gz"}
NO_NETWORK = re.compile(r"tfds could not download '(cifar10|cifar100)': no network \(")


class DownloadStarted(Exception):
    """Raised where tfds's downloader would open its first connection."""


@pytest.fixture
def offline(monkeypatch):
    """Any real connection goes to a closed local port and fails at once."""
    for proxy in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"):
        monkeypatch.setenv(proxy, "http://127.0.0.1:9")
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("SQUEEZE_KERAS_SMOKE", raising=False)


def _one_line_no_network(message: str, dataset="cifar10"):
    assert "\n" not in message, message
    assert NO_NETWORK.match(message) and f"'{dataset}'" in message, message
    assert "`--data-dir`" in message and "image folder" in message, message


# ---------------------------------------------------------------- what a fresh install needs


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
def test_tfds_builder_reaches_its_download(name, tmp_path, monkeypatch, offline):
    urls = []

    def get(self, url, *args, **kwargs):
        urls.append(url)
        raise DownloadStarted(url)

    monkeypatch.setattr(requests.Session, "get", get)
    builder = tfds.builder(name, data_dir=tmp_path)
    # A module missing anywhere before the download raises here instead.
    with pytest.raises(DownloadStarted):
        builder.download_and_prepare()
    assert urls == [URLS[name]]


def _cifar10_archive(per_file: int):
    """A CIFAR-10 binary archive (tfds's download) of random images: bytes, images, labels."""
    rng = np.random.default_rng(0)
    names = [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]
    labels = rng.integers(0, 10, (len(names), per_file), dtype=np.uint8)
    planes = rng.integers(0, 256, (len(names), per_file, 3, 32, 32), dtype=np.uint8)  # CHW
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        def add(name, content):
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))

        for i, name in enumerate(names):
            add(name, np.concatenate([labels[i, :, None], planes[i].reshape(per_file, -1)], 1).tobytes())
        add("batches.meta.txt", "\n".join(f"class_{c}" for c in range(10)).encode())
    images = planes.transpose(0, 1, 3, 4, 2)  # HWC
    return buffer.getvalue(), images, labels


def test_tfds_prepares_a_download_into_a_folder_that_data_dir_loads(tmp_path, monkeypatch, offline):
    """The whole of tfds's preparation (extract, decode, encode, write), then `data_dir` reads it."""
    body, images, labels = _cifar10_archive(per_file=4)

    class Response:
        status_code, url, headers = 200, URLS["cifar10"], {"Content-length": str(len(body))}

        def iter_content(self, chunk_size):
            return (body[i:i + chunk_size] for i in range(0, len(body), chunk_size))

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return False

    monkeypatch.setattr(requests.Session, "get", lambda self, url, **kwargs: Response())
    builder = tfds.builder("cifar10", data_dir=tmp_path)
    from tensorflow_datasets.core.download import checksums  # the fake archive's own checksum

    monkeypatch.setattr(type(builder), "url_infos", {URLS["cifar10"]: checksums.UrlInfo(
        size=tfds.core.units.Size(len(body)), checksum=hashlib.sha256(body).hexdigest(),
        filename="cifar-10-binary.tar.gz")})
    builder.download_and_prepare()

    def no_download(self, url, *args, **kwargs):
        raise AssertionError(f"downloaded {url} although the data are on disk")

    monkeypatch.setattr(requests.Session, "get", no_download)

    (x, y), (xt, yt) = data.tfds_arrays("cifar10", data_dir=tmp_path, download=False)
    assert x.dtype == np.uint8 and y.dtype == np.int64

    def examples(images, labels):  # tfds shuffles the examples when it writes them
        return sorted((int(label), image.tobytes()) for image, label in zip(images, labels))

    assert examples(x, y) == examples(images[:5].reshape(-1, 32, 32, 3), labels[:5].ravel())
    assert examples(xt, yt) == examples(images[5], labels[5])
    # With download allowed, a prepared folder needs no network either, nor does a
    # download kept from an interrupted preparation.
    (x2, _), _ = data.tfds_arrays("cifar10", data_dir=tmp_path)
    np.testing.assert_array_equal(x2, x)
    shutil.rmtree(tmp_path / "cifar10")
    (x3, y3), _ = data.tfds_arrays("cifar10", data_dir=tmp_path)
    assert examples(x3, y3) == examples(x, y)


def test_environment_yml_installs_requirements_txt_and_pyproject_agrees():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    conda = sorted(d for d in deps if isinstance(d, str))
    pip = [d for d in deps if isinstance(d, dict)]
    # conda brings only Python and pip; pip installs requirements.txt, the one pinned set.
    assert conda == ["pip", "python=3.11"], conda
    assert len(pip) == 1 and pip[0]["pip"][0] == "-r requirements.txt", pip
    assert all(line.startswith("-e") for line in pip[0]["pip"][1:]), pip
    assert "Python 3.11" in (ROOT / "requirements.txt").read_text().splitlines()[0]

    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            req = Requirement(line)
            assert len(req.specifier) == 1 and next(iter(req.specifier)).operator == "==", line
            pins[req.name.lower().replace("_", "-")] = next(iter(req.specifier)).version
    assert "importlib-resources" in pins  # tfds needs it and does not say so (see above)
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert Requirement("python" + project["requires-python"]).specifier.contains("3.11")
    for line in project["dependencies"]:
        req = Requirement(line)
        name = req.name.lower().replace("_", "-")
        assert name in pins, f"{line} is in pyproject.toml but not pinned in requirements.txt"
        assert req.specifier.contains(pins[name]), f"{line} excludes the pinned {pins[name]}"


# ---------------------------------------------------------------- the project's tfds path


@pytest.mark.parametrize("name,classes", [("cifar10", 10), ("cifar100", 100)])
def test_data_load_from_tfds(name, classes, tmp_path, offline):
    with tfds.testing.mock_data(num_examples=40):
        splits = data.load(name, "tfds", data_dir=tmp_path, batch_size=16)
    assert (splits.source, splits.classes, splits.train_size, splits.test_size) == ("tfds", classes, 40, 40)
    for x, y in ((splits.x_train, splits.y_train), (splits.x_test, splits.y_test)):
        assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8
        assert y.shape == (40,) and y.dtype == np.int64 and 0 <= y.min() and y.max() < classes
    images, labels, weights = (t.numpy() for t in next(iter(splits.train)))
    assert images.shape == (16, 32, 32, 3) and images.dtype == np.float32 and weights.sum() == 16


def test_the_notebook_trains_one_epoch_from_tfds_through_run_experiment(tmp_path, offline):
    with tfds.testing.mock_data(num_examples=32):
        run = notebook.settings("e4", train=True, data="tfds", epochs=1, runs_dir=tmp_path)
        assert not run.smoke and run.data == "tfds" and run.limit is None
        trained = run.run(verbose=0)
        # The same run asked of `run_experiment` is the finished one, returned as it is.
        again = run_experiment("e4", epochs=1, data="tfds", out_dir=tmp_path, verbose=0)
    assert trained.run_dir == tmp_path / "e4" and again.metrics == trained.metrics
    assert (trained.metrics["data_source"], trained.metrics["epochs"]) == ("tfds", 1)
    assert trained.metrics["train_size"] == 32 and list(trained.history["epoch"]) == [0]


# ---------------------------------------------------------------- offline: one line, at once


def test_offline_tfds_says_no_network_in_one_line_at_once(tmp_path, offline):
    start = time.monotonic()
    with pytest.raises(data.DataError) as err:
        data.load("cifar100", "tfds", data_dir=tmp_path)
    _one_line_no_network(str(err.value), "cifar100")
    assert "cannot reach www.cs.toronto.edu" in str(err.value)
    assert time.monotonic() - start < 60  # tfds alone retries for over three minutes


def test_a_download_that_loses_the_network_is_named(tmp_path, monkeypatch, offline):
    monkeypatch.setattr(requests, "head", lambda *args, **kwargs: None)  # the check passes

    def get(self, url, *args, **kwargs):
        try:
            raise socket.gaierror(-2, "Name or service not known")
        except OSError as err:
            raise requests.ConnectionError(f"Max retries exceeded with url: {url}") from err

    monkeypatch.setattr(requests.Session, "get", get)
    with pytest.raises(data.DataError) as err:
        data.load("cifar10", "tfds", data_dir=tmp_path)
    _one_line_no_network(str(err.value))
    assert "Name or service not known" in str(err.value)


def _tree_hash(folder: pathlib.Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_notebook_04_trains_from_tfds_by_default_and_offline_says_no_network(tmp_path, offline):
    import papermill

    source = ROOT / "notebooks" / "04_e4_delayed_downsampling.ipynb"
    parameters = next(c for c in nbformat.read(source, as_version=4).cells
                      if "parameters" in c.metadata.get("tags", []))
    assert 'DATA = "tfds"' in parameters.source  # the default under test
    before = {d: _tree_hash(ROOT / d) for d in ("results", "figures")}
    with pytest.raises(papermill.PapermillExecutionError) as err:
        papermill.execute_notebook(str(source), str(tmp_path / "04.ipynb"),
                                   parameters={"TRAIN": True, "RUNS_DIR": str(tmp_path / "runs")},
                                   cwd=str(source.parent), kernel_name="python3",
                                   progress_bar=False)
    assert err.value.ename == "DataError"
    _one_line_no_network(err.value.evalue)
    failed = [c for c in nbformat.read(tmp_path / "04.ipynb", as_version=4).cells
              if any(o.get("output_type") == "error" for o in c.get("outputs", []))]
    assert len(failed) == 1 and "run.run()" in failed[0].source
    assert {d: _tree_hash(ROOT / d) for d in ("results", "figures")} == before
    assert not list((tmp_path / "runs").rglob("config.json"))
