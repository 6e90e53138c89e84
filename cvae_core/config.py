"""Typed, validated configuration of one trial: its model (`ModelConfig`), how it is trained
(`Recipe`), and the two together (`TrialConfig`).

Each is checked completely on construction, so a bad value fails before any tensor is
allocated, with a message naming the field and the value. A new setting of Recipe is one field
here, with its help text, and its range (a number's in RANGES, a name's choices in CHOICES), which
search.space offers too: the training function, cvae_core.train's flags, a space file's keys,
the trials table and the leaderboard take their fields from this class, and rows written before
it existed read its default.
"""

from __future__ import annotations

import math
from dataclasses import MISSING, asdict, dataclass, field, fields
from typing import Any

# CIFAR-10's shape: the defaults of ModelConfig's data fields, which the data decides otherwise.
IMAGE_SIZE = 32
IMAGE_CHANNELS = 3
NUM_CLASSES = 10
DATA_FIELDS = ("image_size", "channels", "num_classes")  # ModelConfig's fields that come from the data


def data_shape(image_size: int, channels: int, num_classes: int) -> dict[str, int]:
    """What a model is built for, as ModelConfig's DATA_FIELDS (ImageData.shape)."""
    return dict(zip(DATA_FIELDS, (image_size, channels, num_classes)))


CIFAR10_SHAPE = data_shape(IMAGE_SIZE, IMAGE_CHANNELS, NUM_CLASSES)
CHANNELS = (1, 3)  # grayscale, RGB
MAX_SEED = 2**32 - 1  # the largest seed numpy, scikit-learn and Optuna's samplers take
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE, SIZE_STEP = 8, 256, 4
# The most layers (a space's conv.layers, mlp.layers) or residual blocks per stage (ModelConfig's
# blocks) a model stacks; a layer list written out in full is as long as it was typed. The data bounds
# none of them (stride-1 convs keep the image's size; mlp widths stop halving at 1), and building a model
# takes time with its depth, so a depth typed too long would hang where it is built. Far above any
# sensible model: the deepest ResNet trained on CIFAR-10 (ResNet-1202) has 200 blocks per stage.
MAX_DEPTH = 256


def describe_shape(shape: dict[str, int]) -> str:
    """Data of `shape` (ImageData.shape) in words, e.g. '28x28 grayscale, 5 classes'."""
    size = shape["image_size"]
    return f"{size}x{size} {'grayscale' if shape['channels'] == 1 else 'RGB'}, {shape['num_classes']} classes"


def image_size_problem(size: int) -> str | None:
    """Why square images of `size` pixels cannot be modelled, or None. The cnn and resnet families
    halve the image at least twice (stride-2 convs, resnet stages), so the size must stay whole."""
    if isinstance(size, int) and MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE and size % SIZE_STEP == 0:
        return None
    return (f"image size {size}x{size} is not supported: square sizes that are multiples of {SIZE_STEP} from "
            f"{MIN_IMAGE_SIZE} to {MAX_IMAGE_SIZE} work (e.g. 28, 32, 64), since the cnn and resnet families "
            f"halve the image at least twice")


def batch_size_problem(batch_size: int, n_train: int) -> str | None:
    """Why batches of `batch_size` cannot be drawn from `n_train` training images (an epoch trains
    on whole batches only), or None."""
    return f"{batch_size} is more than the {n_train} training images" if batch_size > n_train else None


FAMILIES = ("mlp", "cnn", "resnet")
NORMS = ("none", "batch", "group")
ACTIVATIONS = ("relu", "leaky_relu", "silu")
# What each family builds: the report's two families keep the options they had.
FAMILY_NORMS = {"mlp": NORMS[:2], "cnn": NORMS[:2], "resnet": NORMS}
FAMILY_ACTIVATIONS = {"mlp": ACTIVATIONS[:2], "cnn": ACTIVATIONS[:2], "resnet": ACTIVATIONS}
# The fields only one family reads; another family leaves them at their defaults.
FAMILY_FIELDS = {"mlp": ("hidden",), "cnn": ("conv", "h", "label"),
                 "resnet": ("width", "scales", "blocks", "upsample", "cond_norm")}
