"""README.md and docs/: every link and named repository path exists, the commands are CI's."""

import glob
import importlib.util
import pathlib
import re
import subprocess

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
CODE = re.compile(r"`([^`\n]+)`")


def prose(page):
    """The page without its fenced code blocks: commands there make files, they need not exist."""
    return FENCE.sub("", page.read_text())


def top_level():
    """The repository's top-level files and folders: tracked or not ignored (not runs/)."""
    try:
        listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                                cwd=ROOT, capture_output=True, text=True, check=True).stdout
        return {line.split("/")[0] for line in listed.splitlines()}
    except (OSError, subprocess.CalledProcessError):  # not a git checkout
        return {p.name for p in ROOT.iterdir()}


def slug(heading):
    """GitHub's anchor for a heading."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page):
    return {slug(line.lstrip("#")) for line in prose(page).splitlines() if line.startswith("#")}


def named_paths(page, names):
    """Backticked repository paths on `page` (the first part a top-level file or folder)."""
    for span in CODE.findall(prose(page)):
        if not re.search(r"\s", span) and span.split("/")[0].split("::")[0] in names:
            yield span


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_exists(page):
    missing = []
    for target in LINK.findall(prose(page)):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists():
            missing.append(target)
        elif anchor and linked.suffix == ".md" and anchor not in anchors(linked):
            missing.append(f"{target} (no such heading)")
    assert not missing, f"{page.name} links to what does not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_named_file_or_folder_exists(page):
    missing = []
    for span in named_paths(page, top_level()):
        path, _, test = span.partition("::")
        # `results/<run>/...` and `runs/<experiment>[_<protocol>]` name a kind of path: one must exist.
        pattern = re.sub(r"<[^>]*>|\[[^\]]*\]", "*", path)
        found = [pathlib.Path(p) for p in glob.glob(str(ROOT / pattern))]
        if not found:
            missing.append(span)
        elif test and not re.search(rf"^def {re.escape(test)}\(", found[0].read_text(), re.MULTILINE):
            missing.append(span)
    assert not missing, f"{page.name} names what does not exist: {missing}"


def test_the_path_check_sees_paths_and_placeholders(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("`results/e4/` and `figures/<run>_accuracy.png`, not `--out results`, "
                    "`model.keras` or `runs/e4/`\n```\n`results/nothing`\n```\n")
    assert list(named_paths(page, {"results", "figures"})) == ["results/e4/",
                                                               "figures/<run>_accuracy.png"]


def test_every_docs_page_is_linked_from_the_readme():
    links = LINK.findall(prose(ROOT / "README.md"))
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in links}
    assert not [p.name for p in PAGES[1:] if p.resolve() not in linked]


def test_the_readme_lists_every_notebook_with_its_colab_badge():
    """The badges point where the notebooks' own badges do (tools/make_notebooks.py)."""
    from squeeze_keras.study import NOTEBOOKS  # imports TensorFlow: only this test needs it

    spec = importlib.util.spec_from_file_location("make_notebooks", ROOT / "tools" / "make_notebooks.py")
    converter = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(converter)
    readme = (ROOT / "README.md").read_text()
    assert not [stem for stem in NOTEBOOKS if converter.colab_badge(stem) not in readme]


def commands(text):
    """Shell commands, one a line or joined by &&, comments dropped, as `pip`/`pytest` alike."""
    found = set()
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        for command in filter(None, (c.strip() for c in line.split("&&"))):
            words = [w for w in command.split() if w not in ("--quiet", "--disable-pip-version-check")]
            if words[:2] == ["python", "-m"]:
                words = words[2:]
            if words and words[0] in ("pip", "pytest"):
                found.add(" ".join(words))
    return found


def test_the_readme_set_up_commands_are_the_ones_ci_runs():
    readme = (ROOT / "README.md").read_text()
    set_up = readme.split("## Set-up", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands(set_up) == commands(ci) == {
        "pip install -r requirements.txt", "pip install --no-deps -e .", "pytest"}
