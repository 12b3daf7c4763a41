"""`predict` reads images as training does (issue #36, case 6); a file it cannot read is named."""

import json

import numpy as np
import pytest
from PIL import Image

from squeeze_keras.__main__ import main


def predict_json(capsys, *argv):
    """`predict --json ...`: the exit status, the results by file name, and stderr's lines."""
    status = main(["predict", "--json", *map(str, argv)])
    out, err = capsys.readouterr()
    results = {r["image"].rsplit("/", 1)[-1]: r for r in json.loads(out)}
    return status, results, err.splitlines()


def assert_same_predictions(a, b):
    """The same classes in the same order, with the same probabilities to float32 rounding."""
    assert [name for name, _ in a["predictions"]] == [name for name, _ in b["predictions"]]
    np.testing.assert_allclose([p for _, p in a["predictions"]], [p for _, p in b["predictions"]],
                               atol=1e-5)


@pytest.fixture(scope="module")
def picture():
    """A 40x40 grayscale picture with structure (not noise alone)."""
    rng = np.random.default_rng(0)
    ramp = np.add.outer(np.arange(40), np.arange(40)) * 3
    return np.clip(ramp + rng.integers(0, 40, (40, 40)), 0, 255).astype(np.uint8)


def test_16_bit_grayscale_is_read_like_its_8_bit_copy(tmp_path, picture, capsys):
    Image.fromarray(picture).save(tmp_path / "gray8.png")
    Image.fromarray(picture.astype(np.uint16) * 257).save(tmp_path / "gray16.png")
    assert Image.open(tmp_path / "gray16.png").mode == "I;16"
    status, results, _ = predict_json(capsys, tmp_path / "gray8.png", tmp_path / "gray16.png")
    assert status == 0
    # Before, the 16-bit file was clipped to 255: a white square, classified as one.
    assert_same_predictions(results["gray16.png"], results["gray8.png"])


def test_exif_orientation_is_applied(tmp_path, picture, capsys):
    rgb = np.repeat(picture[..., None], 3, axis=-1)
    rgb[:10] = [200, 30, 30]  # a red band on top: the picture is not symmetric
    Image.fromarray(np.rot90(rgb, -1)).save(tmp_path / "upright.png")  # turned a quarter clockwise
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = 6  # Orientation: "rotate 90 CW to display"
    image.save(tmp_path / "camera.png", exif=exif)
    status, results, _ = predict_json(capsys, tmp_path / "upright.png", tmp_path / "camera.png")
    assert status == 0
    assert_same_predictions(results["camera.png"], results["upright.png"])


def test_a_32_bit_float_image_is_refused_and_the_others_classified(tmp_path, picture, capsys):
    Image.fromarray(picture).save(tmp_path / "gray8.png")
    Image.fromarray(picture.astype(np.float32) / 255).save(tmp_path / "float.tiff")
    status, results, errors = predict_json(capsys, tmp_path / "float.tiff", tmp_path / "gray8.png")
    assert status == 1
    assert "predictions" in results["gray8.png"]
    assert results["float.tiff"]["error"].startswith("32-bit float pixels (PIL mode 'F')")
    assert errors == [f"error: {tmp_path / 'float.tiff'}: {results['float.tiff']['error']}"]


def test_an_image_over_pillows_size_limit_is_one_error_and_the_rest_classified(
        tmp_path, picture, capsys, monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1024)  # refused above 2,048 pixels
    Image.fromarray(picture[:32, :32]).save(tmp_path / "small.png")
    Image.fromarray(np.zeros((64, 64), np.uint8)).save(tmp_path / "huge.png")
    status, results, errors = predict_json(capsys, tmp_path / "huge.png", tmp_path / "small.png")
    assert status == 1
    assert "predictions" in results["small.png"]
    assert results["huge.png"]["error"].startswith("over Pillow's size limit")
    assert "scale it down first" in results["huge.png"]["error"]
    assert len(errors) == 1 and "Traceback" not in errors[0]


def test_a_tflite_beside_a_config_without_an_experiment_is_named(tmp_path, picture, capsys):
    Image.fromarray(picture).save(tmp_path / "gray8.png")
    run = tmp_path / "run"
    (run / "litert").mkdir(parents=True)
    (run / "config.json").write_text("{}")
    (run / "litert" / "int8.tflite").write_bytes(b"not read: the config fails first")
    assert main(["predict", str(tmp_path / "gray8.png"), "--weights",
                 str(run / "litert" / "int8.tflite")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and len(err.splitlines()) == 1, err
    assert f"{run / 'config.json'} holds no experiment config" in err
