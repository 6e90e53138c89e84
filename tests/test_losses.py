import math

import pytest
import torch
import torch.nn.functional as F

from cvae_core.losses import kl_divergence, neg_elbo, reconstruction_nll


def _batch(n=4):
    torch.manual_seed(0)
    return torch.randn(n, 3, 32, 32), torch.rand(n, 3, 32, 32), torch.randn(n, 8), torch.randn(n, 8)


def test_sum_is_bce_plus_kl_summed_over_everything():
    logits, x, mu, logvar = _batch()
    bce = F.binary_cross_entropy(torch.sigmoid(logits), x, reduction="sum")
    kl = -0.5 * torch.sum(1 + logvar - mu**2 - logvar.exp())
    assert torch.allclose(neg_elbo(logits, x, mu, logvar), bce + kl, rtol=1e-5)


def test_mean_averages_each_term_and_differs_from_sum():
    logits, x, mu, logvar = _batch()
    total = neg_elbo(logits, x, mu, logvar, reduction="sum")
    mean = neg_elbo(logits, x, mu, logvar, reduction="mean")
    expected = reconstruction_nll(logits, x, "bernoulli").mean() + kl_divergence(mu, logvar).mean()
    assert torch.allclose(mean, expected)
    assert total > 100 * mean


def test_beta_scales_only_the_kl():
    logits, x, mu, logvar = _batch()
    kl = kl_divergence(mu, logvar).sum()
    diff = neg_elbo(logits, x, mu, logvar, beta=3.0) - neg_elbo(logits, x, mu, logvar, beta=1.0)
    assert torch.allclose(diff, 2 * kl, rtol=1e-5)


def test_kl_is_zero_at_the_prior():
    assert torch.all(kl_divergence(torch.zeros(2, 3), torch.zeros(2, 3)) == 0)


def test_gaussian_nll_matches_normal_log_prob():
    logits, x, *_ = _batch(1)
    mean = torch.sigmoid(logits)
    expected = -torch.distributions.Normal(mean, 0.2).log_prob(x)
    assert torch.allclose(reconstruction_nll(logits, x, "gaussian", sigma=0.2), expected, atol=1e-5)
    log_s = torch.tensor(math.log(0.2))
    assert torch.allclose(
        reconstruction_nll(logits, x, "gaussian_learned", log_sigma=log_s), expected, atol=1e-5
    )


def test_unknown_reduction_is_rejected():
    with pytest.raises(ValueError, match="reduction"):
        neg_elbo(*_batch(), reduction="max")
