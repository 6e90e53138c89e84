"""The values a space file's key takes (`Param`) and its distribution language, as pydantic types.

A key is a fixed value or one distribution: {choice: [...]}, {uniform: [lo, hi]},
{loguniform: [lo, hi]} or {int: [lo, hi]}. `dist_type` is the pydantic type of one key: it
validates what the file says and gives the distribution Optuna samples (`Fixed`, `Choice`,
`Uniform`, `IntRange`), and its JSON Schema is what an editor checks. Every error is one line in
the project's words (search.validation).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Annotated, Any, Literal, Union

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    create_model,
    model_validator,
)

from cvae_core.config import CHOICES, RANGES, Range

# ------------------------------------------------------------------------ what Optuna samples


@dataclass(frozen=True)
class Fixed:
    value: Any

    def suggest(self, trial, name: str) -> Any:
        return self.value

    def values(self) -> tuple:
        return (self.value,)


@dataclass(frozen=True)
class Choice:
    options: tuple

    def suggest(self, trial, name: str) -> Any:
        return trial.suggest_categorical(name, list(self.options))

    def values(self) -> tuple:
        return self.options


@dataclass(frozen=True)
class Uniform:
    low: float
    high: float
    log: bool = False

    def suggest(self, trial, name: str) -> float:
        return trial.suggest_float(name, self.low, self.high, log=self.log)

    def values(self) -> tuple:
        return (self.low, self.high)


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int

    def suggest(self, trial, name: str) -> int:
        return trial.suggest_int(name, self.low, self.high)

    def values(self) -> range:
        # A range, not a tuple: `{int: [1, 1000000000]}` is a valid space, and listing it would hang.
        return range(self.low, self.high + 1)


Dist = Fixed | Choice | Uniform | IntRange
KINDS = ("choice", "uniform", "loguniform", "int")


# ------------------------------------------------------------------------ what a key takes


@dataclass(frozen=True)
class Param:
    """What one key accepts: kind "int" | "float" | "str" | "bool"; allowed names, or a number's range."""

    kind: str
    names: tuple[str, ...] = ()
    range: Range | None = None

    @classmethod
    def field(cls, name: str) -> Param:
        """A field of ModelConfig or Recipe, in the range or among the names they check
        (cvae_core.config.RANGES, CHOICES)."""
        if name in CHOICES:
            return cls("str", names=CHOICES[name])
        return cls(RANGES[name].kind, range=RANGES[name])

    def value_type(self) -> Any:
        """One value of this key, as a pydantic type."""
        if self.kind == "str":
            return Literal[self.names]
        if self.kind == "bool":
            return bool
        r = self.range
        bounds = {"gt" if r.exclusive else "ge": r.minimum, **({"lt": r.below} if r.below is not None else {}),
                  **({"le": r.maximum} if r.maximum is not None else {})}
        return Annotated[int if self.kind == "int" else float, Field(**bounds)]


