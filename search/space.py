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
import functools
import itertools
import math
from dataclasses import dataclass, field, replace
from typing import Any

from pydantic import ConfigDict, Field, create_model, field_validator, model_validator

from cvae_core.cli import first_line
from cvae_core.config import (
    ACTIVATIONS,
    CIFAR10_SHAPE,
    DATA_FIELDS,
    FAMILIES,
    FAMILY_ACTIVATIONS,
    FAMILY_NORMS,
    LABELS,
    LIKELIHOODS,
    MAX_DEPTH,
    MAX_IMAGE_SIZE,
    NORMS,
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

# Fixed, Choice, Uniform and IntRange stay importable from here: a searcher pickled by an earlier
# version, where they were defined, refers to them as search.space's on resume.
from .distributions import Choice, Dist, Fixed, IntRange, Param, Strict, Uniform, dist_type, fixed_type
from .validation import SpaceError, validated

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
# Capped here, before trial_config lists them: each layer's width is computed with 2**layer.
LAYERS = Param("int", range=Range("int", 1, maximum=MAX_DEPTH))
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
# The keys a model's tensors grow with (flat names, Space.dists), and those that shape it: channels
# double with each conv layer and resnet stage, while the map before the latent heads shrinks.
SIZES = ("latent", "h", "conv_channels", "mlp_width", "resnet_width")
SHAPES = ("conv_layers", "conv_kernel_size", "resnet_scales")
# What a group may leave out (ModelConfig's defaults), and what it may set for its family alone.
GROUP_OPTIONAL = {"resnet": ("upsample", "cond_norm")}
OVERRIDES = ("norm", "activation")
# What a space leaves out: the report's recipe and ModelConfig's defaults (the report's model).
DEFAULTS = {**Recipe().to_dict(),
            **{f.name: f.default for f in dataclasses.fields(ModelConfig) if f.name in TOP_PARAMS
               and f.name not in FAMILY_TOP and f.default is not dataclasses.MISSING}}
DISCRETE_ONLY = {"family", "norm", "activation", "likelihood", "label"}


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
            _check_largest_models(space, where)
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


# ------------------------------------------------------------------------ the section's models


class _Sampled(Strict):
    model_config = ConfigDict(json_schema_extra={"required": ["family", "latent"]})


class _Group(Strict):
    """A family's group (conv, mlp, resnet, the model's name). What it must hold is checked once its
    family is known to be sampled (parse_space_section); the JSON Schema says it at once."""

    model_config = ConfigDict(json_schema_extra=lambda schema, model: schema.update(required=_required(model.__name__)))


class _Presets(Strict):
    presets: list[str] = Field(json_schema_extra={"minItems": 1, "items": {"enum": sorted(PRESETS)}})

    @model_validator(mode="before")
    @classmethod
    def _beside_presets(cls, raw: Any) -> Any:
        others = sorted(set(raw) - {"presets", *RECIPE_PARAMS}) if isinstance(raw, dict) else []
        if others:
            raise ValueError(f"{others[0]}: not allowed beside presets (presets fix the model)")
        return raw

    @field_validator("presets")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        if not names:
            raise ValueError("must be a non-empty list of preset names")
        for i, name in enumerate(names):
            if name not in PRESETS:
                raise ValueError(f"[{i}]: unknown preset {name!r}; known: {sorted(PRESETS)}")
            if name in names[:i]:  # it would train twice, with the same seed (search.seeds)
                raise ValueError(f"[{i}]: {name!r} is listed twice; each preset runs once")
        return names


@functools.cache
def _forms() -> tuple[type[Strict], type[Strict]]:
    """The `space:` section's two forms as pydantic models: named presets, or sampled families
    (each family's group a model of its own). Built once, when a space is first read."""
    groups = {}
    for family, name in GROUPS.items():
        params = {**GROUP_PARAMS[name], **{k: TOP_PARAMS[k] for k in OVERRIDES}}
        model = create_model(name, __base__=_Group,
                             **{k: (dist_type(f"{name}_{k}", p, discrete=True), None) for k, p in params.items()})
        groups[name] = (model, Field(None, description=f"{family} trials only"))
    sampled = create_model("space", __base__=_Sampled, **groups,
                           **{k: (dist_type(k, p, k in DISCRETE_ONLY), None) for k, p in TOP_PARAMS.items()})
    beside = "must be a fixed value beside presets (they run as a grid)"
    presets = create_model("space_presets", __base__=_Presets,
                           **{k: (fixed_type(p, beside), None) for k, p in RECIPE_PARAMS.items()})
    return presets, sampled


def _required(group: str) -> list[str]:
    """The keys a family's group must set."""
    return sorted(set(GROUP_PARAMS[group]) - set(GROUP_OPTIONAL.get(group, ())))


def _given(section: Strict, raw: dict) -> dict[str, Any]:
    """What a validated mapping of the file sets (its keys' distributions, or groups), in the file's
    order: the order Optuna samples them in, so that a seed gives the same trials in every process
    (a set's order changes with the process's hash seed)."""
    return {k: getattr(section, k) for k in raw if k in section.model_fields_set}


def parse_space_section(raw: Any, where: str = "space") -> Space:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
    presets, sampled = _forms()
    if "presets" in raw:
        return _presets_space(validated(presets, raw, where), raw)
    if "family" not in raw:
        raise SpaceError(f"{where}.family: missing ({', '.join(FAMILIES)} or {{choice: [...]}})")
    if "latent" not in raw:
        raise SpaceError(f"{where}.latent: missing")
    given = _given(validated(sampled, raw, where), raw)
    top = {k: d for k, d in given.items() if k in TOP_PARAMS}
    families = top["family"].values()
    groups = {}
    for family, name in GROUPS.items():
        if family not in families and name in given:
            raise SpaceError(f"{where}.{name}: given, but family is never {family!r}")
        if family in families:
            if name not in given:
                raise SpaceError(f"{where}.{name}: missing (family can be {family!r})")
            groups[name] = _given(given[name], raw[name])
            if missing := sorted(set(_required(name)) - set(groups[name])):
                raise SpaceError(f"{where}.{name}.{missing[0]}: missing")
    for key, family in FAMILY_TOP.items():
        if family not in families and key in top:
            raise SpaceError(f"{where}.{key}: given, but family is never {family!r}")
    likelihoods = top["likelihood"].values() if "likelihood" in top else (ModelConfig.likelihood,)
    if "sigma" in top and len(set(top["sigma"].values())) > 1 and "gaussian" not in likelihoods:
        raise SpaceError(f"{where}.sigma: sampled, but likelihood is never 'gaussian', the only one that reads it "
                         "(gaussian_learned learns its own)")
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


def _presets_space(section: Strict, raw: dict) -> Space:
    top = {k: d for k, d in _given(section, raw).items() if k != "presets"}
    for k in RECIPE_PARAMS:
        top.setdefault(k, Fixed(DEFAULTS[k]))
    return Space(top=top, presets=tuple(section.presets))


def space_json_schema() -> tuple[dict, dict]:
    """JSON Schema of the `space:` section (what an editor can check as it is typed), from its
    models, and the definitions it refers to (#/$defs/...)."""
    presets, sampled = (form.model_json_schema() for form in _forms())
    definitions = {**presets.pop("$defs", {}), **sampled.pop("$defs", {})}
    return ({"description": "what Optuna samples: fixed values or distributions; or a list of presets",
             "oneOf": [presets, sampled]}, definitions)


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


def _lowest(dist: Dist) -> Any:
    values = dist.values()
    return values[0] if isinstance(values, range) else min(values)  # min() would walk a range


def _highest(dist: Dist) -> Any:
    values = dist.values()
    return values[-1] if isinstance(values, range) else max(values)


def _base_config(space: Space, family: str) -> dict[str, Any]:
    """A configuration of `family` with every key at its first value."""
    return {**{k: _first(d) for k, d in space.dists(family).items()}, "family": family, **space.data}


def _check_data_fit(space: Space, where: str, problem: str) -> None:
    """Every cnn and resnet the space can sample is a valid model for its data."""
    if "cnn" in space.families():
        _check_every_model(space, "cnn", ("layers", "kernel_size", "stride", "padding"), f"{where}.conv", problem)
    if "resnet" in space.families():
        _check_every_model(space, "resnet", ("scales", "cond_norm", "norm"), f"{where}.resnet", problem)


def _check_largest_models(space: Space, where: str) -> None:
    """Each family's largest models can be built: every size at its highest, the shapes at both
    ends. A size past what torch can hold (zeros typed too long) would otherwise fail where the
    driver counts a sampled model's parameters (Space.params), and end the search."""
    for family in space.families():
        dists = space.dists(family)
        sizes = {k: _highest(d) for k, d in dists.items() if k in SIZES}
        for end in (_lowest, _highest):
            shapes = {k: end(d) for k, d in dists.items() if k in SHAPES}
            try:
                space.params({**_base_config(space, family), **sizes, **shapes})
            except (RuntimeError, TypeError, ValueError, OverflowError) as e:
                settings = ", ".join(f"{k.replace('_', '.', 1)}={v:,}" for k, v in {**sizes, **shapes}.items())
                raise SpaceError(f"{where}: {settings}: the {family} model these give cannot be built "
                                 f"({first_line(e)}); narrow these ranges") from None


# Each combination is built as a config before the search starts (about 50 us each on a CPU core):
# 10,000 is half a second, and far more than any sensible range of layers, kernels and strides gives.
MAX_MODELS_CHECKED = 10_000


def _how_many(values) -> int:
    """How many values a distribution takes: len() of a range over 2**63 values overflows."""
    return values.stop - values.start if isinstance(values, range) else len(values)


def _check_every_model(space: Space, family: str, keys: tuple[str, ...], where: str, problem: str) -> None:
    """Each combination of `keys` (a family's discrete settings that decide whether its network
    can be built) must give a valid model; every other key takes one of its values."""
    dists = space.dists(family)
    names = [next(n for n in (f"{GROUPS[family]}_{k}", k) if n in dists) for k in keys if
             f"{GROUPS[family]}_{k}" in dists or k in dists]
    count = math.prod(_how_many(dists[n].values()) for n in names)
    if count > MAX_MODELS_CHECKED:
        ranges = ", ".join(f"{n.removeprefix(GROUPS[family] + '_')}: {_how_many(dists[n].values()):,}" for n in names)
        raise SpaceError(f"{where}: {count:,} combinations of settings that decide whether a network can be built "
                         f"({ranges} values), more than the {MAX_MODELS_CHECKED:,} the search checks before it "
                         "starts; narrow an int range")
    base = _base_config(space, family)
    for combo in itertools.product(*(dists[n].values() for n in names)):
        try:
            trial_config({**base, **dict(zip(names, combo))})
        except ConfigError as e:
            settings = ", ".join(f"{n.removeprefix(GROUPS[family] + '_')}={v}" for n, v in zip(names, combo))
            raise SpaceError(f"{where}: {settings} {problem}: {e}") from None


__all__ = ["SpaceError", "Space", "Fixed", "Choice", "Uniform", "IntRange", "parse_space_section", "trial_config",
           "space_json_schema"]