# cnn: the label as one input channel whose pixels equal the class index (the report's), or as
# one-hot planes. mlp and resnet always take it one-hot.
LABELS = ("index", "onehot")
# resnet: 2x upsampling by nearest neighbour + 3x3 conv, or by a 4x4 stride-2 transposed conv
UPSAMPLES = ("nearest", "transposed")
# bernoulli: the report's BCE; gaussian: fixed sigma; gaussian_learned: one shared,
# learned sigma (sigma-VAE, Rybkin et al. 2021).
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
# How the learning rate moves after its warm-up: kept, or a cosine decay to 0 at the last epoch.
LR_SCHEDULES = ("constant", "cosine")
# sum: the report's BCE + KL summed over pixels, latents and the batch; mean: its failure mode
REDUCTIONS = ("sum", "mean")
REDUCTION = REDUCTIONS[0]  # the report's
PATIENCE = 20  # the report's: epochs without a better validation loss before training stops
MAX_EPOCHS = 800  # a training's cap when patience has not stopped it first
GRID_EVERY = 10  # epochs between a training's image grids (0: never)
# Why a training ends by itself (each epoch record's `stop`, trials.parquet's stop_reason): its
# patience ran out, or its epochs did.
PATIENCE_STOP, MAX_EPOCHS_STOP = "patience", "max_epochs"
STOP_REASONS = (PATIENCE_STOP, MAX_EPOCHS_STOP)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field."""


@dataclass(frozen=True)
class ConvLayer:
    """One encoder convolution; the decoder mirrors it with a transposed convolution."""

    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0

    def out_size(self, size: int) -> int:
        return (size + 2 * self.padding - self.kernel) // self.stride + 1

    def mirror_size(self, size: int) -> int:
        return (size - 1) * self.stride - 2 * self.padding + self.kernel


@dataclass(frozen=True)
class Range:
    """The numbers a field takes: integers ("int") or finite numbers ("float") from `minimum`
    (excluded when `exclusive`) to under `below`, or up to `maximum` (None: no upper bound)."""

    kind: str
    minimum: float
    exclusive: bool = False
    below: float | None = None
    maximum: float | None = None

    def bound_problem(self, value: float) -> str | None:
        """Why a number is out of range ("must be >= 1"), or None."""
        if value < self.minimum or (self.exclusive and value == self.minimum):
            return f"must be {'>' if self.exclusive else '>='} {self.minimum}"
        if self.below is not None and value >= self.below:
            return f"must be < {self.below}"
        if self.maximum is not None and value > self.maximum:
            return f"must be <= {self.maximum}"
        return None

    def check(self, name: str, value: Any) -> None:
        """Raise ConfigError, naming the field, for a value of another kind or out of range."""
        if self.kind == "int" and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{name}={value!r} must be an integer")
        if self.kind == "float" and (isinstance(value, bool) or not isinstance(value, (int, float))
                                     or not math.isfinite(value)):
            raise ConfigError(f"{name}={value!r} must be a finite number")
        if problem := self.bound_problem(value):
            raise ConfigError(f"{name}={value!r} {problem}")


# The range of each numeric field of ModelConfig (for hidden: each width; for conv: ConvLayer's
# fields) and of Recipe: checked on construction, and what search.space accepts in a space file.
RANGES = {
    "latent": Range("int", 1),
    "hidden": Range("int", 1),
    "out_channels": Range("int", 1),
    "kernel": Range("int", 1),
    "stride": Range("int", 1),
    "padding": Range("int", 0),
    "h": Range("int", 1),
    "width": Range("int", 1),
    "scales": Range("int", 1),
    "blocks": Range("int", 1, maximum=MAX_DEPTH),
    "sigma": Range("float", 0, exclusive=True),
    "beta": Range("float", 0),
    "lr": Range("float", 0, exclusive=True),
    "batch_size": Range("int", 1),
    "weight_decay": Range("float", 0),
    "ema": Range("float", 0, below=1),
    "grad_clip": Range("float", 0),
    "warmup_epochs": Range("int", 0),
}
# The names each text field of Recipe takes (checked on construction, offered by search.space).
CHOICES = {"lr_schedule": LR_SCHEDULES}


def _check_choice(name: str, value: Any, choices: tuple[str, ...], why: str = "") -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {list(choices)}{why}")


def conv_sizes(conv: tuple[ConvLayer, ...], size: int) -> tuple[list[int], list[int]]:
    """Spatial sizes through the encoder convs and back through their mirrors."""
    down = [size]
    for layer in conv:
        down.append(layer.out_size(down[-1]))
    up = [down[-1]]
    for layer in reversed(conv):
        up.append(layer.mirror_size(up[-1]))
    return down, up


@dataclass(frozen=True)
class ModelConfig:
    """Architecture and objective of one cVAE.

    family "mlp" uses `hidden`; "cnn" uses `conv`, `h` (the width of the linear layer between the
    conv stack and the latent heads) and `label`; "resnet" uses `width` (channels of the first
    stage, doubling at each later one), `scales` (stages, each halving the image), `blocks`
    (residual blocks per stage), `upsample` and `cond_norm` (class-conditional scale and shift in
    every decoder normalisation). The defaults reproduce the report: no normalisation, ReLU,
    Bernoulli likelihood (BCE), beta = 1.
    """

    family: str
    latent: int
    hidden: tuple[int, ...] = ()
    conv: tuple[ConvLayer, ...] = ()
    h: int = 0
    label: str | None = None  # cnn; default "index", the report's
    width: int = 0
    scales: int = 0
    blocks: int = 0
    upsample: str | None = None  # resnet; default "nearest"
    cond_norm: bool = False
    norm: str = "none"
    activation: str = "relu"
    likelihood: str = "bernoulli"
    sigma: float = 0.1  # fixed sigma of the "gaussian" likelihood, in pixel units [0, 1]
    beta: float = 1.0  # KL weight in the training loss
    # What the data decides (DATA_FIELDS; ImageData.shape): square images of image_size pixels with
    # `channels` channels, in `num_classes` classes. Defaults: CIFAR-10's.
    image_size: int = IMAGE_SIZE
    channels: int = IMAGE_CHANNELS
    num_classes: int = NUM_CLASSES

    def __post_init__(self) -> None:
        _check_choice("family", self.family, FAMILIES)
        # Accept lists (from YAML/JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "hidden", tuple(_listed("hidden", self.hidden)))
        object.__setattr__(self, "conv", tuple(_conv_layer(c) for c in _listed("conv", self.conv)))
        self._check_other_families_fields()
        if self.family == "cnn" and self.label is None:
            object.__setattr__(self, "label", "index")
        if self.family == "resnet" and self.upsample is None:
            object.__setattr__(self, "upsample", "nearest")
        RANGES["latent"].check("latent", self.latent)
        why = f" for family={self.family!r}"
        _check_choice("norm", self.norm, FAMILY_NORMS[self.family], why if self.norm in NORMS else "")
        _check_choice("activation", self.activation, FAMILY_ACTIVATIONS[self.family],
                      why if self.activation in ACTIVATIONS else "")
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        RANGES["sigma"].check("sigma", self.sigma)
        RANGES["beta"].check("beta", self.beta)
        self._check_data_fields()
        {"mlp": self._check_mlp, "cnn": self._check_cnn, "resnet": self._check_resnet}[self.family]()

    def _check_other_families_fields(self) -> None:
        """A field another family reads stays at its default: it would be silently ignored."""
        for family, names in FAMILY_FIELDS.items():
            if family == self.family:
                continue
            for name in names:
                value, default = getattr(self, name), self.__dataclass_fields__[name].default
                if value != default:
                    raise ConfigError(f"{name}={value!r} is for family={family!r}, not {self.family!r}")

    def _check_data_fields(self) -> None:
        if problem := image_size_problem(self.image_size):
            raise ConfigError(f"image_size={self.image_size!r}: {problem}")
        _check_choice("channels", self.channels, CHANNELS)
        if not (isinstance(self.num_classes, int) and self.num_classes >= 2):
            raise ConfigError(f"num_classes={self.num_classes!r} must be an integer >= 2")

    def _check_mlp(self) -> None:
        if not self.hidden:
            raise ConfigError("hidden=() must list at least one width for family='mlp'")
        for i, width in enumerate(self.hidden):
            RANGES["hidden"].check(f"hidden[{i}]", width)

    def _check_cnn(self) -> None:
        if not self.conv:
            raise ConfigError("conv=() must list at least one layer for family='cnn'")
        RANGES["h"].check("h", self.h)
        _check_choice("label", self.label, LABELS)
        size = self.image_size
        for i, layer in enumerate(self.conv):
            for name, value in asdict(layer).items():
                RANGES[name].check(f"conv[{i}].{name}", value)
            if layer.padding >= layer.kernel:
                raise ConfigError(f"conv[{i}].padding={layer.padding} must be < kernel={layer.kernel}")
            new = layer.out_size(size)
            if new < 1:
                raise ConfigError(
                    f"conv[{i}]={tuple(asdict(layer).values())} shrinks {size}x{size} below 1x1"
                )
            size = new
        _, up = conv_sizes(self.conv, self.image_size)
        for j, s in enumerate(up[1:]):
            if s < 1:
                i = len(self.conv) - 1 - j
                raise ConfigError(f"conv[{i}] cannot be mirrored by the decoder (output {s}x{s})")

    def _check_resnet(self) -> None:
        RANGES["width"].check("width", self.width)
        RANGES["scales"].check("scales", self.scales)
        # How often the image halves evenly: its trailing zero bits (2**scales would not fit in memory
        # for a scales typed too long).
        most = (self.image_size & -self.image_size).bit_length() - 1
        if self.scales > most:
            raise ConfigError(f"scales={self.scales} halves {self.image_size}x{self.image_size} to a fraction of a "
                              f"pixel (at most {most})")
        RANGES["blocks"].check("blocks", self.blocks)
        _check_choice("upsample", self.upsample, UPSAMPLES)
        if not isinstance(self.cond_norm, bool):
            raise ConfigError(f"cond_norm={self.cond_norm!r} must be true or false")
        if self.cond_norm and self.norm == "none":
            raise ConfigError("cond_norm=True needs a normalisation to condition: norm 'batch' or 'group'")

    @property
    def flat_features(self) -> int:
        """Encoder features after flattening the conv stack (CNN only)."""
        down, _ = conv_sizes(self.conv, self.image_size)
        return self.conv[-1].out_channels * down[-1] ** 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["conv"] = [list(asdict(c).values()) for c in self.conv]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        return cls(**_known_fields(cls, d, "model"))


def _known_fields(cls: type, d: dict[str, Any], what: str) -> dict[str, Any]:
    if not isinstance(d, dict):
        raise ConfigError(f"{what}: {d!r} is not a mapping of fields")
    known = set(cls.__dataclass_fields__)
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown {what} field(s) {unknown}; known: {sorted(known)}")
    missing = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING and f.name not in d]
    if missing:
        raise ConfigError(f"{what} field(s) {missing} missing")
    return d


def _listed(name: str, value: Any) -> list | tuple:
    if not isinstance(value, (list, tuple)):
        raise ConfigError(f"{name}={value!r} must be a list")
    return value


def _conv_layer(layer: Any) -> ConvLayer:
    """A ConvLayer, or one given as [out_channels, kernel, stride, padding] (the last two optional)."""
    if isinstance(layer, ConvLayer):
        return layer
    if not isinstance(layer, (list, tuple)) or not 2 <= len(layer) <= len(fields(ConvLayer)):
        raise ConfigError(f"conv layer {layer!r} must be [out_channels, kernel, stride, padding] "
                          f"(the last two optional)")
    return ConvLayer(*layer)


def _setting(default: Any, help: str) -> Any:
    """A Recipe field: its default and what it does, in the words cvae_core.train's --help shows."""
    return field(default=default, metadata={"help": help})


