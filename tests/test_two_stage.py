"""The two_stage sampler's second VAE: fitted on a first model's codes, per class; saved and loaded."""

import pytest
import torch

from cvae_core import ModelConfig
from cvae_core.grids import grid_labels
from cvae_core.models import build_model
from results import two_stage
from results.samplers import latents


def clustered_codes(per_class=200, latent=4):
    """Codes far from N(0, I): class c around (3c, -c, ...) with a class-dependent spread."""
    g = torch.Generator().manual_seed(0)
    y = torch.arange(10).repeat_interleave(per_class)
    centre = torch.stack([torch.full((latent,), 3.0 * c) * torch.tensor([1.0, -1.0] * (latent // 2))
                          for c in range(10)])
    z = centre[y] + torch.randn(len(y), latent, generator=g) * (0.2 + 0.1 * y.view(-1, 1))
    return z, y, centre


def test_second_stage_samples_each_classs_codes():
    z, y, centre = clustered_codes()
    fitted, loss = two_stage.fit(z, y, 10, width=64, layers=2, epochs=200, seed=0)
    drawn = fitted.sample(grid_labels(200, 10), torch.Generator().manual_seed(1)).view(10, 200, -1)
    for c in range(10):  # each class's samples where that class's codes are, not where the others' are
        assert (drawn[c].mean(0) - centre[c]).abs().max() < 0.5, c
        assert drawn[c].std(0).mean() < 1.5
    assert loss < two_stage.SecondStage(4, 64, 2, 10).loss(z, y).item()  # it learned something


def test_a_saved_fit_draws_the_same_codes_for_the_same_seed(tmp_path):
    z, y, _ = clustered_codes(per_class=20)
    fitted, _ = two_stage.fit(z, y, 10, width=16, layers=1, epochs=2, seed=3)
    two_stage.save(fitted, tmp_path / "two_stage.pt")
    again = two_stage.load(tmp_path / "two_stage.pt")
    labels = grid_labels(5, 10)
    assert torch.equal(fitted.sample(labels, torch.Generator().manual_seed(7)),
                       again.sample(labels, torch.Generator().manual_seed(7)))
    assert not torch.equal(again.sample(labels, torch.Generator().manual_seed(7)),
                           again.sample(labels, torch.Generator().manual_seed(8)))


def test_the_two_stage_sampler_decodes_the_second_stages_codes():
    model = build_model(ModelConfig(family="mlp", latent=4, hidden=(16,))).eval()
    z, y, _ = clustered_codes(per_class=20)
    fitted, _ = two_stage.fit(z, y, 10, width=16, layers=1, epochs=2)
    codes = latents(model, "two_stage", 3, seed=5, second_stage=fitted)
    assert torch.equal(codes, fitted.sample(grid_labels(3, 10), torch.Generator().manual_seed(5)))
    with pytest.raises(ValueError, match="two_stage sampler needs its fitted second stage"):
        latents(model, "two_stage", 3)
