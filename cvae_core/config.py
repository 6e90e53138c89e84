"""Typed, validated model configuration.

A `ModelConfig` is checked completely on construction, so a bad value fails before any
tensor is allocated, with a message naming the field and the value.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

IMAGE_SIZE = 32
IMAGE_CHANNELS = 3
NUM_CLASSES = 10

FAMILIES = ("mlp", "cnn")
NORMS = ("none", "batch")
ACTIVATIONS = ("relu", "leaky_relu")
# bernoulli: the report's BCE; gaussian: fixed sigma; gaussian_learned: one shared,
# learned sigma (sigma-VAE, Rybkin et al. 2021).
LIKELIHOODS = ("bernoulli", "gaussian", "gaussian_learned")
# sum: the report's BCE + KL summed over pixels, latents and the batch; mean: its failure mode
REDUCTIONS = ("sum", "mean")


@dataclass(frozen=True)
class Recipe:
    """The report's training recipe, the default of every command and settings file."""

    lr: float = 1e-4  # Adam
    batch_size: int = 512
    patience: int = 20  # epochs without a better validation loss before training stops


REPORT = Recipe()


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


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}={value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{name}={value!r} must be >= {minimum}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"{name}={value!r} must be one of {list(choices)}")


def conv_sizes(conv: tuple[ConvLayer, ...], size: int = IMAGE_SIZE) -> tuple[list[int], list[int]]:
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

    family: "mlp" uses `hidden`; "cnn" uses `conv` and `h` (the width of the linear layer
    between the conv stack and the latent heads). The defaults reproduce the report:
    no normalisation, ReLU, Bernoulli likelihood (BCE), beta = 1.
    """

    family: str
    latent: int
    hidden: tuple[int, ...] = ()
    conv: tuple[ConvLayer, ...] = ()
    h: int = 0
    norm: str = "none"
    activation: str = "relu"
    likelihood: str = "bernoulli"
    sigma: float = 0.1  # fixed sigma of the "gaussian" likelihood, in pixel units [0, 1]
    beta: float = 1.0  # KL weight in the training loss

    def __post_init__(self) -> None:
        _check_choice("family", self.family, FAMILIES)
        _check_int("latent", self.latent, 1)
        _check_choice("norm", self.norm, NORMS)
        _check_choice("activation", self.activation, ACTIVATIONS)
        _check_choice("likelihood", self.likelihood, LIKELIHOODS)
        if not isinstance(self.sigma, (int, float)) or isinstance(self.sigma, bool) or not self.sigma > 0:
            raise ConfigError(f"sigma={self.sigma!r} must be a number > 0")
        if not isinstance(self.beta, (int, float)) or isinstance(self.beta, bool) or not self.beta >= 0:
            raise ConfigError(f"beta={self.beta!r} must be a number >= 0")
        # Accept lists (from YAML/JSON) but store tuples so the config stays hashable.
        object.__setattr__(self, "hidden", tuple(self.hidden))
        object.__setattr__(
            self,
            "conv",
            tuple(c if isinstance(c, ConvLayer) else ConvLayer(*c) for c in self.conv),
        )
        if self.family == "mlp":
            if not self.hidden:
                raise ConfigError("hidden=() must list at least one width for family='mlp'")
            for i, width in enumerate(self.hidden):
                _check_int(f"hidden[{i}]", width, 1)
            if self.conv:
                raise ConfigError(f"conv={self.conv!r} must be empty for family='mlp'")
        else:
            if not self.conv:
                raise ConfigError("conv=() must list at least one layer for family='cnn'")
            _check_int("h", self.h, 1)
            if self.hidden:
                raise ConfigError(f"hidden={self.hidden!r} must be empty for family='cnn'")
            self._check_conv()

    def _check_conv(self) -> None:
        size = IMAGE_SIZE
        for i, layer in enumerate(self.conv):
            _check_int(f"conv[{i}].out_channels", layer.out_channels, 1)
            _check_int(f"conv[{i}].kernel", layer.kernel, 1)
            _check_int(f"conv[{i}].stride", layer.stride, 1)
            _check_int(f"conv[{i}].padding", layer.padding, 0)
            if layer.padding >= layer.kernel:
                raise ConfigError(f"conv[{i}].padding={layer.padding} must be < kernel={layer.kernel}")
            new = layer.out_size(size)
            if new < 1:
                raise ConfigError(
                    f"conv[{i}]={tuple(asdict(layer).values())} shrinks {size}x{size} below 1x1"
                )
            size = new
        _, up = conv_sizes(self.conv)
        for j, s in enumerate(up[1:]):
            if s < 1:
                i = len(self.conv) - 1 - j
                raise ConfigError(f"conv[{i}] cannot be mirrored by the decoder (output {s}x{s})")

    @property
    def flat_features(self) -> int:
        """Encoder features after flattening the conv stack (CNN only)."""
        down, _ = conv_sizes(self.conv)
        return self.conv[-1].out_channels * down[-1] ** 2

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["hidden"] = list(self.hidden)
        d["conv"] = [list(asdict(c).values()) for c in self.conv]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ModelConfig":
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(d) - known)
        if unknown:
            raise ConfigError(f"unknown model field(s) {unknown}; known: {sorted(known)}")
        return cls(**d)


__all__ = [
    "REPORT",
    "ConfigError",
    "ConvLayer",
    "ModelConfig",
    "IMAGE_SIZE",
    "IMAGE_CHANNELS",
    "NUM_CLASSES",
]