@dataclass(frozen=True)
class Recipe:
    """How a model is trained. The defaults are the report's recipe (Adam, lr 1e-4, batch 512)."""

    lr: float = _setting(1e-4, "Adam's learning rate (AdamW's when weight_decay > 0)")
    batch_size: int = _setting(512, "images per step")
    weight_decay: float = _setting(0.0, "AdamW's decoupled weight decay (0: Adam, the report's)")
    ema: float = _setting(0.0, "decay per step of an exponential moving average of the weights, e.g. 0.999 (0: off)")
    grad_clip: float = _setting(0.0, "the gradients' total norm is clipped to this before each step (0: off)")
    lr_schedule: str = _setting("constant", "after the warm-up: constant, or cosine (a cosine decay to 0 at the "
                                            "last epoch)")
    warmup_epochs: int = _setting(0, "epochs over which the learning rate rises linearly from 0, step by step")

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if name in CHOICES:
                _check_choice(name, value, CHOICES[name])
            else:
                RANGES[name].check(name, value)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Recipe":
        return cls(**_known_fields(cls, d, "recipe"))


REPORT = Recipe()


@dataclass(frozen=True)
class TrialConfig:
    """One trial's configuration: the model and how it is trained. Its fields are the columns
    of trials.parquet and the leaderboard (`columns`), so they never share a name."""

    model: ModelConfig
    recipe: Recipe = REPORT

    def to_dict(self) -> dict[str, Any]:
        return {"model": self.model.to_dict(), "recipe": self.recipe.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrialConfig":
        d = _known_fields(cls, d, "trial")
        return cls(ModelConfig.from_dict(d["model"]), Recipe.from_dict(d.get("recipe", {})))

    def columns(self) -> dict[str, Any]:
        """Every field of the model and the recipe, flat: a table row's configuration columns."""
        return {**self.model.to_dict(), **self.recipe.to_dict()}


def column_types() -> dict[str, str]:
    """The configuration columns (TrialConfig.columns) and their annotated types, in order."""
    return {f.name: f.type for cls in (ModelConfig, Recipe) for f in fields(cls)}


def column_defaults() -> dict[str, Any]:
    """The configuration columns' defaults: what a row written before its field existed reads."""
    return {f.name: f.default for cls in (ModelConfig, Recipe) for f in fields(cls) if f.default is not MISSING}


__all__ = [
    "PATIENCE",
    "MAX_EPOCHS",
    "GRID_EVERY",
    "REDUCTION",
    "REPORT",
    "ConfigError",
    "ConvLayer",
    "ModelConfig",
    "RANGES",
    "CHOICES",
    "LR_SCHEDULES",
    "Range",
    "Recipe",
    "TrialConfig",
    "IMAGE_SIZE",
    "IMAGE_CHANNELS",
    "NUM_CLASSES",
    "DATA_FIELDS",
    "CIFAR10_SHAPE",
    "describe_shape",
    "image_size_problem",
    "batch_size_problem",
]
