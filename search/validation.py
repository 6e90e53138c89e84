"""Pydantic's errors on a space file, as one line each: `key.path: problem`, worded as the rest
of the project words them (a number's range, a name's choices, a missing or unknown key). The
space file's sections are pydantic models (search.space, search.settings); this turns the first
error of a validation into the SpaceError the commands print.
"""

from __future__ import annotations

import re
from typing import Any, Literal, get_args, get_origin

from pydantic import BaseModel, ValidationError


class SpaceError(ValueError):
    """A space file is invalid: `file: key.path: problem`."""


# A validator's message that names a key or a list item below the one it validates:
# "[1]: listed twice", "grace_period: must be <= max_t", "loguniform[0]: ...".
_ITEM_OR_KEY = re.compile(r"^(\w*(?:\[\d+\])*): (.*)$", re.S)
# A tagged union's member (search.distributions' forms of a key) adds its tag to an error's location:
# tags are written <like-this>, and left out of the key path.
TAG = re.compile(r"^<.*>$")
_NAMED = re.compile(r"'([^']*)'")  # the names in pydantic's "'a', 'b' or 'c'"


def number_as_text_problem(value: Any) -> str | None:
    """For a number that YAML read as text (1e-4: PyYAML wants a dot and a signed exponent), the
    problem and how to write it; None for anything else."""
    if not isinstance(value, str):
        return None
    try:
        number = float(value)
    except ValueError:
        return None
    return (f"{value!r} is text to YAML, not a number: write {_yaml_float(number)} "
            "(a dot before the e, a signed exponent)")


def _yaml_float(value: float) -> str:
    """`value` as YAML 1.1 reads a float: 1e-4 -> 1.0e-04 (PyYAML takes 1e-4 for a string)."""
    text = repr(value)
    if "e" not in text:
        return text
    mantissa, exponent = text.split("e")
    return f"{mantissa if '.' in mantissa else mantissa + '.0'}e{exponent if exponent[0] in '+-' else '+' + exponent}"


def _bound(value: float) -> str:
    """A field's bound as a user writes it: 4294967295, not 4.29497e+09; 1e-06 for a small float."""
    return str(value) if isinstance(value, int) else f"{value:g}"


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The settings model that holds the key at `loc` (for the list of known keys)."""
    for key in loc[:-1]:
        field = model.model_fields.get(key) if isinstance(key, str) else None
        if field is None:
            return None
        inner = [a for a in (get_args(field.annotation) or (field.annotation,)) if isinstance(a, type)]
        model = next((a for a in inner if issubclass(a, BaseModel)), None)
        if model is None:
            return None
    return model


def _literal_values(model: type[BaseModel] | None, key: Any) -> list | None:
    field = model.model_fields.get(key) if model is not None and isinstance(key, str) else None
    stack = [field.annotation] if field is not None else []
    while stack:
        t = stack.pop()
        if get_origin(t) is Literal:
            return list(get_args(t))
        stack += [a for a in get_args(t) if a is not type(None)]
    return None


def _problem(error: dict, root: type[BaseModel], where: str) -> tuple[str, str]:
    """(key path, problem) of one pydantic error, worded as the rest of the project words them."""
    loc = tuple(k for k in error["loc"] if not (isinstance(k, str) and TAG.match(k)))
    path = where + "".join(f"[{k}]" if isinstance(k, int) else f".{k}" for k in loc)
    if error["type"] == "value_error":
        text = str(error["ctx"]["error"])
        if (m := _ITEM_OR_KEY.match(text)) and m.group(1):
            part, text = m.groups()
            path += part if part.startswith("[") else f".{part}"
        return path, text
    value, kind, ctx = error.get("input"), error["type"], error.get("ctx", {})
    holder = _model_at(root, loc)
    if kind == "missing":
        return path, "missing"
    if kind == "extra_forbidden":
        known = sorted(holder.model_fields) if holder is not None else []
        return path, f"unknown key; known: {known}"
    if kind in ("int_type", "float_type", "int_parsing", "float_parsing", "finite_number"):
        text = number_as_text_problem(value)
        if text:
            return path, text
        if kind == "finite_number":
            return path, f"{value!r} is not finite"
        if kind == "int_type" and isinstance(value, float):
            return path, f"{value!r} is not an integer"
        return path, f"{value!r} is not a number"
    if kind == "greater_than_equal":
        return path, f"{value!r} must be >= {_bound(ctx['ge'])}"
    if kind == "greater_than":
        return path, f"{value!r} must be > {_bound(ctx['gt'])}"
    if kind == "less_than":
        return path, f"{value!r} must be < {_bound(ctx['lt'])}"
    if kind == "less_than_equal":
        return path, f"{value!r} must be <= {_bound(ctx['le'])}"
    if kind == "literal_error":
        return path, f"{value!r} is not one of {_NAMED.findall(ctx['expected'])}"
    if kind in ("model_type", "dict_type", "model_attributes_type"):
        return path, f"must be a mapping, got {type(value).__name__}"
    if kind in ("tuple_type", "list_type", "too_short"):
        names = _literal_values(holder, loc[-1]) if loc else None
        return path, "must be a non-empty list" + (f" of {names}" if names else "")
    if kind == "string_type":
        return path, f"{value!r} is not a string"
    if kind in ("bool_type", "bool_parsing"):
        return path, f"{value!r} is not true or false"
    return path, error["msg"]


def validated(model: type[BaseModel], raw: Any, where: str) -> Any:
    """`raw` (None: an empty section, all defaults) as `model`, or a SpaceError naming the key path
    under `where` and the problem, worded as the rest of the project words them."""
    try:
        return model.model_validate({} if raw is None else raw)  # an empty section: all defaults
    except ValidationError as e:
        path, problem = _problem(e.errors()[0], model, where)
        raise SpaceError(f"{path}: {problem}") from None
