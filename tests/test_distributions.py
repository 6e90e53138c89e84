"""search.distributions: a key's value or distribution, validated into what Optuna samples, and
the JSON Schema an editor checks it with, from the same type."""

import jsonschema
import pytest
from pydantic import TypeAdapter, ValidationError

from search.distributions import Choice, Fixed, IntRange, Param, Uniform, dist_type


def adapter(name, param, discrete=False):
    return TypeAdapter(dist_type(name, param, discrete))


@pytest.mark.parametrize("raw, dist", [
    (3e-4, Fixed(3e-4)), (1, Fixed(1.0)), ({"choice": [1e-4, 1e-3]}, Choice((1e-4, 1e-3))),
    ({"uniform": [0.1, 0.2]}, Uniform(0.1, 0.2)), ({"loguniform": [1e-4, 1e-2]}, Uniform(1e-4, 1e-2, log=True)),
])
def test_a_number_is_fixed_or_sampled_from_any_distribution(raw, dist):
    assert adapter("lr", Param.field("lr")).validate_python(raw) == dist


def test_an_integer_takes_int_ranges_and_a_name_choices_only():
    assert adapter("latent", Param.field("latent")).validate_python({"int": [8, 64]}) == IntRange(8, 64)
    names = adapter("lr_schedule", Param.field("lr_schedule"), discrete=True)
    assert names.validate_python({"choice": ["constant", "cosine"]}) == Choice(("constant", "cosine"))
    for refused in ({"uniform": [0, 1]}, {"int": [0, 1]}, "linear", [1, 2]):
        with pytest.raises(ValidationError):
            names.validate_python(refused)


def test_the_json_schema_accepts_exactly_what_validation_accepts():
    latent = adapter("latent", Param.field("latent"))
    schema = jsonschema.Draft202012Validator(latent.json_schema())
    for raw in (8, {"choice": [8, 16]}, {"int": [8, 64]}, 0, {"uniform": [1, 2]}, {"choice": []}, 2.5, {"int": [8]}):
        try:
            latent.validate_python(raw)
            valid = True
        except ValidationError:
            valid = False
        assert schema.is_valid(raw) == valid, raw
