"""What the command line takes from its arguments and the user's Keras set-up before it builds
anything (issue #36): `--seed` bounds, `~/.keras/keras.json`, `KERAS_BACKEND`."""

import importlib.util

import keras
import pytest

from squeeze_keras.__main__ import _parser, main

BIG = str(2 ** 63)
TINY = ["--data", "synthetic", "--limit", "8", "--epochs", "1", "--precision", "float32",
        "--verbose", "0"]


def error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    assert err.startswith("error: "), err
    return err


# ---------------------------------------------------------------- --seed


@pytest.mark.parametrize("flag", ["--seed", "--seeds", "--holdout-seed"])
def test_train_refuses_a_seed_numpy_cannot_take_in_its_parser(flag, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "baseline", flag, BIG, "--out", str(tmp_path), *TINY])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert f"argument {flag}: must be an integer from 0 to 4294967295 (2**32 - 1), got {BIG}" in err
    assert not any(tmp_path.iterdir())  # refused before any run folder was made


def test_study_refuses_the_same_seeds_and_the_largest_one_passes():
    # Through the parser only: a study that got past it would execute the notebooks.
    with pytest.raises(SystemExit):
        _parser().parse_args(["study", "--seed", str(2 ** 32)])
    assert _parser().parse_args(["study", "--seed", str(2 ** 32 - 1)]).seed == 2 ** 32 - 1


# ---------------------------------------------------------------- the user's Keras set-up


@pytest.fixture
def keras_home(tmp_path, monkeypatch):
    """An empty KERAS_HOME and no KERAS_BACKEND; returns the folder."""
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    monkeypatch.delenv("KERAS_BACKEND", raising=False)
    return tmp_path


@pytest.fixture
def channels_first():
    """Keras as a keras.json with `"image_data_format": "channels_first"` sets it up at import."""
    keras.config.set_image_data_format("channels_first")
    yield
    keras.config.set_image_data_format("channels_last")


def test_summary_builds_the_channels_last_model_under_a_channels_first_config(channels_first,
                                                                              capsys):
    assert main(["summary", "e4"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1] == "parameters: 727,594 (report: 727,594)"  # not 684,970
    assert keras.config.image_data_format() == "channels_first"  # the user's setting is kept
    # `train` builds through the same factory (`ExperimentConfig.build_model`).


def test_a_keras_json_backend_that_is_not_installed_is_named(keras_home, capsys):
    if importlib.util.find_spec("jax") is not None:
        pytest.skip("JAX is installed here")
    (keras_home / "keras.json").write_text('{"backend": "jax"}')
    assert main(["summary", "e1"]) == 2
    err = error_line(capsys)
    assert f"{keras_home / 'keras.json'} sets the Keras backend to 'jax'" in err
    assert "'jax' package is not installed: install it (pip install jax)" in err
    assert main(["list"]) == 0  # `list` needs no backend


def test_a_keras_json_backend_this_package_cannot_train_under_is_named(keras_home, capsys):
    (keras_home / "keras.json").write_text('{"backend": "numpy"}')
    assert main(["train", "e1", *TINY]) == 2
    assert "keras.json sets the Keras backend to 'numpy', not a backend this package trains " \
           "under" in error_line(capsys)


def test_an_empty_keras_backend_counts_as_unset(keras_home, monkeypatch, capsys):
    (keras_home / "keras.json").write_text('{"backend": "tensorflow"}')
    monkeypatch.setenv("KERAS_BACKEND", "")
    assert main(["summary", "e1"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].startswith("parameters: ")
