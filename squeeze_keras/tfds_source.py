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


def _import_error_in(err: BaseException) -> ImportError | None:
    """The ImportError that `err` is or was raised from, if any."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, ImportError):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def tfds_arrays(dataset: str, data_dir=None, download=True):
    """Loads a tfds CIFAR dataset into uint8 arrays (what Colab users get).

    A dataset not yet prepared in `data_dir` needs the network; without it this fails at once
    with a one-line `DataError` that says so.
    """
    offline = ("pass an image folder (train/<class>/*, test/<class>/*) or its .tar.gz as "
               "the source, e.g. `python -m squeeze_keras train e4 --data path/to/cifar10`.")
    try:
        import tensorflow_datasets as tfds
    except ImportError as err:
        raise DataError(
            f"The 'tfds' source needs tensorflow-datasets, but importing it failed: module "
            f"{err.name!r} is missing or broken ({type(err).__name__}: {err}). Install it "
            f"(`pip install tensorflow-datasets`), or {offline}"
        ) from err

    def network_error_in(err):
        # requests and urllib keep the socket's error (no DNS, refused, timed out) in the chain.
        import socket

        seen = set()
        while err is not None and id(err) not in seen:
            if isinstance(err, (ConnectionError, TimeoutError, socket.gaierror)):
                return err
            seen.add(id(err))
            err = err.__cause__ or err.__context__
        return None

    def no_network(reason):
        return DataError(
            f"tfds could not download {dataset!r}: no network ({' '.join(str(reason).split())}). "
            "Run where tfds can download, point `data_dir` (`--data-dir`, or $TFDS_DATA_DIR) at "
            "a prepared tfds folder, or " + offline)

    def load(download):
        return tfds.load(dataset, split=["train", "test"], as_supervised=True,
                         data_dir=data_dir, download=download)

    try:
        try:
            splits = load(download=False)  # prepared before: no network needed
        except Exception as err:
            if not download or _import_error_in(err) is not None:
                raise
            # tfds retries a failed download for minutes; without network, say so at once.
            builder = tfds.builder(dataset, data_dir=data_dir)
            urls = sorted(builder.url_infos or ())
            downloads = os.path.join(os.fspath(builder.data_dir_root), "downloads")
            kept = [name for folder in ("", dataset, "extracted")  # where tfds keeps downloads
                    if os.path.isdir(os.path.join(downloads, folder))
                    for name in os.listdir(os.path.join(downloads, folder))]
            cached = any(u.rsplit("/", 1)[-1].split(".")[0] in name for u in urls for name in kept)
            if urls and not cached:
                import requests

                try:
                    requests.head(urls[0], timeout=10, allow_redirects=True)
                except (requests.ConnectionError, requests.Timeout) as probe:
                    if not isinstance(probe, requests.exceptions.SSLError):
                        host = urls[0].split("/")[2]
                        raise no_network(f"cannot reach {host}: "
                                         f"{network_error_in(probe) or probe}") from probe
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
        missing = _import_error_in(err)
        if missing is not None:
            raise DataError(
                f"tfds could not load {dataset!r}: it needs module {missing.name!r}, which is "
                f"missing or broken ({type(missing).__name__}: {missing}). Install that module, "
                f"or {offline}"
            ) from err
        network = network_error_in(err)
        if network is not None:
            raise no_network(network) from err
        raise DataError(
            f"tfds could not load {dataset!r} ({type(err).__name__}: "
            f"{' '.join(str(err).split())}). Without internet, point `data_dir` at a prepared "
            "tfds folder, or " + offline
        ) from err
    return arrays[0], arrays[1]
