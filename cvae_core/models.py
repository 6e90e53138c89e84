"""The report's two cVAE families, built from a `ModelConfig`.

Both expose `encode(x, y) -> (mu, logvar)` and `decode(z, y) -> images in [0, 1]`; the
networks themselves produce logits, and `forward` returns those so the loss can use the
numerically stable BCE-with-logits.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import IMAGE_CHANNELS, IMAGE_SIZE, NUM_CLASSES, ModelConfig, conv_sizes


def _activation(name: str) -> nn.Module:
    return nn.ReLU() if name == "relu" else nn.LeakyReLU(0.2)


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

    @staticmethod
    def one_hot(y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, NUM_CLASSES).to(like.dtype)

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
    """Label as a one-hot concatenated to the flattened image (3072 + 10 inputs)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        n_pixels = IMAGE_CHANNELS * IMAGE_SIZE**2
        widths = [n_pixels + NUM_CLASSES, *cfg.hidden]
        enc: list[nn.Module] = []
        for a, b in zip(widths[:-1], widths[1:]):
            enc += _dense_block(a, b, cfg)
        self.encoder = nn.Sequential(*enc)
        self.mu = nn.Linear(cfg.hidden[-1], cfg.latent)
        self.logvar = nn.Linear(cfg.hidden[-1], cfg.latent)
        dec_widths = [cfg.latent + NUM_CLASSES, *reversed(cfg.hidden)]
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
        return out.view(-1, IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE)


class CNNCVAE(CVAE):
    """Label as a 4th input channel whose pixels equal the class index.

    The decoder mirrors the conv stack with transposed convolutions, then one more
    ConvTranspose2d(3, 3, k) whose kernel brings the output to exactly 32x32.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__(cfg)
        down, up = conv_sizes(cfg.conv)
        self.feature_shape = (cfg.conv[-1].out_channels, down[-1], down[-1])
        n_flat = cfg.flat_features

        channels = [IMAGE_CHANNELS + 1] + [c.out_channels for c in cfg.conv]
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
            *_dense_block(cfg.latent + NUM_CLASSES, cfg.h, cfg), *_dense_block(cfg.h, n_flat, cfg)
        )
        out_channels = [IMAGE_CHANNELS] + [c.out_channels for c in cfg.conv[:-1]]
        dec: list[nn.Module] = []
        for layer, c_out in zip(reversed(cfg.conv), reversed(out_channels)):
            convt = nn.ConvTranspose2d(
                layer.out_channels, c_out, layer.kernel, layer.stride, layer.padding
            )
            dec += _conv_block(convt, c_out, cfg)
        dec.append(nn.ConvTranspose2d(IMAGE_CHANNELS, IMAGE_CHANNELS, IMAGE_SIZE - up[-1] + 1))
        self.decoder_conv = nn.Sequential(*dec)

    def encode(self, x, y):
        label = y.to(x.dtype).view(-1, 1, 1, 1).expand(-1, 1, IMAGE_SIZE, IMAGE_SIZE)
        hid = self.encoder(torch.cat([x, label], dim=1))
        return self.mu(hid), self.logvar(hid)

    def decode_logits(self, z, y):
        hid = self.decoder_fc(torch.cat([z, self.one_hot(y, z)], dim=1))
        return self.decoder_conv(hid.view(-1, *self.feature_shape))


def build_model(cfg: ModelConfig) -> CVAE:
    return MLPCVAE(cfg) if cfg.family == "mlp" else CNNCVAE(cfg)


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())
