"""Samplers that turn a trained cVAE into images, `samples_per_class` per class.

- "prior": z ~ N(0, I).
- "gmm": z from a per-class Gaussian mixture fitted on the encoder means of that class's
  training images -- the ex-post density estimation of Ghosh et al. 2020 (Table 1), which
  samples where the encoder actually put the data rather than where the prior hopes it is.
- "two_stage": z from a second, class-conditional VAE fitted on those encoder means (Dai & Wipf
  2019; results.two_stage), fitted once and saved, and given here.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image, ImageDraw, ImageFont

from cvae_core.atomic import atomic_save_image
from cvae_core.grids import GRID_PADDING, grid_labels, grid_size, image_grid, prior_latents
from cvae_core.layout import GRID_CLASSES
from cvae_core.models import CVAE

from .names import GMM_COMPONENTS, SAMPLERS
from .two_stage import SecondStage

BATCH = 1000


@torch.no_grad()
def encoder_means(model: CVAE, x_u8: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    model.eval()  # BatchNorm's running statistics, as sampling uses them, and left as they are
    device = next(model.parameters()).device
    out = []
    for i in range(0, len(x_u8), BATCH):
        x = x_u8[i : i + BATCH].to(device).float() / 255
        out.append(model.encode(x, y[i : i + BATCH].to(device))[0].cpu())
    return torch.cat(out)


def latents(
    model: CVAE,
    sampler: str,
    per_class: int,
    train_x: torch.Tensor | None = None,
    train_y: torch.Tensor | None = None,
    components: int = GMM_COMPONENTS,
    seed: int = 0,
    second_stage: SecondStage | None = None,
) -> torch.Tensor:
    """(classes * per_class, latent) codes, class 0's first; labels are grid_labels(per_class, classes)."""
    gen, classes = torch.Generator().manual_seed(seed), model.cfg.num_classes
    if sampler == "prior":
        return prior_latents(model, classes * per_class, gen)
    if sampler == "two_stage":
        if second_stage is None:
            raise ValueError("the two_stage sampler needs its fitted second stage (results.two_stage.fit)")
        return second_stage.sample(grid_labels(per_class, classes), gen)
    if sampler != "gmm":
        raise ValueError(f"{sampler=} must be one of {list(SAMPLERS)}")
    from sklearn.mixture import GaussianMixture  # only here: importing scikit-learn takes seconds
    mu = encoder_means(model, train_x, train_y).double().numpy()
    z = []
    for c in range(classes):
        points = mu[(train_y == c).numpy()]
        gmm = GaussianMixture(n_components=min(components, len(points)), covariance_type="full",
                              reg_covar=1e-5, random_state=seed).fit(points)
        sample, _ = gmm.sample(per_class)
        # gmm.sample returns samples grouped by component; shuffle so any prefix is representative
        perm = torch.randperm(per_class, generator=torch.Generator().manual_seed(seed + c))
        z.append(torch.from_numpy(sample).float()[perm])
    return torch.cat(z)


@torch.no_grad()
def generate(
    model: CVAE,
    sampler: str,
    per_class: int,
    train_x: torch.Tensor | None = None,
    train_y: torch.Tensor | None = None,
    components: int = GMM_COMPONENTS,
    seed: int = 0,
    second_stage: SecondStage | None = None,
) -> torch.Tensor:
    """uint8 images (classes * per_class, C, S, S), class by class (labels: grid_labels)."""
    model.eval()
    device = next(model.parameters()).device
    z = latents(model, sampler, per_class, train_x, train_y, components, seed, second_stage)
    labels = grid_labels(per_class, model.cfg.num_classes)
    out = []
    for i in range(0, len(z), BATCH):
        images = model.decode(z[i : i + BATCH].to(device), labels[i : i + BATCH].to(device))
        if not torch.isfinite(images).all():  # uint8 would hide it
            raise ValueError("the decoder produced non-finite pixels")
        out.append(images.mul(255).round().clamp(0, 255).to(torch.uint8).cpu())
    return torch.cat(out)


def _label_font() -> ImageFont.ImageFont:
    return ImageFont.load_default(size=12)


def _label_width(classes: Sequence[str], font: ImageFont.ImageFont) -> int:
    """Pixels left of a sample grid for its class names."""
    return max(int(font.getlength(name)) for name in classes) + 2 * GRID_PADDING + 4


def sample_grid_size(per_class: int, classes: Sequence[str], height: int, width: int,
                     columns: int = 10) -> tuple[int, int]:
    """(width, height) in pixels of save_sample_grid's image of images height x width."""
    columns, classes = min(columns, per_class), list(classes)[:GRID_CLASSES]
    grid_width, grid_height = grid_size(columns * len(classes), columns, height, width)
    return _label_width(classes, _label_font()) + grid_width, grid_height


def save_sample_grid(
    images_u8: torch.Tensor, per_class: int, path: str | Path, classes: Sequence[str], columns: int = 10
) -> None:
    """A PNG with one row per class (the first GRID_CLASSES classes), the first `columns` images of
    each, the class named on the left."""
    columns, classes = min(columns, per_class), list(classes)[:GRID_CLASSES]
    idx = torch.cat([torch.arange(columns) + c * per_class for c in range(len(classes))])
    grid = image_grid(images_u8[idx], nrow=columns)
    font = _label_font()
    label_width = _label_width(classes, font)
    canvas = Image.new("RGB", (label_width + grid.width, grid.height))
    canvas.paste(grid.convert("RGB"), (label_width, 0))
    draw = ImageDraw.Draw(canvas)
    row_height = images_u8.shape[2] + GRID_PADDING
    for c, name in enumerate(classes):
        draw.text((GRID_PADDING + 2, GRID_PADDING + c * row_height + row_height // 2), name,
                  fill="white", font=font, anchor="lm")
    atomic_save_image(canvas, path)
