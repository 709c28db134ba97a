"""The user-facing pages say what the code does: every command line in them parses, every
option they name exists, the model table matches the models, and the front door stays short."""

from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

import hrmedseg
from hrmedseg.cli import build_parser
from hrmedseg.complexity import SAM_VIT_H_PARAMS, count_parameters
from hrmedseg.training.config import load_config

ROOT = Path(__file__).resolve().parents[1]
USER_PAGES = [ROOT / "README.md", *sorted((ROOT / "docs" / "guide").glob("*.md"))]


def _command_lines(page: Path) -> list[str]:
    """The ``hrmedseg ...`` command lines in a page's shell blocks, continuations joined."""
    blocks = re.findall(r"```bash\n(.*?)```", page.read_text(encoding="utf-8"), flags=re.S)
    lines = []
    for block in blocks:
        for line in block.replace("\\\n", " ").splitlines():
            line = line.split(" #")[0].strip()
            if line.startswith("hrmedseg ") or line.startswith("hrmedseg\t"):
                lines.append(line)
    return lines


def _parsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    return next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices


def test_the_guides_exist_and_the_readme_links_them():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for name in ("data", "train", "evaluate", "predict", "prompts", "distill", "serve", "onnx", "volumes"):
        assert (ROOT / "docs" / "guide" / f"{name}.md").is_file()
        assert f"(docs/guide/{name}.md)" in readme


def test_the_readme_is_a_front_door():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 150, f"README.md has {len(lines)} lines; move the detail into docs/guide/"


@pytest.mark.parametrize("page", USER_PAGES, ids=lambda p: p.name)
def test_every_command_line_in_the_docs_parses(page):
    parsers = _parsers()
    for line in _command_lines(page):
        words = [w for w in shlex.split(line.replace("$k", "0"))[1:]]
        command = words[0]
        assert command in parsers, f"{page.name}: unknown command in `{line}`"
        # Required options may be left out of a line that shows one option; unknown ones may not.
        known = {s for a in parsers[command]._actions for s in a.option_strings}
        for word in words:
            if word.startswith("--"):
                assert word in known, f"{page.name}: `hrmedseg {command}` has no option {word}"


@pytest.mark.parametrize("config", sorted((ROOT / "configs").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_config_loads_and_names_a_registered_model(config):
    loaded = load_config(config, data="d", output="o")
    assert loaded.model in hrmedseg.list_models(), f"{config.name}: unknown model {loaded.model}"


@pytest.mark.parametrize("page", [*USER_PAGES, *(ROOT / "docs" / p for p in ("benchmarks.md", "model.md")),
                                  ROOT / "CHANGELOG.md"],
                         ids=lambda p: p.name)  # fmt: skip
def test_user_pages_speak_to_users(page):
    text = page.read_text(encoding="utf-8")
    assert "../shared" not in text, f"{page.name} points outside the repository"
    for pattern in (r"\bissue \d+", r"\bthis issue\b", r"\bOwed\b", r"\blent\b"):
        found = re.search(pattern, text)
        assert not found, f"{page.name}: a note to ourselves ({found.group(0)!r})"


def test_the_readme_model_table_matches_the_models():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `(hrmedseg\w+)` \|[^|]*\| ([\d.]+) M \| ([\d.]+) % \|", readme, flags=re.M)
    assert len(rows) >= 5
    for name, millions, share in rows:
        params = count_parameters(hrmedseg.create_model(name))
        assert f"{params / 1e6:.2f}" == millions, name
        assert f"{100 * params / SAM_VIT_H_PARAMS:.2f}" == share, name
