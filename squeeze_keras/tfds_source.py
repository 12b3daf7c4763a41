"""CIFAR-10/100 from tensorflow-datasets, as uint8 arrays (what Colab users get).

The first load downloads CIFAR's archive (where tfds can reach the network) and
prepares it under tfds's data folder; later loads read the prepared copy. Offline,
an unprepared dataset fails at once with a one-line `DataError` instead of tfds's
minutes of retries; a module tfds needs but cannot import is named as such.
"""

from __future__ import annotations

import os

import numpy as np

from squeeze_keras.sources import DataError


OFFLINE = ("pass an image folder (train/<class>/*, test/<class>/*) or its .tar.gz as the "
           "source, e.g. `python -m squeeze_keras train e4 --data path/to/cifar10`.")


def _cause(err: BaseException | None, types) -> BaseException | None:
    """The exception of `types` that `err` is or was raised from (its chain), if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, types):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def _network_error_in(err):
    # requests and urllib keep the socket's error (no DNS, refused, timed out) in the chain.
    import socket

    return _cause(err, (ConnectionError, TimeoutError, socket.gaierror))


def _no_network(dataset, reason) -> DataError:
    return DataError(
        f"tfds could not download {dataset!r}: no network ({' '.join(str(reason).split())}). "
        "Run where tfds can download, point `data_dir` (`--data-dir`, or $TFDS_DATA_DIR) at a "
        "prepared tfds folder, or " + OFFLINE)


def _check_download_reachable(tfds, dataset, data_dir) -> None:
    """Raises the one-line no-network error at once where tfds would retry for minutes.

    Nothing is checked when the dataset's archive is already among tfds's downloads.
    """
    builder = tfds.builder(dataset, data_dir=data_dir)
    urls = sorted(builder.url_infos or ())
    downloads = os.path.join(os.fspath(builder.data_dir_root), "downloads")
    kept = [name for folder in ("", dataset, "extracted")  # where tfds keeps downloads
            if os.path.isdir(os.path.join(downloads, folder))
            for name in os.listdir(os.path.join(downloads, folder))]
    if not urls or any(u.rsplit("/", 1)[-1].split(".")[0] in name for u in urls for name in kept):
        return
    import requests

    try:
        requests.head(urls[0], timeout=10, allow_redirects=True)
    except (requests.ConnectionError, requests.Timeout) as probe:
        if not isinstance(probe, requests.exceptions.SSLError):
            host = urls[0].split("/")[2]
            raise _no_network(dataset, f"cannot reach {host}: "
                                       f"{_network_error_in(probe) or probe}") from probe


def tfds_arrays(dataset: str, data_dir=None, download=True):
    """Loads a tfds CIFAR dataset into uint8 arrays (what Colab users get).

    A dataset not yet prepared in `data_dir` needs the network; without it this fails at once
    with a one-line `DataError` that says so.
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(
            f"The 'tfds' source needs tensorflow-datasets, but importing it failed: module "
            f"{err.name!r} is missing or broken ({type(err).__name__}: {err}). Install it "
            f"(`pip install tensorflow-datasets`), or {OFFLINE}"
        ) from err

    def load(download):
        return tfds.load(dataset, split=["train", "test"], as_supervised=True,
                         data_dir=data_dir, download=download)

    try:
        try:
            splits = load(download=False)  # prepared before: no network needed
        except Exception as err:
            if not download or _cause(err, ImportError) is not None:
                raise
            _check_download_reachable(tfds, dataset, data_dir)
            splits = load(download=True)
        # Batches of 10,000: tfds' `batch_size=-1` is one batch of the recorded split size, and
        # without one (a mocked dataset) a batch of sys.maxsize that aborts the process.
        arrays = []
        for split in splits:
            xs, ys = zip(*tfds.as_numpy(split.batch(10_000)))
            arrays.append((np.concatenate(xs), np.concatenate(ys).astype(np.int64)))
    except DataError:
        raise
    except Exception as err:  # tfds wraps network and file errors many ways
        missing = _cause(err, ImportError)
        if missing is not None:
            raise DataError(
                f"tfds could not load {dataset!r}: it needs module {missing.name!r}, which is "
                f"missing or broken ({type(missing).__name__}: {missing}). Install that module, "
                f"or {OFFLINE}"
            ) from err
        network = _network_error_in(err)
        if network is not None:
            raise _no_network(dataset, network) from err
        raise DataError(
            f"tfds could not load {dataset!r} ({type(err).__name__}: "
            f"{' '.join(str(err).split())}). Without internet, point `data_dir` at a prepared "
            "tfds folder, or " + OFFLINE
        ) from err
    return arrays[0], arrays[1]
