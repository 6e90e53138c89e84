import json
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import CNN_RESNET_SPACE

from search.schema import main, space_file_schema
from search.settings import run_name_problem

SPACES = Path(__file__).resolve().parents[1] / "spaces"


@pytest.fixture(scope="module")
def validator():
    schema = space_file_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


@pytest.mark.parametrize("name", sorted(p.name for p in SPACES.glob("*.yaml")))
def test_every_shipped_space_validates_against_the_schema(validator, name):
    assert list(validator.iter_errors(yaml.safe_load((SPACES / name).read_text()))) == []


@pytest.mark.parametrize("change", [
    {"space": {"family": "cnn", "latent": 8, "lr": {"normal": [0, 1]}}},
    {"space": {"family": "rnn", "latent": 8}},
    {"space": {"presets": ["mlp-M1"], "latent": 8}},
    {"space": {"presets": ["mlp-M1"], "lr": {"uniform": [1.0e-4, 1.0e-3]}}},  # presets run as a grid
    {"search": {"asha": {"brackets": 2}}},
    {"search": {"objective": {"metric": "psnr"}}},
    {"final": {"samplers": ["flow"]}},
    {"final": {"top_k": 0}},
    {"serach": {}},
    {"space": {"family": "resnet", "latent": 8, "resnet": {"width": 8}}},  # scales, blocks missing
    {"space": {"family": "resnet", "latent": 8, "resnet": {"width": 8, "scales": 3, "blocks": 1, "cond_norm": "yes"}}},
    {"space": {"family": "mlp", "latent": 8, "mlp": {"layers": 1, "width": 32}, "ema": 1.5}},
])
def test_the_schema_catches_what_an_editor_should_flag(validator, change):
    raw = {"space": {"family": "mlp", "latent": 8, "mlp": {"layers": 1, "width": 32}}, **change}
    assert list(validator.iter_errors(raw))


def test_python_m_search_schema_prints_it(capsys):
    assert main([]) == 0
    assert json.loads(capsys.readouterr().out) == space_file_schema()


def test_a_conditional_cnn_and_resnet_space_validates(validator):
    assert list(validator.iter_errors({"space": CNN_RESNET_SPACE})) == []


@pytest.mark.parametrize("name", ["cnn", "run 2", ".hidden", "...", "a.b", "", " ", "\n", ".", "..", "a/b", "a\\b",
                                  "/", "..\n", " .. ", "a\0b"])
def test_the_schema_takes_a_run_name_exactly_when_the_command_does(validator, name):
    raw = {"name": name, "space": {"family": "mlp", "latent": 8, "mlp": {"layers": 1, "width": 32}}}
    assert (not list(validator.iter_errors(raw))) == (run_name_problem(name) is None)
