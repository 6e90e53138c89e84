"""Drawing images from a trained cVAE, and the PNG grids written during training."""

from __future__ import annotations

import math
from pathlib import Path

import torch
from PIL import Image

from .atomic import atomic_save_image
from .layout import GRID_CLASSES, RECON_GRID, SAMPLES_GRID
from .models import CVAE


def prior_latents(model: CVAE, n: int, generator: torch.Generator | None = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """n codes z ~ N(0, I) of `model`: the prior, which the training grids and the "prior" sampler
    (results.samplers) decode."""
    return torch.randn(n, model.cfg.latent, generator=generator, device=device)


GRID_PADDING = 2  # black pixels between images, as in torchvision's grids


def grid_size(n: int, nrow: int, height: int, width: int) -> tuple[int, int]:
    """(width, height) in pixels of image_grid's grid of `n` images of height x width, `nrow` to a row."""
    columns = min(nrow, n)
    rows = math.ceil(n / columns)
    return columns * (width + GRID_PADDING) + GRID_PADDING, rows * (height + GRID_PADDING) + GRID_PADDING


def image_grid(images: torch.Tensor, nrow: int) -> Image.Image:
    """Images (N, C, H, W) (C = 1 or 3), uint8 or floats in [0, 1], `nrow` to a row, laid out as torchvision's
    make_grid lays them out (importing torchvision for it would cost every process seconds)."""
    if images.dtype != torch.uint8:
        images = images.detach().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)
    n, c, h, w = images.shape
    padding, columns = GRID_PADDING, min(nrow, n)
    width, height = grid_size(n, nrow, h, w)
    grid = torch.zeros(c, height, width, dtype=torch.uint8)
    for i, image in enumerate(images.cpu()):
        r, col = divmod(i, columns)
        top, left = padding + r * (h + padding), padding + col * (w + padding)
        grid[:, top : top + h, left : left + w] = image
    return Image.fromarray(grid[0].numpy() if c == 1 else grid.permute(1, 2, 0).numpy())


def grid_labels(per_class: int, classes: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """0,0,...,1,1,...: `per_class` of each of `classes` classes, class by class."""
    return torch.arange(classes, device=device).repeat_interleave(per_class)


def first_of_each_class(y: torch.Tensor, classes: int, per_class: int = 1) -> torch.Tensor:
    """Indices of the first `per_class` images of each of the first `classes` classes, in class order."""
    idx = [torch.nonzero(y == c).flatten()[:per_class] for c in range(classes)]
    return torch.cat(idx)


@torch.no_grad()
def save_training_grids(
    model: CVAE,
    out_dir: Path,
    epoch: int,
    fixed: dict[str, tuple[torch.Tensor, torch.Tensor]],
    seed: int = 0,
) -> None:
    """Reconstructions of fixed images (original row above reconstruction row) per split in
    `fixed`, and prior samples, one row per class with the same noise every epoch."""
    was_training = model.training
    model.eval()
    out_dir.mkdir(parents=True, exist_ok=True)
    device = next(model.parameters()).device
    for split, (x_u8, y) in fixed.items():
        x = x_u8.to(device).float() / 255
        y = y.to(device)
        mu, _ = model.encode(x, y)
        rec = model.decode(mu, y)
        atomic_save_image(image_grid(torch.cat([x, rec]), nrow=len(x)), out_dir / RECON_GRID.format(epoch, split))
    gen = torch.Generator(device=device).manual_seed(seed)
    labels = grid_labels(10, min(model.cfg.num_classes, GRID_CLASSES), device)
    samples = model.decode(prior_latents(model, len(labels), gen, device), labels)
    atomic_save_image(image_grid(samples, nrow=10), out_dir / SAMPLES_GRID.format(epoch))
    model.train(was_training)
