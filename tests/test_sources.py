"""The decoding progress line: redrawn on a terminal, one output updated in place in a notebook."""

import pathlib

import numpy as np
import pytest
from PIL import Image

from squeeze_keras import sources

ROOT = pathlib.Path(__file__).resolve().parents[1]


def write_images(root, count=12):
    folder = root / "train" / "class_0"
    folder.mkdir(parents=True)
    for i in range(count):
        Image.fromarray(np.full((32, 32, 3), i, np.uint8)).save(folder / f"{i:03d}.png")
    return sorted(f"train/class_0/{p.name}" for p in folder.iterdir())


def test_a_terminal_gets_the_line_redrawn_on_stderr_and_ended_once(tmp_path, monkeypatch, capsys):
    files = write_images(tmp_path)
    monkeypatch.setattr(sources, "PROGRESS_ABOVE", 0)
    images = sources._decode(tmp_path, files, "train")
    assert images.shape == (12, 32, 32, 3)
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("\rdecoding train: [") and err.endswith(" s\n")
    assert "12/12 images" in err and err.count("\n") == 1
    bar = sources._ProgressLine()
    for i in (1, 2, 3):
        bar.show(f"step {i}", last=i == 3)
    assert capsys.readouterr().err == "\rstep 1\rstep 2\rstep 3\n"


def test_a_notebook_keeps_one_output_with_the_last_line(tmp_path):
    """A real kernel, as papermill and `study` run one: the stored cell has one line, the last."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    write_images(tmp_path)
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell(
            "from squeeze_keras import sources\n"
            "bar = sources._ProgressLine()\n"
            "for i in range(1, 18):\n"
            "    bar.show(f'decoding train: {i}/17', last=i == 17)"),
        nbformat.v4.new_code_cell(
            "import pathlib\n"
            "sources.PROGRESS_ABOVE = 0\n"
            f"root = pathlib.Path({str(tmp_path)!r})\n"
            "files = sorted(str(p.relative_to(root)) for p in root.glob('train/*/*.png'))\n"
            "sources._decode(root, files, 'train').shape"),
    ])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    shown = [[(o["output_type"], o.get("data", {}).get("text/plain", o.get("text")))
              for o in cell.outputs] for cell in nb.cells]
    assert shown[0] == [("display_data", "decoding train: 17/17")]
    (kind, line), result = shown[1]
    assert kind == "display_data" and line.startswith("decoding train: [")
    assert "12/12 images" in line and "\r" not in line
    assert result == ("execute_result", "(12, 32, 32, 3)")
