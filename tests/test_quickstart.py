"""The README's quick start, run as written: every command of its code blocks, in order. Also,
the documentation's links lead somewhere and the space files it shows whole are the real ones.

The commands are read from the README's `## Quick start` section (its ```bash lines and ```python
blocks), so a README that names a command, flag, file or column the code does not have fails
here. They run in a working folder of their own, where two files stand in for what a test cannot
run in seconds; the command lines themselves are the README's, unchanged:

- `../shared/data/cifar10-jpeg.zip` is a generated zip of 10 classes named as CIFAR-10's, 8 tiny
  32x32 images each per split (conftest.make_tree), not the real CIFAR-10;
- each `spaces/NAME.yaml` a command names is tests/cli.py's tiny space (an MLP, 3 trials of 4
  epochs, 1 finalist, 3 images per class, the tiny-random extractor) under the real file's `name`,
  so its run folder is the one the README reads. The real file is only checked to load.

The commands run as the other end-to-end tests run them: each command's `main` in this process,
on the session's Ray cluster (tests/cli.py's in_process).
"""

from __future__ import annotations

import re
import shlex
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli import ROOT, in_process, tiny_space
from conftest import make_tree, zip_tree

from search.settings import load_spec

README = ROOT / "README.md"
SECTION = "## Quick start"
BLOCK = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)


def quick_start() -> str:
    text = README.read_text()
    start = text.index(f"\n{SECTION}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def steps(section: str) -> list[tuple[str, object]]:
    """("command", argv) for each line of a bash block, ("python", code) for each python block."""
    out = []
    for language, body in BLOCK.findall(section):
        if language == "python":
            out.append(("python", body))
        elif language == "bash":
            out += [("command", argv) for line in body.splitlines() if (argv := shlex.split(line, comments=True))]
    return out


def stand_in_spaces(work: Path, commands: list[list[str]]) -> None:
    """work/spaces/NAME.yaml for every --space the commands name: the tiny space, named as the real one."""
    for argv in commands:
        if "--space" not in argv:
            continue
        relative = argv[argv.index("--space") + 1]
        real = load_spec(ROOT / relative)  # the README names a real space file that loads
        raw = yaml.safe_load(tiny_space(work.parent).read_text())
        target = work / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump({**raw, "name": real.name}))


def trial_records(work: Path) -> dict[str, str]:
    """Every trial's epoch records under work/runs: unchanged, no trial was trained again."""
    return {str(p): p.read_text() for p in sorted(work.glob("runs/*/*/metrics.jsonl"))}


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A working folder with the README's data path beside it, and the commands' working directory."""
    folder = tmp_path / "checkout"
    folder.mkdir()
    data = tmp_path / "shared" / "data"
    data.mkdir(parents=True)
    zip_tree(make_tree(tmp_path / "tree", per_class=8), data / "cifar10-jpeg.zip")
    monkeypatch.chdir(folder)
    return folder


def run_command(argv: list[str], work: Path, ran: list[list[str]]) -> None:
    """One README command; run a second time, it must resume and train nothing again."""
    assert argv[:2] == ["python", "-m"], f"the quick start shows {shlex.join(argv)!r}, which this test cannot run"
    before = trial_records(work)
    proc = in_process([sys.executable, *argv[1:]])
    assert proc.returncode == 0, f"{shlex.join(argv)}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    if argv in ran:
        assert "resuming" in proc.stdout and trial_records(work) == before, shlex.join(argv)
    if "--out" in argv:
        assert (work / argv[argv.index("--out") + 1]).is_file(), shlex.join(argv)
    ran.append(argv)


def run_python(code: str) -> None:
    """A README Python block; its last line, an expression, must give a non-empty table."""
    *body, last = code.strip().splitlines()
    namespace: dict = {}
    exec("\n".join(body), namespace)  # noqa: S102 -- running the README's own code is the test
    shown = eval(last, namespace)
    assert isinstance(shown, pd.DataFrame) and len(shown), code


@pytest.mark.slow
def test_every_quick_start_command_runs_as_the_readme_shows(work, ray_session):
    section = quick_start()
    todo = steps(section)
    assert [kind for kind, _ in todo].count("command") >= 5, section  # smoke, main, show, sample, resume
    stand_in_spaces(work, [argv for kind, argv in todo if kind == "command"])
    ran: list[list[str]] = []
    for kind, step in todo:
        if kind == "command":
            run_command(step, work, ran)
        else:
            run_python(step)
    assert any(argv in ran[:i] for i, argv in enumerate(ran)), "the quick start shows no resume"


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces as hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    return {slug(h) for h in re.findall(r"^#+ (.*)$", BLOCK.sub("", page.read_text()), re.MULTILINE)}


DOCS = [README, *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_every_link_between_the_docs_leads_to_a_page_and_heading(page):
    for target in re.findall(r"\]\(([^)\s]+)\)", BLOCK.sub("", page.read_text())):
        if re.match(r"\w+://", target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        assert linked.is_file(), f"{page.name}: {target}: no such file"
        assert not anchor or anchor in anchors(linked), f"{page.name}: {target}: no such heading"


@pytest.mark.parametrize("page", DOCS, ids=lambda p: p.name)
def test_a_space_file_the_docs_show_whole_is_the_real_one(page):
    """A YAML block with a `name:` line is a whole space file: spaces/NAME.yaml, as it is."""
    for language, body in BLOCK.findall(page.read_text()):
        name = re.search(r"^name: (\S+)$", body, re.MULTILINE)
        if language == "yaml" and name:
            assert body == (ROOT / "spaces" / f"{name[1]}.yaml").read_text(), f"{page.name}: {name[1]}"