class Strict(BaseModel):
    """A mapping of a space file: its keys declared, each value checked as it is (1.5 is no integer)."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, allow_inf_nan=False)


class _ChoiceOf(Strict):
    def dist(self) -> Choice:
        return Choice(tuple(self.choice))

    @model_validator(mode="after")
    def _options(self) -> _ChoiceOf:
        if len(set(self.choice)) != len(self.choice):
            raise ValueError(f"choice: has repeated options {list(self.choice)}")
        return self


class _Between(Strict):
    """{kind: [low, high]}: one field, named as its kind."""

    def _kind_pair(self) -> tuple[str, Any, Any]:
        (kind, (low, high)), = self.model_dump().items()
        return kind, low, high

    def dist(self) -> Uniform | IntRange:
        kind, low, high = self._kind_pair()
        return IntRange(low, high) if kind == "int" else Uniform(low, high, log=kind == "loguniform")

    @model_validator(mode="after")
    def _bounds(self) -> _Between:
        kind, low, high = self._kind_pair()
        if not low < high:
            raise ValueError(f"{kind}: low={low} must be < high={high}")
        if kind == "loguniform" and low <= 0:
            raise ValueError(f"{kind}[0]: loguniform needs low > 0, got {low}")
        return self


def _kinds(param: Param, discrete: bool) -> tuple[str, ...]:
    """The distributions a key takes: choice always; int for integers; uniform and loguniform
    for numbers that are not discrete-only."""
    if param.kind == "int":
        return ("choice", "int")
    if param.kind == "float" and not discrete:
        return ("choice", "uniform", "loguniform")
    return ("choice",)


def _one_form(param: Param, discrete: bool):
    """Before anything else: a list, several keys or a distribution this key does not take, in words."""

    def check(raw: Any) -> Any:
        if isinstance(raw, list):
            raise ValueError("a list is not a value; write {choice: [...]} to choose")
        if not isinstance(raw, dict):
            return raw
        if len(raw) != 1:
            raise ValueError(f"a distribution has exactly one key ({', '.join(KINDS)}), got {sorted(raw)}")
        (kind, arg), = raw.items()
        if kind == "choice":
            if not isinstance(arg, list) or not arg:
                raise ValueError("choice: must be a non-empty list")
            return raw
        if kind not in KINDS:
            raise ValueError(f"unknown distribution {kind!r}; use {', '.join(KINDS[:-1])} or {KINDS[-1]}")
        if discrete and kind != "int":
            raise ValueError(f"{kind}: this key takes a fixed value, choice or int only")
        if param.kind in ("str", "bool"):
            raise ValueError(f"{kind}: {'a name' if param.kind == 'str' else 'true/false'} takes a fixed value or a "
                             "choice")
        if not isinstance(arg, list) or len(arg) != 2:
            raise ValueError(f"{kind}: must be [low, high]")
        if kind == "int" and param.kind != "int":
            raise ValueError(f"{kind}: this key is not an integer; use uniform or loguniform")
        if kind != "int" and param.kind == "int":
            raise ValueError(f"{kind}: this key is an integer; use int or choice")
        return raw

    return check


def _form_of(raw: Any) -> str:
    """The union member a raw value is (its tag): a fixed value, or its distribution's key."""
    return f"<{next(iter(raw))}>" if isinstance(raw, dict) else "<value>"


@functools.cache  # one set of models per key, however many forms of a section take it
def dist_type(name: str, param: Param, discrete: bool = False) -> Any:
    """The pydantic type of key `name` (unique among the file's keys: it names its JSON Schema
    definitions): a fixed value of `param`, or one of the distributions it takes, validated into
    the distribution (Fixed, Choice, Uniform, IntRange)."""
    value = param.value_type()
    members = [Annotated[value, AfterValidator(Fixed), Tag("<value>")]]
    for kind in _kinds(param, discrete):
        base = _ChoiceOf if kind == "choice" else _Between
        size = {"minItems": 1} if kind == "choice" else {"minItems": 2, "maxItems": 2}
        model = create_model(f"{name}_{kind}", __base__=base,
                             **{kind: (list[value], Field(json_schema_extra=size))})
        members.append(Annotated[model, AfterValidator(lambda m: m.dist()), Tag(f"<{kind}>")])
    union = Annotated[Union[tuple(members)], Discriminator(_form_of)]  # noqa: UP007 (a tuple of members)
    return Annotated[union, BeforeValidator(_one_form(param, discrete))]


def fixed_type(param: Param, why: str) -> Any:
    """The pydantic type of a key that takes a fixed value only (validated into Fixed); a
    distribution is refused with `why`."""

    def fixed_only(raw: Any) -> Any:
        if isinstance(raw, (dict, list)):
            raise ValueError(why)
        return raw

    return Annotated[param.value_type(), AfterValidator(Fixed), BeforeValidator(fixed_only)]
