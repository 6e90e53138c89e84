import numpy as np
import pytest
import torch
from conftest import CLASSES
from PIL import Image

from cvae_core import ModelConfig
from cvae_core.grids import grid_labels
from cvae_core.models import build_model
from results.samplers import encoder_means, generate, latents, save_sample_grid

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


def test_prior_latents_are_standard_normal_and_seeded(model):
    z = latents(model, "prior", 500, seed=3)
    assert z.shape == (5000, CFG.latent)
    assert abs(z.mean()) < 0.05 and abs(z.std() - 1) < 0.05
    assert torch.equal(z, latents(model, "prior", 500, seed=3))
    assert not torch.equal(z, latents(model, "prior", 500, seed=4))


def test_gmm_latents_follow_each_classs_encoder_means(model, train_set):
    x, y = train_set
    mu = encoder_means(model, x, y)
    z = latents(model, "gmm", 400, x, y, components=3, seed=0).view(10, 400, CFG.latent)
    for c in range(10):
        m = mu[y == c]
        assert torch.allclose(z[c].mean(0), m.mean(0), atol=4 * m.std(0).max().item() / 400**0.5 + 1e-3)
        assert torch.allclose(z[c].std(0), m.std(0), rtol=0.3)
    # the encoder means are nowhere near N(0, I): the two samplers draw different codes
    assert (mu.std(0) < 0.5).all()


def test_generate_decodes_class_by_class_into_uint8(model, train_set):
    images = generate(model, "prior", 3, seed=0)
    assert images.dtype == torch.uint8 and images.shape == (30, 3, 32, 32)
    z, labels = latents(model, "prior", 3, seed=0), grid_labels(3)
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
