"""The cVAE families, built from a `ModelConfig`: the report's two (mlp, cnn) and a residual one.

All expose `encode(x, y) -> (mu, logvar)` and `decode(z, y) -> images in [0, 1]`; the
networks themselves produce logits, and `forward` returns those so the loss can use the
numerically stable BCE-with-logits.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig, conv_sizes


def _activation(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "leaky_relu": lambda: nn.LeakyReLU(0.2), "silu": nn.SiLU}[name]()


def _dense_block(n_in: int, n_out: int, cfg: ModelConfig) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Linear(n_in, n_out)]
    if cfg.norm == "batch":
        layers.append(nn.BatchNorm1d(n_out))
    layers.append(_activation(cfg.activation))
    return layers


def _conv_block(conv: nn.Module, n_out: int, cfg: ModelConfig) -> list[nn.Module]:
    layers = [conv]
    if cfg.norm == "batch":
        layers.append(nn.BatchNorm2d(n_out))
    layers.append(_activation(cfg.activation))
    return layers


class CVAE(nn.Module):
    """Shared pieces: reparameterisation, decoding to [0, 1], the learned sigma."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        # sigma-VAE: one shared log-sigma learned jointly with the networks.
        self.log_sigma = nn.Parameter(torch.zeros(())) if cfg.likelihood == "gaussian_learned" else None

    def one_hot(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.cfg.num_classes).to(like.dtype)

    def with_label_planes(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """x with the label appended as one one-hot input plane per class."""
        planes = self.one_hot(y, x)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return torch.cat([x, planes], dim=1)

    def encode(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        raise NotImplementedError

    def decode_logits(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def decode(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.decode_logits(z, y))

    def forward(
        self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (decoder logits, mu, logvar) for images x in [0, 1] and labels y."""
        mu, logvar = self.encode(x, y)
        eps = torch.randn(mu.shape, device=mu.device, dtype=mu.dtype, generator=generator)
        z = mu + eps * torch.exp(0.5 * logvar)
        return self.decode_logits(z, y), mu, logvar


class MLPCVAE(CVAE):
    """Label as a one-hot concatenated to the flattened image (CIFAR-10: 3072 + 10 inputs)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        n_pixels = cfg.channels * cfg.image_size**2
        widths = [n_pixels + cfg.num_classes, *cfg.hidden]
        enc: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            enc += _dense_block(a, b, cfg)
        self.encoder = nn.Sequential(*enc)
        self.mu = nn.Linear(cfg.hidden[-1], cfg.latent)
        self.logvar = nn.Linear(cfg.hidden[-1], cfg.latent)
        dec_widths = [cfg.latent + cfg.num_classes, *reversed(cfg.hidden)]
        dec: list[nn.Module] = []
        for a, b in zip(dec_widths[:-1], dec_widths[1:]):
            dec += _dense_block(a, b, cfg)
        dec.append(nn.Linear(cfg.hidden[0], n_pixels))
        self.decoder = nn.Sequential(*dec)

    def encode(self, x, y):
        hid = self.encoder(torch.cat([x.flatten(1), self.one_hot(y, x)], dim=1))
        return self.mu(hid), self.logvar(hid)

    def decode_logits(self, z, y):
        out = self.decoder(torch.cat([z, self.one_hot(y, z)], dim=1))
        return out.view(-1, self.cfg.channels, self.cfg.image_size, self.cfg.image_size)


class CNNCVAE(CVAE):
    """Label as one more input channel after the image's (the 4th for RGB), whose pixels equal
    the class index (`label: index`, the report's), or as one one-hot plane per class (`label: onehot`).

    The decoder mirrors the conv stack with transposed convolutions, then one more
    ConvTranspose2d(C, C, k) whose kernel brings the output to exactly the image size.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        down, up = conv_sizes(cfg.conv, cfg.image_size)
        self.feature_shape = (cfg.conv[-1].out_channels, down[-1], down[-1])
        n_flat = cfg.flat_features

        label_channels = cfg.num_classes if cfg.label == "onehot" else 1
        channels = [cfg.channels + label_channels] + [c.out_channels for c in cfg.conv]
        enc: list[nn.Module] = []
        for layer, c_in in zip(cfg.conv, channels[:-1]):
            conv = nn.Conv2d(c_in, layer.out_channels, layer.kernel, layer.stride, layer.padding)
            enc += _conv_block(conv, layer.out_channels, cfg)
        enc.append(nn.Flatten())
        enc += _dense_block(n_flat, cfg.h, cfg)
        self.encoder = nn.Sequential(*enc)
        self.mu = nn.Linear(cfg.h, cfg.latent)
        self.logvar = nn.Linear(cfg.h, cfg.latent)

        self.decoder_fc = nn.Sequential(
            *_dense_block(cfg.latent + cfg.num_classes, cfg.h, cfg), *_dense_block(cfg.h, n_flat, cfg)
        )
        out_channels = [cfg.channels] + [c.out_channels for c in cfg.conv[:-1]]
        dec: list[nn.Module] = []
        for layer, c_out in zip(reversed(cfg.conv), reversed(out_channels)):
            convt = nn.ConvTranspose2d(
                layer.out_channels, c_out, layer.kernel, layer.stride, layer.padding
            )
            dec += _conv_block(convt, c_out, cfg)
        dec.append(nn.ConvTranspose2d(cfg.channels, cfg.channels, cfg.image_size - up[-1] + 1))
        self.decoder_conv = nn.Sequential(*dec)

    def encode(self, x, y):
        if self.cfg.label == "onehot":
            x = self.with_label_planes(x, y)
        else:
            x = torch.cat([x, y.to(x.dtype).view(-1, 1, 1, 1).expand(-1, 1, *x.shape[2:])], dim=1)
        hid = self.encoder(x)
        return self.mu(hid), self.logvar(hid)

    def decode_logits(self, z, y):
        hid = self.decoder_fc(torch.cat([z, self.one_hot(y, z)], dim=1))
        return self.decoder_conv(hid.view(-1, *self.feature_shape))


GROUPS = 32  # GroupNorm's groups (Wu & He 2018); a layer with fewer channels takes a divisor of them


class Norm2d(nn.Module):
    """`norm` (none | batch | group) of a feature map; with `classes`, its scale and shift are
    per class, learned (conditional normalisation, de Vries et al. 2017), so the label reaches
    every layer that has one."""

    def __init__(self, kind: str, channels: int, classes: int = 0):
        super().__init__()
        affine = not classes
        if kind == "batch":
            self.norm = nn.BatchNorm2d(channels, affine=affine)
        elif kind == "group":
            self.norm = nn.GroupNorm(math.gcd(GROUPS, channels), channels, affine=affine)
        else:
            self.norm = nn.Identity()
        self.scale_shift = nn.Embedding(classes, 2 * channels) if classes else None
        if self.scale_shift is not None:  # start as the identity, as an unconditional norm does
            nn.init.constant_(self.scale_shift.weight[:, :channels], 1.0)
            nn.init.zeros_(self.scale_shift.weight[:, channels:])

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        x = self.norm(x)
        if self.scale_shift is None:
            return x
        scale, shift = self.scale_shift(y)[:, :, None, None].chunk(2, dim=1)
        return x * scale + shift


def _conv3x3(c_in: int, c_out: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, 3, padding=1)


class ResBlock(nn.Module):
    """Pre-activation residual block (He et al. 2016): two 3x3 convs, each after normalisation and
    activation, added to the input (through a 1x1 projection where the channel count changes)."""

    def __init__(self, c_in: int, c_out: int, cfg: ModelConfig, classes: int = 0):
        super().__init__()
        self.norm1, self.conv1 = Norm2d(cfg.norm, c_in, classes), _conv3x3(c_in, c_out)
        self.norm2, self.conv2 = Norm2d(cfg.norm, c_out, classes), _conv3x3(c_out, c_out)
        self.act = _activation(cfg.activation)
        self.skip = nn.Identity() if c_in == c_out else nn.Conv2d(c_in, c_out, 1)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x, y)))
        return self.skip(x) + self.conv2(self.act(self.norm2(h, y)))


def _upsample(c_in: int, c_out: int, kind: str) -> nn.Module:
    if kind == "nearest":
        return nn.Sequential(nn.Upsample(scale_factor=2, mode="nearest"), _conv3x3(c_in, c_out))
    return nn.ConvTranspose2d(c_in, c_out, 4, 2, 1)


def _run(layers: nn.ModuleList, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Residual blocks and norms take the label; pools and upsamplings only the feature map."""
    for layer in layers:
        x = layer(x, y) if isinstance(layer, (ResBlock, Norm2d)) else layer(x)
    return x


class ResNetCVAE(CVAE):
    """Encoder: the image plus the label as one-hot planes; a 3x3 stem conv to `width`; `scales`
    stages of `blocks` residual blocks, each stage followed by 2x average pooling, channels
    doubling per stage; flatten -> linear heads. Decoder: [z, one-hot label] -> linear -> the last
    stage's channels at image_size / 2^scales; per stage, reversed, a 2x upsampling then `blocks`
    residual blocks (class-conditional norms with `cond_norm`); a 3x3 conv to logits."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        widths = [cfg.width * 2**i for i in range(cfg.scales)]
        side = cfg.image_size // 2**cfg.scales
        self.bottom = (widths[-1], side, side)
        n_flat = math.prod(self.bottom)

        enc: list[nn.Module] = [_conv3x3(cfg.channels + cfg.num_classes, cfg.width)]
        for c_in, c_out in zip([cfg.width, *widths[:-1]], widths):
            enc += [ResBlock(c_in if b == 0 else c_out, c_out, cfg) for b in range(cfg.blocks)]
            enc.append(nn.AvgPool2d(2))
        enc += [Norm2d(cfg.norm, widths[-1]), _activation(cfg.activation)]
        self.encoder = nn.ModuleList(enc)
        self.mu = nn.Linear(n_flat, cfg.latent)
        self.logvar = nn.Linear(n_flat, cfg.latent)

        classes = cfg.num_classes if cfg.cond_norm else 0
        self.decoder_fc = nn.Linear(cfg.latent + cfg.num_classes, n_flat)
        dec: list[nn.Module] = []
        for c_in, c_out in zip(reversed([*widths[1:], widths[-1]]), reversed(widths)):
            dec.append(_upsample(c_in, c_out, cfg.upsample))
            dec += [ResBlock(c_out, c_out, cfg, classes) for _ in range(cfg.blocks)]
        dec += [Norm2d(cfg.norm, cfg.width, classes), _activation(cfg.activation),
                _conv3x3(cfg.width, cfg.channels)]
        self.decoder = nn.ModuleList(dec)

    def encode(self, x, y):
        hid = _run(self.encoder, self.with_label_planes(x, y), y).flatten(1)
        return self.mu(hid), self.logvar(hid)

    def decode_logits(self, z, y):
        hid = self.decoder_fc(torch.cat([z, self.one_hot(y, z)], dim=1))
        return _run(self.decoder, hid.view(-1, *self.bottom), y)


def build_model(cfg: ModelConfig) -> CVAE:
    return {"mlp": MLPCVAE, "cnn": CNNCVAE, "resnet": ResNetCVAE}[cfg.family](cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_params(cfg: ModelConfig) -> int:
    """The parameters of the model `cfg` builds, counted without allocating it (on the meta device)."""
    with torch.device("meta"):
        return count_params(build_model(cfg))
