"""The `space:` section of a space file: what Optuna samples, in a small distribution language.

    space:                             # each value is fixed, or one distribution:
      family: {choice: [mlp, cnn]}     #   {choice: [...]}, {uniform: [lo, hi]},
      latent: {int: [32, 256]}         #   {loguniform: [lo, hi]}, {int: [lo, hi]}
      lr: {loguniform: [1.0e-4, 3.0e-3]}
      conv: {layers: .., channels: .., kernel_size: .., stride: .., padding: ..}  # cnn only
      h: ..                            # cnn: width of the linear layer after the convs
      mlp: {layers: .., width: ..}     # mlp only: widths width, width/2, ...

or, instead of sampled architectures, `space: {presets: [cnn-arch3-M3, ...]}` runs exactly those
models (a grid, no Optuna). `Space` is Optuna's define-by-run space and `model_config` maps the
flat configuration it samples to a ModelConfig. Every error names the key path and the problem.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from typing import Any

from cvae_core.config import (
    ACTIVATIONS,
    FAMILIES,
    LIKELIHOODS,
    NORMS,
    REPORT,
    ConfigError,
    ConvLayer,
    ModelConfig,
)
from cvae_core.presets import PRESETS, preset_config


class SpaceError(ValueError):
    """A space file is invalid: `file: key.path: problem`."""


# ------------------------------------------------------------------------ distributions


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

    def values(self) -> tuple:
        return tuple(range(self.low, self.high + 1))


Dist = Fixed | Choice | Uniform | IntRange


# ------------------------------------------------------------------------ parameters

@dataclass(frozen=True)
class Param:
    """What one key accepts: kind "int" | "float" | "str", bounds or allowed names."""

    kind: str
    minimum: float | None = None
    exclusive: bool = False  # minimum itself is not allowed
    names: tuple[str, ...] = ()

    def check(self, value: Any, where: str) -> Any:
        if self.kind == "str":
            if value not in self.names:
                raise SpaceError(f"{where}: {value!r} is not one of {list(self.names)}")
            return value
        if text := number_as_text_problem(value):
            raise SpaceError(f"{where}: {text}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"{where}: {value!r} is not a number")
        if self.kind == "int" and not isinstance(value, int):
            raise SpaceError(f"{where}: {value!r} is not an integer")
        if not math.isfinite(value):
            raise SpaceError(f"{where}: {value!r} is not finite")
        if self.minimum is not None and (value < self.minimum or (self.exclusive and value == self.minimum)):
            raise SpaceError(f"{where}: {value!r} must be {'>' if self.exclusive else '>='} {self.minimum}")
        return float(value) if self.kind == "float" else value


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


TOP_PARAMS = {
    "family": Param("str", names=FAMILIES),
    "latent": Param("int", 1),
    "lr": Param("float", 0, exclusive=True),
    "batch_size": Param("int", 1),
    "norm": Param("str", names=NORMS),
    "activation": Param("str", names=ACTIVATIONS),
    "likelihood": Param("str", names=LIKELIHOODS),
    "sigma": Param("float", 0, exclusive=True),
    "beta": Param("float", 0),
    "h": Param("int", 1),
}
CONV_PARAMS = {
    "layers": Param("int", 1),
    "channels": Param("int", 1),  # of the first conv; each later conv doubles it
    "kernel_size": Param("int", 1),
    "stride": Param("int", 1),
    "padding": Param("int", 0),
}
MLP_PARAMS = {
    "layers": Param("int", 1),
    "width": Param("int", 1),  # of the first hidden layer; each later one halves it
}
# What a space leaves out: the report's recipe and ModelConfig's defaults (the report's model).
DEFAULTS = {"lr": REPORT.lr, "batch_size": REPORT.batch_size,
            **{f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in TOP_PARAMS
               and f.default is not dataclasses.MISSING}}
DISCRETE_ONLY = {"family", "norm", "activation", "likelihood"}


def _parse_dist(raw: Any, param: Param, where: str, discrete: bool = False) -> Dist:
    if not isinstance(raw, dict):
        if isinstance(raw, list):
            raise SpaceError(f"{where}: a list is not a value; write {{choice: [...]}} to choose")
        return Fixed(param.check(raw, where))
    if len(raw) != 1:
        raise SpaceError(f"{where}: a distribution has exactly one key (choice, uniform, loguniform, int), "
                         f"got {sorted(raw)}")
    (kind, arg), = raw.items()
    at = f"{where}.{kind}"
    if kind == "choice":
        if not isinstance(arg, list) or not arg:
            raise SpaceError(f"{at}: must be a non-empty list")
        opts = tuple(param.check(v, f"{at}[{i}]") for i, v in enumerate(arg))
        if len(set(opts)) != len(opts):
            raise SpaceError(f"{at}: has repeated options {list(opts)}")
        return Choice(opts)
    if kind not in ("uniform", "loguniform", "int"):
        raise SpaceError(f"{where}: unknown distribution {kind!r}; use choice, uniform, loguniform or int")
    if discrete and kind != "int":
        raise SpaceError(f"{at}: this key takes a fixed value, choice or int only")
    if param.kind == "str":
        raise SpaceError(f"{at}: a name takes a fixed value or a choice")
    if not isinstance(arg, list) or len(arg) != 2:
        raise SpaceError(f"{at}: must be [low, high]")
    if kind == "int" and param.kind != "int":
        raise SpaceError(f"{at}: this key is not an integer; use uniform or loguniform")
    if kind != "int" and param.kind == "int":
        raise SpaceError(f"{at}: this key is an integer; use int or choice")
    low, high = (param.check(v, f"{at}[{i}]") for i, v in enumerate(arg))
    if not low < high:
        raise SpaceError(f"{at}: low={low} must be < high={high}")
    if kind == "loguniform" and low <= 0:
        raise SpaceError(f"{at}[0]: loguniform needs low > 0, got {low}")
    return IntRange(low, high) if kind == "int" else Uniform(low, high, log=kind == "loguniform")


def _parse_group(raw: Any, params: dict[str, Param], where: str, discrete_keys=()) -> dict[str, Dist]:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
    unknown = sorted(set(raw) - set(params))
    if unknown:
        raise SpaceError(f"{where}.{unknown[0]}: unknown key; known: {sorted(params)}")
    return {k: _parse_dist(v, params[k], f"{where}.{k}", k in discrete_keys) for k, v in raw.items()}


# ------------------------------------------------------------------------ the space


@dataclass(frozen=True)
class Space:
    """Sampled model and optimiser settings (or a fixed list of presets)."""

    top: dict[str, Dist] = field(default_factory=dict)
    conv: dict[str, Dist] = field(default_factory=dict)
    mlp: dict[str, Dist] = field(default_factory=dict)
    presets: tuple[str, ...] = ()

    def families(self) -> tuple[str, ...]:
        return self.top["family"].values()

    def __call__(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: sample one configuration (a flat dict of plain values)."""
        config = {k: d.suggest(trial, k) for k, d in self.top.items()}
        group = self.conv if config["family"] == "cnn" else self.mlp
        prefix = "conv_" if config["family"] == "cnn" else "mlp_"
        config.update({prefix + k: d.suggest(trial, prefix + k) for k, d in group.items()})
        return config


