"""Class names and CIFAR-100's fine-to-coarse map, checked against the CIFAR-100 archive."""

import csv
import io
import pathlib
import tarfile

import numpy as np
import pytest

from squeeze_keras import classes

CIFAR100 = pathlib.Path(__file__).resolve().parents[1] / "../shared/data/cifar100-train-png.tar.gz"


def test_names_are_complete_and_sorted_as_the_official_label_order():
    assert len(classes.CIFAR10) == 10 and list(classes.CIFAR10) == sorted(classes.CIFAR10)
    assert len(classes.CIFAR100_FINE) == 100 and list(classes.CIFAR100_FINE) == sorted(classes.CIFAR100_FINE)
    assert len(classes.CIFAR100_COARSE) == 20
    # Every superclass holds exactly five fine classes.
    assert np.bincount(classes.CIFAR100_FINE_TO_COARSE).tolist() == [5] * 20


def test_coarse_labels_maps_and_refuses_out_of_range():
    assert classes.coarse_labels([0, 1, 99]).tolist() == [4, 1, 13]  # apple, aquarium_fish, worm
    with pytest.raises(ValueError, match=r"\[0, 100\)"):
        classes.coarse_labels([100])
    with pytest.raises(ValueError, match="dataset='mnist'"):
        classes.class_names("mnist")


@pytest.mark.skipif(not CIFAR100.exists(), reason="CIFAR-100 archive not available")
def test_the_map_matches_the_archives_fine_to_coarse_csv():
    with tarfile.open(CIFAR100) as tar:
        member = next(m for m in tar.getmembers() if m.name.endswith("fine_to_coarse.csv"))
        text = tar.extractfile(member).read().decode()
    rows = list(csv.DictReader(io.StringIO(text)))
    assert [r["fine_name"] for r in rows] == list(classes.CIFAR100_FINE)
    assert [int(r["coarse_label"]) for r in rows] == list(classes.CIFAR100_FINE_TO_COARSE)
    assert [classes.CIFAR100_COARSE[int(r["coarse_label"])] for r in rows] == \
        [r["coarse_name"] for r in rows]
