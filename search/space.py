"""The `space:` section of a space file: what Optuna samples, in a small distribution language.

    space:                             # each value is fixed, or one distribution:
      family: {choice: [cnn, resnet]}  #   {choice: [...]}, {uniform: [lo, hi]},
      latent: {int: [32, 256]}         #   {loguniform: [lo, hi]}, {int: [lo, hi]}
      lr: {loguniform: [1.0e-4, 3.0e-3]}
      conv: {layers: .., channels: .., kernel_size: .., stride: .., padding: ..}  # cnn only
      h: ..                            # cnn only: width of the linear layer after the convs
      label: ..                        # cnn only: index | onehot
      mlp: {layers: .., width: ..}     # mlp only: widths width, width/2, ...
      resnet: {width: .., scales: .., blocks: .., upsample: .., cond_norm: ..}  # resnet only

A family's group may also set `norm` and `activation` for that family's trials alone (e.g. group
normalisation and SiLU for resnet trials beside cnn ones, which have neither). Or, instead of
sampled architectures, `space: {presets: [cnn-arch3-M3, ...]}` runs exactly those models (a grid,
no Optuna). `Space` is Optuna's define-by-run space and `trial_config` maps the flat
configuration it samples to the trial's TrialConfig. Every error names the key path and the problem.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from cvae_core.config import (
    ACTIVATIONS,
    CHOICES,
    CIFAR10_SHAPE,
    DATA_FIELDS,
    FAMILIES,
    FAMILY_ACTIVATIONS,
    FAMILY_NORMS,
    LABELS,
    LIKELIHOODS,
    MAX_IMAGE_SIZE,
    NORMS,
    RANGES,
    UPSAMPLES,
    ConfigError,
    ConvLayer,
    ModelConfig,
    Range,
    Recipe,
    TrialConfig,
    describe_shape,
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

    def check(self, value: Any, where: str) -> Any:
        if self.kind == "str":
            if value not in self.names:
                raise SpaceError(f"{where}: {value!r} is not one of {list(self.names)}")
            return value
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise SpaceError(f"{where}: {value!r} is not true or false")
            return value
        if text := number_as_text_problem(value):
            raise SpaceError(f"{where}: {text}")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"{where}: {value!r} is not a number")
        if self.kind == "int" and not isinstance(value, int):
            raise SpaceError(f"{where}: {value!r} is not an integer")
        if not math.isfinite(value):
            raise SpaceError(f"{where}: {value!r} is not finite")
        if problem := self.range.bound_problem(value):
            raise SpaceError(f"{where}: {value!r} {problem}")
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


RECIPE_PARAMS = {f.name: Param.field(f.name) for f in dataclasses.fields(Recipe)}
TOP_PARAMS = {
    "family": Param("str", names=FAMILIES),
    "latent": Param.field("latent"),
    **RECIPE_PARAMS,
    "norm": Param("str", names=NORMS),
    "activation": Param("str", names=ACTIVATIONS),
    "likelihood": Param("str", names=LIKELIHOODS),
    "sigma": Param.field("sigma"),
    "beta": Param.field("beta"),
    "h": Param.field("h"),
    "label": Param("str", names=LABELS),
}
# How many layers a group stacks: a space's own key (ModelConfig takes the list of layers, one at least).
LAYERS = Param("int", range=Range("int", 1))
FAMILY_TOP = {"h": "cnn", "label": "cnn"}  # top-level keys that only one family reads
# Each family's own group: the keys it alone reads, sampled under `<group>_<key>`.
GROUPS = {"cnn": "conv", "mlp": "mlp", "resnet": "resnet"}
GROUP_PARAMS = {
    "conv": {
        "layers": LAYERS,
        "channels": Param.field("out_channels"),  # of the first conv; each later conv doubles it
        "kernel_size": Param.field("kernel"),
        "stride": Param.field("stride"),
        "padding": Param.field("padding"),
    },
    "mlp": {
        "layers": LAYERS,
        "width": Param.field("hidden"),  # of the first hidden layer; each later one halves it
    },
    "resnet": {
        "width": Param.field("width"),  # channels of the first stage; each later stage doubles them
        "scales": Param.field("scales"),  # stages, each halving the image
        "blocks": Param.field("blocks"),  # residual blocks per stage
        "upsample": Param("str", names=UPSAMPLES),
        "cond_norm": Param("bool"),
    },
}
# What a group may leave out (ModelConfig's defaults), and what it may set for its family alone.
GROUP_OPTIONAL = {"resnet": ("upsample", "cond_norm")}
OVERRIDES = ("norm", "activation")
# What a space leaves out: the report's recipe and ModelConfig's defaults (the report's model).
DEFAULTS = {**Recipe().to_dict(),
            **{f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in TOP_PARAMS
               and f.name not in FAMILY_TOP and f.default is not dataclasses.MISSING}}
DISCRETE_ONLY = {"family", "norm", "activation", "likelihood", "label"}


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
    if param.kind in ("str", "bool"):
        raise SpaceError(f"{at}: {'a name' if param.kind == 'str' else 'true/false'} takes a fixed value or a choice")
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
    """Sampled model and optimiser settings (or a fixed list of presets), and the data's shape
    every trial is built for (`for_data`)."""

    top: dict[str, Dist] = field(default_factory=dict)
    groups: dict[str, dict[str, Dist]] = field(default_factory=dict)  # conv, mlp, resnet: as given
    presets: tuple[str, ...] = ()
    data: dict[str, int] = field(default_factory=dict)  # ModelConfig's DATA_FIELDS; empty: CIFAR-10's

    def __setstate__(self, state: dict) -> None:
        # A searcher saved by an earlier version (Tune restores it on resume) had no data: CIFAR-10's.
        self.__dict__.update({"data": {}, **state})

    def for_data(self, shape: dict[str, int], where: str = "space") -> Space:
        """This space for data of `shape` (ImageData.shape): every model it can sample must fit it,
        and the report's presets, CIFAR-10 models, need CIFAR-10's shape."""
        if self.presets and shape != CIFAR10_SHAPE:
            raise SpaceError(f"{where}.presets: the report's presets are CIFAR-10 models "
                             f"({describe_shape(CIFAR10_SHAPE)}); the data is {describe_shape(shape)}: "
                             "search a space of families instead")
        space = replace(self, data=dict(shape))
        size = f"{shape['image_size']}x{shape['image_size']}"
        if not self.presets:
            _check_data_fit(space, where, f"does not fit {size}")
        return space

    def families(self) -> tuple[str, ...]:
        return self.top["family"].values()

    def group(self, name: str) -> dict[str, Dist]:
        return self.groups.get(name, {})

    def dists(self, family: str) -> dict[str, Dist]:
        """What a trial of `family` samples, by the flat names of its configuration: the top-level
        keys it reads (unless its group sets its own) and its group's keys as `<group>_<key>`."""
        group = GROUPS[family]
        own = self.group(group)
        top = {k: d for k, d in self.top.items() if FAMILY_TOP.get(k, family) == family and k not in own}
        return {**top, **{f"{group}_{k}": d for k, d in own.items()}}

    def __call__(self, trial) -> dict[str, Any]:
        """Optuna define-by-run: sample one configuration (a flat dict of plain values)."""
        family = self.top["family"].suggest(trial, "family")
        sampled = {k: d.suggest(trial, k) for k, d in self.dists(family).items() if k != "family"}
        return {"family": family, **sampled, **self.data}

    def params(self, config: dict[str, Any]) -> int:
        """The trainable parameters of the model a sampled configuration builds."""
        from cvae_core.models import config_params  # torch: not for the commands' input checks

        return config_params(trial_config(config).model)