def model_config(config: dict[str, Any]) -> ModelConfig:
    """The flat trial config (as sampled by `Space`) as a ModelConfig."""
    if "preset" in config:
        return preset_config(config["preset"])
    common = {k: config.get(k, DEFAULTS[k]) for k in ("norm", "activation", "likelihood", "sigma", "beta")}
    if config["family"] == "cnn":
        conv = tuple(
            ConvLayer(config["conv_channels"] * 2**i, config["conv_kernel_size"],
                      config["conv_stride"], config["conv_padding"])
            for i in range(config["conv_layers"])
        )
        return ModelConfig(family="cnn", latent=config["latent"], conv=conv, h=config["h"], **common)
    hidden = tuple(max(1, config["mlp_width"] // 2**i) for i in range(config["mlp_layers"]))
    return ModelConfig(family="mlp", latent=config["latent"], hidden=hidden, **common)


def parse_space_section(raw: Any, where: str = "space") -> Space:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
    if "presets" in raw:
        others = sorted(set(raw) - {"presets", "lr", "batch_size"})
        if others:
            raise SpaceError(f"{where}.{others[0]}: not allowed beside presets (presets fix the model)")
        names = raw["presets"]
        if not isinstance(names, list) or not names:
            raise SpaceError(f"{where}.presets: must be a non-empty list of preset names")
        for i, n in enumerate(names):
            if n not in PRESETS:
                raise SpaceError(f"{where}.presets[{i}]: unknown preset {n!r}; known: {sorted(PRESETS)}")
        top = _parse_group({k: v for k, v in raw.items() if k != "presets"}, TOP_PARAMS, where)
        for k, d in top.items():
            if not isinstance(d, Fixed):
                raise SpaceError(f"{where}.{k}: must be a fixed value beside presets (they run as a grid)")
        for k in ("lr", "batch_size"):
            top.setdefault(k, Fixed(DEFAULTS[k]))
        return Space(top=top, presets=tuple(names))

    body = {k: v for k, v in raw.items() if k not in ("conv", "mlp")}
    if "family" not in body:
        raise SpaceError(f"{where}.family: missing (mlp, cnn or {{choice: [mlp, cnn]}})")
    if "latent" not in body:
        raise SpaceError(f"{where}.latent: missing")
    top = _parse_group(body, TOP_PARAMS, where, discrete_keys=DISCRETE_ONLY)
    families = top["family"].values()
    for fam, key in (("cnn", "conv"), ("mlp", "mlp")):
        if fam not in families and key in raw:
            raise SpaceError(f"{where}.{key}: given, but family is never {fam!r}")
        if fam in families and key not in raw:
            raise SpaceError(f"{where}.{key}: missing (family can be {fam!r})")
    if "cnn" in families and "h" not in top:
        raise SpaceError(f"{where}.h: missing (the width after the conv stack, family can be 'cnn')")
    if "cnn" not in families and "h" in top:
        raise SpaceError(f"{where}.h: given, but family is never 'cnn'")
    for k, d in DEFAULTS.items():
        top.setdefault(k, Fixed(d))
    conv = _parse_group(raw.get("conv", {}), CONV_PARAMS, f"{where}.conv", discrete_keys=set(CONV_PARAMS))
    mlp = _parse_group(raw.get("mlp", {}), MLP_PARAMS, f"{where}.mlp", discrete_keys=set(MLP_PARAMS))
    for group, params, key in ((conv, CONV_PARAMS, "conv"), (mlp, MLP_PARAMS, "mlp")):
        if key in raw:
            missing = sorted(set(params) - set(group))
            if missing:
                raise SpaceError(f"{where}.{key}.{missing[0]}: missing")
    space = Space(top=top, conv=conv, mlp=mlp)
    if "cnn" in families:
        _check_every_conv_stack(space, f"{where}.conv")
    return space


def _check_every_conv_stack(space: Space, where: str) -> None:
    """Each combination of the (discrete) conv settings must give a valid network."""
    keys = ("layers", "kernel_size", "stride", "padding")
    for combo in itertools.product(*(space.conv[k].values() for k in keys)):
        layers, kernel, stride, padding = combo
        config = {"family": "cnn", "latent": 1, "h": 1, "conv_channels": 1, "conv_layers": layers,
                  "conv_kernel_size": kernel, "conv_stride": stride, "conv_padding": padding}
        try:
            model_config(config)
        except ConfigError as e:
            settings = ", ".join(f"{k}={v}" for k, v in zip(keys, combo))
            raise SpaceError(f"{where}: {settings} does not fit 32x32: {e}") from None


# ------------------------------------------------------------------------ JSON Schema


def _value_schema(param: Param) -> dict:
    if param.kind == "str":
        return {"enum": list(param.names)}
    bound = {} if param.minimum is None else (
        {"exclusiveMinimum": param.minimum} if param.exclusive else {"minimum": param.minimum})
    return {"type": "integer" if param.kind == "int" else "number", **bound}


def _dist_schema(param: Param, discrete: bool) -> dict:
    value = _value_schema(param)
    pair = {"type": "array", "items": value, "minItems": 2, "maxItems": 2}
    options = [value, {"type": "object", "properties": {"choice": {"type": "array", "items": value, "minItems": 1}},
                       "required": ["choice"], "additionalProperties": False}]
    if param.kind == "int":
        options.append({"type": "object", "properties": {"int": pair}, "required": ["int"],
                        "additionalProperties": False})
    if param.kind == "float" and not discrete:
        for kind in ("uniform", "loguniform"):
            options.append({"type": "object", "properties": {kind: pair}, "required": [kind],
                            "additionalProperties": False})
    return {"anyOf": options}


def space_json_schema() -> dict:
    """JSON Schema of the `space:` section (what an editor can check as it is typed)."""
    def group(params, discrete=()):
        return {"type": "object", "additionalProperties": False,
                "properties": {k: _dist_schema(p, k in discrete) for k, p in params.items()}}

    sampled = group(TOP_PARAMS, DISCRETE_ONLY)
    sampled["properties"]["conv"] = group(CONV_PARAMS, set(CONV_PARAMS))
    sampled["properties"]["mlp"] = group(MLP_PARAMS, set(MLP_PARAMS))
    sampled["required"] = ["family", "latent"]
    presets = {"type": "object", "additionalProperties": False, "required": ["presets"],
               "properties": {"presets": {"type": "array", "minItems": 1, "items": {"enum": sorted(PRESETS)}},
                              "lr": _value_schema(TOP_PARAMS["lr"]),
                              "batch_size": _value_schema(TOP_PARAMS["batch_size"])}}
    return {"description": "what Optuna samples: fixed values or distributions; or a list of presets",
            "oneOf": [presets, {**sampled, "not": {"required": ["presets"]}}]}


__all__ = ["SpaceError", "Space", "Fixed", "Choice", "Uniform", "IntRange", "parse_space_section", "model_config",
           "space_json_schema", "number_as_text_problem"]

