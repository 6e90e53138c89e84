from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import CLASSES
from PIL import Image

from cvae_core import ModelConfig
from cvae_core.grids import grid_labels
from cvae_core.models import build_model
from results.samplers import generate, latents, save_sample_grid

CFG = ModelConfig(family="mlp", latent=4, hidden=(32,))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return build_model(CFG).eval()


@pytest.fixture
def train_set():
    g = torch.Generator().manual_seed(1)
    y = torch.arange(10).repeat_interleave(40)
    # class-dependent brightness so the encoder puts classes in different places
    x = (torch.rand(len(y), 3, 32, 32, generator=g) * 60 + y.view(-1, 1, 1, 1) * 20).to(torch.uint8)
    return x, y


def test_prior_latents_depend_on_the_seed_alone(model):
    """Every score of a trial draws the same codes (search.objective.SAMPLE_SEED): its scores differ
    by the weights alone, whatever else used torch's global generator in between."""
    torch.manual_seed(11)
    z = latents(model, "prior", 5, seed=3)
    assert z.shape == (50, CFG.latent)
    torch.manual_seed(12)
    torch.rand(100)
    assert torch.equal(z, latents(model, "prior", 5, seed=3))
    assert not torch.equal(z, latents(model, "prior", 5, seed=4))


class TwoCodesPerClass(torch.nn.Module):
    """An encoder whose mean for an image of class c is 10 c + 2 b in every latent dimension, b the
    image's brightness (0 or 1): two tight clusters per class, far from every other class's."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.zeros(()))
        self.cfg = SimpleNamespace(num_classes=10)

    def encode(self, x, y):
        b = x.mean(dim=(1, 2, 3)).round()
        mu = (10 * y + 2 * b).float().unsqueeze(1).expand(-1, 3) + self.w
        return mu, torch.zeros_like(mu)


def test_gmm_latents_of_each_class_come_from_that_classs_codes_and_any_prefix_holds_every_component():
    y = torch.arange(10).repeat_interleave(6)  # 6 images per class, 3 dark and 3 bright
    x = (torch.arange(len(y)) % 2 * 255).to(torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 32, 32)
    z = latents(TwoCodesPerClass(), "gmm", 40, x, y, components=2, seed=0).view(10, 40, 3)
    for c in range(10):
        dark, bright = (z[c] - 10 * c).abs().lt(0.5).all(1), (z[c] - 10 * c - 2).abs().lt(0.5).all(1)
        assert (dark | bright).all(), f"class {c} drew codes of another class"
        # scikit-learn returns a mixture's samples grouped by component: without the shuffle the
        # first quarter would all be one cluster
        assert dark[:10].any() and bright[:10].any()
    again = latents(TwoCodesPerClass(), "gmm", 40, x, y, components=2, seed=0)
    assert torch.equal(again.view(10, 40, 3), z)
    # more components than a class has codes: capped, not an error
    few = latents(TwoCodesPerClass(), "gmm", 4, x[::3], y[::3], components=5, seed=0)
    assert few.shape == (40, 3) and torch.isfinite(few).all()


def test_generate_decodes_class_by_class_into_uint8(model, train_set):
    images = generate(model, "prior", 3, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (30, 3, 32, 32)
    z, labels = latents(model, "prior", 3, seed=0), grid_labels(3, 10)
    assert labels.tolist() == [c for c in range(10) for _ in range(3)]
    with torch.no_grad():
        expected = model.decode(z, labels).mul(255).round().to(torch.uint8)
    assert torch.equal(images, expected)
    assert generate(model, "gmm", 2, *train_set, components=2).shape == (20, 3, 32, 32)


def test_unknown_sampler_is_named(model):
    with pytest.raises(ValueError, match="sampler='flow'"):
        latents(model, "flow", 2)


def test_sample_grid_has_one_row_per_class_named_on_the_left(model, tmp_path):
    images = generate(model, "prior", 12)
    save_sample_grid(images, 12, tmp_path / "g.png", CLASSES)
    grid = np.asarray(Image.open(tmp_path / "g.png"))
    label_width = grid.shape[1] - (2 + 10 * 34)  # 10 columns of 32 + 2 pixels
    assert grid.shape[0] == 2 + 10 * 34 and label_width > 20
    for c in range(10):
        for j in (0, 9):
            y, x = 2 + c * 34, label_width + 2 + j * 34
            assert np.array_equal(grid[y : y + 32, x : x + 32], images[c * 12 + j].permute(1, 2, 0).numpy())
    names = [grid[2 + c * 34 : 34 + c * 34, :label_width] for c in range(10)]
    assert all((n > 128).any() for n in names) and len({n.tobytes() for n in names}) == 10

    save_sample_grid(generate(model, "prior", 4), 4, tmp_path / "s.png", CLASSES)
    assert Image.open(tmp_path / "s.png").size == (label_width + 2 + 4 * 34, 2 + 10 * 34)


def test_a_grid_of_many_grayscale_classes_shows_the_first_twenty_each_named(tmp_path):
    cfg = ModelConfig(family="mlp", latent=4, hidden=(16,), image_size=28, channels=1, num_classes=25)
    images = generate(build_model(cfg), "prior", 3)
    assert images.shape == (75, 1, 28, 28)
    save_sample_grid(images, 3, tmp_path / "g.png", [f"c{i}" for i in range(25)])
    grid = np.asarray(Image.open(tmp_path / "g.png").convert("L"))
    assert grid.shape[0] == 2 + 20 * 30  # 20 rows of 28 + 2 pixels
    assert np.array_equal(grid[2:30, -(2 + 28) : -2], images[2, 0].numpy())  # class 0's third image


def test_a_trained_model_is_encoded_as_its_best_weights_are_saved(train_set, tmp_path):
    # the final stage encodes the training images (gmm, two_stage) with the model train() returns
    from cvae_core import Recipe
    from cvae_core.training import train
    from results.samplers import encoder_means

    x, y = train_set
    cfg = ModelConfig(family="cnn", latent=4, conv=[(8, 4, 2, 1)], h=16, norm="batch")
    result = train(cfg, x, y, x[:20], y[:20], recipe=Recipe(batch_size=100), epochs=1, seed=0, device="cpu",
                   out_dir=tmp_path)
    assert not result.model.training
    saved = {k: v.clone() for k, v in result.model.state_dict().items()}
    encoder_means(result.model, x, y)
    assert all(torch.equal(saved[k], v) for k, v in result.model.state_dict().items())  # BatchNorm's too
    best = torch.load(tmp_path / "best.pt", weights_only=True)["model"]
    assert all(torch.equal(best[k], v) for k, v in result.model.state_dict().items())