def _option(config: dict[str, Any], key: str) -> Any:
    """A model option of the flat configuration: its family group's own value, else the top-level
    one, else the default."""
    own = f"{GROUPS[config['family']]}_{key}"
    return config.get(own, config.get(key, DEFAULTS.get(key)))


def trial_config(config: dict[str, Any]) -> TrialConfig:
    """The flat trial configuration (as sampled by `Space`, or a preset's) as a TrialConfig."""
    recipe = Recipe(**{k: config.get(k, DEFAULTS[k]) for k in RECIPE_PARAMS})
    if "preset" in config:
        return TrialConfig(preset_config(config["preset"]), recipe)
    family = config["family"]
    common = {k: _option(config, k) for k in ("norm", "activation", "likelihood", "sigma", "beta")}
    common.update({k: config[k] for k in DATA_FIELDS if k in config})  # the data's shape (Space.for_data)
    if family == "cnn":
        conv = tuple(
            ConvLayer(config["conv_channels"] * 2**i, config["conv_kernel_size"],
                      config["conv_stride"], config["conv_padding"])
            for i in range(config["conv_layers"])
        )
        model = ModelConfig(family="cnn", latent=config["latent"], conv=conv, h=config["h"],
                            label=config.get("label"), **common)
    elif family == "resnet":
        shape = {k: config[f"resnet_{k}"] for k in GROUP_PARAMS["resnet"] if f"resnet_{k}" in config}
        model = ModelConfig(family="resnet", latent=config["latent"], **shape, **common)
    else:
        hidden = tuple(max(1, config["mlp_width"] // 2**i) for i in range(config["mlp_layers"]))
        model = ModelConfig(family="mlp", latent=config["latent"], hidden=hidden, **common)
    return TrialConfig(model, recipe)


def parse_space_section(raw: Any, where: str = "space") -> Space:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
    if "presets" in raw:
        return _parse_presets(raw, where)
    body = {k: v for k, v in raw.items() if k not in GROUP_PARAMS}
    if "family" not in body:
        raise SpaceError(f"{where}.family: missing ({', '.join(FAMILIES)} or {{choice: [...]}})")
    if "latent" not in body:
        raise SpaceError(f"{where}.latent: missing")
    top = _parse_group(body, TOP_PARAMS, where, discrete_keys=DISCRETE_ONLY)
    families = top["family"].values()
    groups = {}
    for family, name in GROUPS.items():
        if family not in families and name in raw:
            raise SpaceError(f"{where}.{name}: given, but family is never {family!r}")
        if family in families:
            if name not in raw:
                raise SpaceError(f"{where}.{name}: missing (family can be {family!r})")
            groups[name] = _parse_family_group(raw[name], name, f"{where}.{name}")
    for key, family in FAMILY_TOP.items():
        if family not in families and key in top:
            raise SpaceError(f"{where}.{key}: given, but family is never {family!r}")
    if "cnn" in families and "h" not in top:
        raise SpaceError(f"{where}.h: missing (the width after the conv stack, family can be 'cnn')")
    for k, d in DEFAULTS.items():
        top.setdefault(k, Fixed(d))
    space = Space(top=top, groups=groups)
    for family in families:
        _check_family_options(space, family, where)
    # Whether a model fits the images is the data's to say (Space.for_data); here, at the largest
    # size any data may have, what is wrong at every size.
    _check_data_fit(replace(space, data={"image_size": MAX_IMAGE_SIZE}), where, "is not a valid model")
    return space


def _parse_presets(raw: dict, where: str) -> Space:
    others = sorted(set(raw) - {"presets", *RECIPE_PARAMS})
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
    for k in RECIPE_PARAMS:
        top.setdefault(k, Fixed(DEFAULTS[k]))
    return Space(top=top, presets=tuple(names))


def _parse_family_group(raw: Any, name: str, where: str) -> dict[str, Dist]:
    params = {**GROUP_PARAMS[name], **{k: TOP_PARAMS[k] for k in OVERRIDES}}
    group = _parse_group(raw, params, where, discrete_keys=set(params))
    missing = sorted(set(GROUP_PARAMS[name]) - set(group) - set(GROUP_OPTIONAL.get(name, ())))
    if missing:
        raise SpaceError(f"{where}.{missing[0]}: missing")
    return group


def _check_family_options(space: Space, family: str, where: str) -> None:
    """The normalisations and activations a family's trials can sample must be ones it builds."""
    group = GROUPS[family]
    for key, allowed in (("norm", FAMILY_NORMS[family]), ("activation", FAMILY_ACTIVATIONS[family])):
        own = key in space.group(group)
        dist = space.group(group)[key] if own else space.top[key]
        for i, value in enumerate(dist.values()):
            if value in allowed:
                continue
            at = (f"{where}.{group}.{key}" if own else f"{where}.{key}") + (
                f".choice[{i}]" if isinstance(dist, Choice) else "")
            others = [f for f in space.families() if value in {"norm": FAMILY_NORMS, "activation": FAMILY_ACTIVATIONS}
                      [key][f]]
            hint = f"; set it for {others[0]} trials alone in {where}.{GROUPS[others[0]]}.{key}" if others else ""
            raise SpaceError(f"{at}: {value!r} is not one of {list(allowed)} for family {family!r}{hint}")


def _first(dist: Dist) -> Any:
    return dist.low if isinstance(dist, Uniform) else dist.values()[0]


def _check_data_fit(space: Space, where: str, problem: str) -> None:
    """Every cnn and resnet the space can sample is a valid model for its data."""
    if "cnn" in space.families():
        _check_every_model(space, "cnn", ("layers", "kernel_size", "stride", "padding"), f"{where}.conv", problem)
    if "resnet" in space.families():
        _check_every_model(space, "resnet", ("scales", "cond_norm", "norm"), f"{where}.resnet", problem)


def _check_every_model(space: Space, family: str, keys: tuple[str, ...], where: str, problem: str) -> None:
    """Each combination of `keys` (a family's discrete settings that decide whether its network
    can be built) must give a valid model; every other key takes one of its values."""
    dists = space.dists(family)
    names = [next(n for n in (f"{GROUPS[family]}_{k}", k) if n in dists) for k in keys if
             f"{GROUPS[family]}_{k}" in dists or k in dists]
    base = {**{k: _first(d) for k, d in dists.items()}, "family": family, **space.data}
    for combo in itertools.product(*(dists[n].values() for n in names)):
        try:
            trial_config({**base, **dict(zip(names, combo))})
        except ConfigError as e:
            settings = ", ".join(f"{n.removeprefix(GROUPS[family] + '_')}={v}" for n, v in zip(names, combo))
            raise SpaceError(f"{where}: {settings} {problem}: {e}") from None


# ------------------------------------------------------------------------ JSON Schema


def _value_schema(param: Param) -> dict:
    if param.kind == "str":
        return {"enum": list(param.names)}
    if param.kind == "bool":
        return {"type": "boolean"}
    r = param.range
    bound = {"exclusiveMinimum": r.minimum} if r.exclusive else {"minimum": r.minimum}
    if r.below is not None:
        bound["exclusiveMaximum"] = r.below
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
    for family, name in GROUPS.items():
        params = {**GROUP_PARAMS[name], **{k: TOP_PARAMS[k] for k in OVERRIDES}}
        sampled["properties"][name] = {
            **group(params, set(params)), "description": f"{family} trials only",
            "required": sorted(set(GROUP_PARAMS[name]) - set(GROUP_OPTIONAL.get(name, ())))}
    sampled["required"] = ["family", "latent"]
    presets = {"type": "object", "additionalProperties": False, "required": ["presets"],
               "properties": {"presets": {"type": "array", "minItems": 1, "items": {"enum": sorted(PRESETS)}},
                              **{k: _value_schema(p) for k, p in RECIPE_PARAMS.items()}}}
    return {"description": "what Optuna samples: fixed values or distributions; or a list of presets",
            "oneOf": [presets, {**sampled, "not": {"required": ["presets"]}}]}


__all__ = ["SpaceError", "Space", "Fixed", "Choice", "Uniform", "IntRange", "parse_space_section", "trial_config",
           "space_json_schema", "number_as_text_problem"]
