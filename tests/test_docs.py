"""The field tables of docs/spaces.md say what the classes they describe say, so adding a setting
cannot leave the docs behind (a new Recipe field fails here until its row is written)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import yaml

from cvae_core.config import ModelConfig, Recipe, column_types
from search.settings import parse_spec, read_yaml
from search.space import DEFAULTS, GROUP_PARAMS, TOP_PARAMS

ROOT = Path(__file__).resolve().parents[1]
SPACES = ROOT / "docs" / "spaces.md"
RUN_FOLDER = SPACES.with_name("run-folder.md")


def table(header: str) -> list[list[str]]:
    """The rows of the table whose header row starts with `header`, as cells."""
    lines = SPACES.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(header))
    rows = []
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        rows.append([cell.strip() for cell in line.strip("|").split(" | ")])
    return rows


def names(cell: str) -> list[str]:
    """The `code` names in a cell: "`lr`, `batch_size`" -> [lr, batch_size]."""
    return [part.split("`")[1] for part in cell.split(", ") if part.startswith("`")]


def test_the_recipe_table_is_every_field_with_its_default_and_help():
    rows = table("| `Recipe` field |")
    assert rows == [[f"`{f.name}`", str(f.default), f.metadata["help"]] for f in dataclasses.fields(Recipe)]


def test_the_model_table_names_every_field_once():
    named = [n for row in table("| `ModelConfig` field |") for n in names(row[0])]
    assert sorted(named) == sorted(f.name for f in dataclasses.fields(ModelConfig))


def test_the_defaults_table_is_the_spaces_defaults():
    rows = table("| key | default |")
    assert {row[0].strip("`"): yaml.safe_load(row[1]) for row in rows} == DEFAULTS


def test_the_run_folders_tables_name_every_configuration_column():
    text = RUN_FOLDER.read_text()
    assert [c for c in column_types() if f"`{c}`" not in text] == []


def test_the_language_table_names_every_key():
    first = [row[0] for row in table("| key | read by | value |")]
    keys = {n for cell in first for n in names(cell)}
    groups = {cell.split("`")[1].split(":")[0]: cell for cell in first if ": {" in cell}
    assert set(TOP_PARAMS) <= keys
    for group, params in GROUP_PARAMS.items():
        assert all(p in groups[group] for p in params), group


def key_paths(mapping: dict, at: str = "") -> set[str]:
    """Every key of a nested mapping as a dotted path: {"asha": {"max_t": 1}} -> {"asha.max_t"}."""
    return {path for key, value in mapping.items()
            for path in (key_paths(value, f"{at}{key}.") if isinstance(value, dict) else {f"{at}{key}"})}


@pytest.mark.parametrize("section", ["search", "final"])
def test_the_sections_blocks_give_every_key_with_its_default(section):
    text = SPACES.read_text()
    after = text.index(f"Every key with its default (`search.settings.{section.title()}`)")
    block = yaml.safe_load(text[after:].split("```yaml\n", 1)[1].split("```", 1)[0])
    space = {"space": read_yaml(ROOT / "spaces" / "cnn.yaml")["space"]}
    documented, defaults = parse_spec({**space, **block}), parse_spec(space)
    assert key_paths(block[section]) == key_paths(getattr(defaults, section).model_dump())
    assert getattr(documented, section) == getattr(defaults, section)


def test_the_code_map_names_every_module_and_no_other():
    """docs/code.md's tables: one row per module of each package, so a new module is placed on the map."""
    text = SPACES.with_name("code.md").read_text()
    for package in ("cvae_core", "results", "search"):
        section = text.split(f"## {package}:")[1].split("\n## ")[0]
        named = {line.split("`")[1] for line in section.splitlines() if line.startswith("| `")}
        assert named == {p.name for p in (ROOT / package).glob("*.py") if p.name != "__init__.py"}, package
