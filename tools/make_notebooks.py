"""Converts the notebook sources in notebooks/source/ into the notebooks in notebooks/.

A source is a plain Python file in the "percent" format (as jupytext and
keras-io's tutobooks read it): `# %%` starts a code cell, `# %% [markdown]` a
markdown cell written as `# ` comments, `# %% tags=["parameters"]` a code cell
with tags (papermill's `parameters` cell), and `# %% [setup]` stands for the
cells of `source/setup.py` (the Colab / fresh-clone set-up, the one home of
the repository URL). Lines before the first marker (a docstring) are not part
of the notebook. `# NBVAL_CHECK_OUTPUT` lines stay in the cells: nbval
compares those cells' outputs.

Which source makes which notebook: `squeeze_keras.study.NOTEBOOKS` is the
list. `source/<stem>.py` if it exists; otherwise the experiment notebook
template `source/experiment.py` with that notebook's header (`source/<stem>.md`)
in front and its experiment in the `EXPERIMENT = ...` line of the parameters
cell. The Colab badge goes under the first heading of each.

Stored outputs: a code cell whose source is unchanged keeps the outputs (and
execution count) it has in the existing notebook; a new or edited cell has
none until the notebook is executed again. So editing prose keeps the record,
and after editing code run the notebook (`python -m squeeze_keras study --only
<stem>` to retrain into results/, or papermill / Jupyter with the defaults,
which show the committed runs; then strip papermill's `injected-parameters`
cell, which `study` does). `--clear` writes notebooks without any outputs.

    python tools/make_notebooks.py                    # every notebook
    python tools/make_notebooks.py 04_e4_delayed_downsampling 06_results
    python tools/make_notebooks.py --check            # exit 1 if a notebook is out of date
"""

from __future__ import annotations

import argparse
import pathlib
import re
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = ROOT / "notebooks"
SOURCE_DIR = NOTEBOOKS_DIR / "source"
sys.path.insert(0, str(ROOT))

from squeeze_keras.study import NOTEBOOKS  # noqa: E402

KERNEL = {
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
    "accelerator": "GPU",
    "colab": {"provenance": []},
}
MARKER = re.compile(r"^# %%(?P<rest>.*)$")


def parse_cells(text: str) -> list:
    """The cells of a percent-format source."""
    cells, kind, tags, lines = [], None, [], []

    def close():
        if kind is None:
            return
        while lines and not lines[-1].strip():
            lines.pop()
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", line) for line in lines)
            cells.append(new_markdown_cell(body))
        elif kind == "setup":
            cells.extend(setup_cells())
        else:
            cell = new_code_cell("\n".join(lines))
            if tags:
                cell.metadata["tags"] = tags
            cells.append(cell)

    for line in text.splitlines():
        match = MARKER.match(line)
        if match:
            close()
            rest = match["rest"].strip()
            kind, tags, lines = "code", [], []
            if rest == "[markdown]":
                kind = "markdown"
            elif rest == "[setup]":
                kind = "setup"
            elif rest.startswith("tags="):
                tags = [t.strip().strip("'\"") for t in rest[5:].strip("[]").split(",")]
            elif rest:
                raise ValueError(f"Unknown cell marker: {line!r}")
        elif kind is not None:
            lines.append(line)
    close()
    return cells


def setup_cells() -> list:
    return parse_cells((SOURCE_DIR / "setup.py").read_text())


def repository() -> str:
    """The repository URL, from its one home: `source/setup.py`."""
    match = re.search(r'^REPOSITORY = "https://github.com/([^"]+)"', (SOURCE_DIR / "setup.py").read_text(),
                      re.MULTILINE)
    return match[1]


def colab_badge(stem: str) -> str:
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{repository()}/blob/main/notebooks/"
            f"{stem}.ipynb)")


def build(stem: str):
    """The notebook `stem` from its source (outputs not yet carried over)."""
    own = SOURCE_DIR / f"{stem}.py"
    if own.exists():
        cells = parse_cells(own.read_text())
    else:
        header = (SOURCE_DIR / f"{stem}.md").read_text().strip()
        cells = [new_markdown_cell(header), *parse_cells((SOURCE_DIR / "experiment.py").read_text())]
        params = [c for c in cells if "parameters" in c.metadata.get("tags", [])]
        source, n = re.subn(r'^EXPERIMENT = ".*"$', f'EXPERIMENT = "{NOTEBOOKS[stem]}"',
                            params[0].source, flags=re.MULTILINE)
        if n != 1:
            raise ValueError("The template's parameters cell needs one `EXPERIMENT = ...` line.")
        params[0].source = source
    first = cells[0]
    title, _, rest = first.source.partition("\n")
    first.source = f"{title}\n\n{colab_badge(stem)}\n{rest}".rstrip()
    for i, cell in enumerate(cells):
        cell.id = f"cell-{i:02d}"  # stable ids: regenerating changes no more than the sources
    return new_notebook(cells=cells, metadata=dict(KERNEL))


def carry_outputs(notebook, existing) -> None:
    """Gives each unchanged code cell the outputs it has in `existing`."""
    stored = {}
    for cell in existing.cells:
        if cell.cell_type == "code":
            stored.setdefault(cell.source, cell)
    for cell in notebook.cells:
        old = stored.get(cell.source) if cell.cell_type == "code" else None
        if old is not None:
            cell.outputs = old.outputs
            cell.execution_count = old.execution_count
            cell.metadata.update({k: v for k, v in old.metadata.items() if k != "tags"})
    for key in ("papermill", "widgets"):
        if key in existing.metadata:
            notebook.metadata[key] = existing.metadata[key]


def _sources(nb) -> list:
    return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stems", nargs="*", help="notebooks to write (default: all)")
    parser.add_argument("--clear", action="store_true", help="write without stored outputs")
    parser.add_argument("--check", action="store_true",
                        help="write nothing; exit 1 if a notebook's cells differ from its source")
    args = parser.parse_args(argv)
    unknown = sorted(set(args.stems) - set(NOTEBOOKS))
    if unknown:
        parser.error(f"unknown notebooks {unknown}; known: {list(NOTEBOOKS)}")
    stale = []
    for stem in args.stems or NOTEBOOKS:
        path = NOTEBOOKS_DIR / f"{stem}.ipynb"
        notebook = build(stem)
        existing = nbformat.read(path, as_version=4) if path.exists() else None
        if args.check:
            if existing is None or _sources(existing) != _sources(notebook):
                stale.append(stem)
            continue
        if existing is not None and not args.clear:
            carry_outputs(notebook, existing)
        nbformat.write(notebook, path)
        print(f"wrote {path.relative_to(ROOT)}")
    if stale:
        print(f"out of date with notebooks/source: {stale} (run tools/make_notebooks.py)")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
