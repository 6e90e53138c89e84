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


def _by_hand():
    """Four pixels and two latents whose terms are known in closed form: sigmoid(0) = 1/2 and
    sigmoid(ln 3) = 3/4, so the pixels' BCEs are ln 2, ln 4, ln 2 and ln 4/3; the latents' KLs,
    -(1 + logvar - mu^2 - e^logvar) / 2, are 1/2 (mu 1, logvar 0) and (1 - ln 2) / 2 (mu 0, logvar ln 2)."""
    ln3 = math.log(3)
    logits = torch.tensor([0.0, ln3, 0.0, ln3]).view(1, 1, 2, 2)
    x = torch.tensor([1.0, 0.0, 0.0, 1.0]).view(1, 1, 2, 2)
    mu, logvar = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, math.log(2)]])
    rec = math.log(2) + math.log(4) + math.log(2) + math.log(4 / 3)
    kl = 0.5 + (1 - math.log(2)) / 2
    return (logits, x, mu, logvar), rec, kl


@pytest.mark.parametrize("beta", [1.0, 3.0])
def test_sum_and_mean_match_a_hand_computed_elbo(beta):
    """"sum" adds every pixel's and latent's term; "mean" averages each term over its own elements
    (4 pixels, 2 latents), which is not the mean of all six; beta weighs the KL alone."""
    args, rec, kl = _by_hand()
    assert neg_elbo(*args, beta=beta, reduction="sum").item() == pytest.approx(rec + beta * kl, rel=1e-6)
    assert neg_elbo(*args, beta=beta, reduction="mean").item() == pytest.approx(rec / 4 + beta * kl / 2, rel=1e-6)


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
