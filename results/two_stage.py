"""The two_stage sampler's second VAE (Dai & Wipf 2019, "Diagnosing and enhancing VAE models").

A trained cVAE's encoder means of the training images do not fill N(0, I), so decoding prior
samples decodes codes the decoder never saw. A second, small VAE is fitted on those means,
conditioned on the class (fully connected, `layers` x `width`, with a learned output variance
gamma); sampling draws u ~ N(0, I), decodes it to a code of the first model, and the first model
decodes that to an image. It is fitted once after training and saved, so that the images scored
can be drawn again exactly (results.sample).
"""

from __future__ import annotations

import math
import os
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from cvae_core.atomic import atomic_torch_save

from .names import TWO_STAGE_EPOCHS, TWO_STAGE_LAYERS, TWO_STAGE_WIDTH

BATCH = 512  # codes per step
LR = 1e-3  # Adam's, annealed to 0 over the fit (cosine)


def _mlp(n_in: int, width: int, layers: int) -> nn.Sequential:
    dims = [n_in] + [width] * layers
    return nn.Sequential(*(m for a, b in zip(dims[:-1], dims[1:]) for m in (nn.Linear(a, b), nn.ReLU())))


class SecondStage(nn.Module):
    """A class-conditional VAE over the first model's codes (standardised per dimension), its
    latent u of the same size, its output variance gamma one learned scalar."""

    def __init__(self, latent: int, width: int, layers: int, classes: int):
        super().__init__()
        self.settings = {"latent": latent, "width": width, "layers": layers, "classes": classes}
        self.encoder = _mlp(latent + classes, width, layers)
        self.mu, self.logvar = nn.Linear(width, latent), nn.Linear(width, latent)
        self.decoder = nn.Sequential(_mlp(latent + classes, width, layers), nn.Linear(width, latent))
        self.log_gamma = nn.Parameter(torch.zeros(()))
        self.register_buffer("mean", torch.zeros(latent))
        self.register_buffer("std", torch.ones(latent))

    def _label(self, y: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return F.one_hot(y, self.settings["classes"]).to(like.dtype)

    def decode(self, u: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Codes of the first model (its scale, not standardised) for second-stage latents u."""
        return self.decoder(torch.cat([u, self._label(y, u)], dim=1)) * self.std + self.mean

    def loss(self, z: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Negative ELBO per code, averaged over the batch: Gaussian NLL with variance gamma + KL."""
        x = (z - self.mean) / self.std
        hid = self.encoder(torch.cat([x, self._label(y, x)], dim=1))
        mu, logvar = self.mu(hid), self.logvar(hid)
        u = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        x_hat = self.decoder(torch.cat([u, self._label(y, u)], dim=1))
        nll = 0.5 * ((x - x_hat) ** 2 * torch.exp(-self.log_gamma) + self.log_gamma + math.log(2 * math.pi))
        kl = -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())
        return (nll.sum(1) + kl.sum(1)).mean()

    @torch.no_grad()
    def sample(self, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """One code per label, drawn with `generator` (on the CPU, so a seed means the same codes anywhere)."""
        u = torch.randn(len(labels), self.settings["latent"], generator=generator)
        device = self.mean.device
        return self.decode(u.to(device), labels.to(device)).cpu()


def fit(codes: torch.Tensor, labels: torch.Tensor, classes: int, *, width: int = TWO_STAGE_WIDTH,
        layers: int = TWO_STAGE_LAYERS, epochs: int = TWO_STAGE_EPOCHS, seed: int = 0,
        device: str | torch.device = "cpu") -> tuple[SecondStage, float]:
    """The second stage fitted on `codes` (N, latent) of `labels` (of `classes` classes) for
    `epochs` passes of Adam; returns it in eval mode and its last epoch's mean loss."""
    torch.manual_seed(seed)
    model = SecondStage(codes.shape[1], width, layers, classes).to(device)
    z, y = codes.to(device, torch.float32), labels.to(device)
    model.mean.copy_(z.mean(0))
    model.std.copy_(z.std(0).clamp_min(1e-6))
    batch = min(BATCH, len(z))
    steps = len(z) // batch
    optimizer = torch.optim.Adam(model.parameters(), lr=LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps)
    gen = torch.Generator(device=z.device).manual_seed(seed)
    for _ in range(epochs):
        perm, total = torch.randperm(len(z), device=z.device, generator=gen), torch.zeros((), device=z.device)
        for i in range(steps):
            idx = perm[i * batch : (i + 1) * batch]
            loss = model.loss(z[idx], y[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            total += loss.detach()
    last = total.item() / steps
    if not math.isfinite(last):
        raise ValueError(f"the two_stage sampler's fit diverged (loss {last})")
    return model.eval(), last


def save(model: SecondStage, path: str | os.PathLike) -> None:
    atomic_torch_save({"settings": model.settings, "state": model.state_dict()}, path)


def load(path: str | os.PathLike, device: str | torch.device = "cpu") -> SecondStage:
    blob: dict[str, Any] = torch.load(path, map_location=device, weights_only=True)
    model = SecondStage(**blob["settings"]).to(device)
    model.load_state_dict(blob["state"])
    return model.eval()
