"""Negative ELBO: reconstruction term of the chosen likelihood plus beta * KL."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from .config import REDUCTION, REDUCTIONS, ModelConfig


def reconstruction_nll(
    logits: torch.Tensor,
    x: torch.Tensor,
    likelihood: str,
    sigma: float = ModelConfig.sigma,
    log_sigma: torch.Tensor | None = None,
) -> torch.Tensor:
    """Per-element negative log-likelihood of x in [0, 1] under the decoder (same shape as x)."""
    if likelihood == "bernoulli":
        return F.binary_cross_entropy_with_logits(logits, x, reduction="none")
    if likelihood == "gaussian":
        log_s = torch.tensor(math.log(sigma), device=x.device, dtype=x.dtype)
    elif likelihood == "gaussian_learned":
        if log_sigma is None:
            raise ValueError("likelihood='gaussian_learned' needs the model's log_sigma")
        log_s = log_sigma
    else:
        raise ValueError(f"{likelihood=} is not a known likelihood")
    mean = torch.sigmoid(logits)
    return 0.5 * ((x - mean) * torch.exp(-log_s)) ** 2 + log_s + 0.5 * math.log(2 * math.pi)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(q(z|x) || N(0, I)) per element, same shape as mu."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp())


def neg_elbo(
    logits: torch.Tensor,
    x: torch.Tensor,
    mu: torch.Tensor,
    logvar: torch.Tensor,
    *,
    likelihood: str = ModelConfig.likelihood,
    sigma: float = ModelConfig.sigma,
    log_sigma: torch.Tensor | None = None,
    beta: float = ModelConfig.beta,
    reduction: str = REDUCTION,
) -> torch.Tensor:
    """Reconstruction + beta * KL over a batch.

    reduction="sum" sums over pixels, latents and the batch, as the report insists;
    "mean" averages each term over its elements (the report's failure mode, kept selectable).
    """
    rec = reconstruction_nll(logits, x, likelihood, sigma, log_sigma)
    kl = kl_divergence(mu, logvar)
    if reduction == "sum":
        return rec.sum() + beta * kl.sum()
    if reduction == "mean":
        return rec.mean() + beta * kl.mean()
    raise ValueError(f"{reduction=} must be one of {list(REDUCTIONS)}")
