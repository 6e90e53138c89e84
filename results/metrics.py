"""How close generated images are to real ones, every measure from one pass of features.

The math follows torch-fidelity (the Frechet distance, KID's unbiased polynomial-kernel MMD over
random subsets, split-wise IS) and is tested against it; FID and KID run in float64 on the
scoring device, so a trial on a GPU does not wait for the CPU. The real side comes from
`results.features`, cached per dataset version, split, subset and extractor.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from .features import (
    Features,
    MetricOptions,
    Probe,
    Statistics,
    cache_path,
    cache_root,
    class_statistics,
    extract,
    probe,
    probe_path,
    real_features,
    reference_statistics,
)
from .reference import Reference

log = logging.getLogger("results")

KID_SUBSETS = 100  # torch-fidelity's defaults (Binkowski et al. 2018)
KID_SUBSET_SIZE = 1000
KID_SEED = 2020
PRC_NEIGHBOURS = 3  # k of the k-NN balls (Kynkaanniemi et al. 2019)
PRC_REFERENCE = 10_000  # real and generated images precision/recall compare: fixed subsets of each


def fid(pool: torch.Tensor, reference: Statistics, device: str | torch.device = "cpu") -> float:
    """FID of features (n, d) against reference statistics: ||mu_g - mu_r||^2 + Tr(S_g + S_r
    - 2 (S_r S_g)^1/2), the value torch-fidelity gives for their moments. Tr (S_r S_g)^1/2 is the
    sum of the square roots of the eigenvalues of X S_r X^T / (n - 1), X the centred features: an
    n x n symmetric problem when n <= d (S_g has rank < n); with more samples than dimensions,
    those of S_r^1/2 S_g S_r^1/2 (d x d)."""
    device = torch.device(device)
    x = pool.to(device, torch.float64)
    n, d = x.shape
    if n < 2:
        raise ValueError(f"FID needs at least 2 images, got {n}")
    mu = x.mean(0)
    centred = x - mu
    mu_r, sigma_r = reference.mu.to(device), reference.sigma.to(device)
    if n <= d:
        inner = centred @ sigma_r @ centred.T
    else:
        z = centred @ reference.sqrt_sigma(device)
        inner = z.T @ z
    tr_covmean = torch.linalg.eigvalsh(inner / (n - 1)).clamp_min(0).sqrt().sum()
    value = ((mu - mu_r) ** 2).sum() + torch.trace(sigma_r) + (centred**2).sum() / (n - 1) - 2 * tr_covmean
    return float(value)


def kid(gen: torch.Tensor, real: torch.Tensor, subsets: int = KID_SUBSETS, subset_size: int = KID_SUBSET_SIZE,
        seed: int = KID_SEED, device: str | torch.device = "cpu") -> tuple[float, float]:
    """Kernel Inception Distance (mean, std over subsets): torch-fidelity's estimator and subsets
    (the unbiased MMD^2 with k(x, y) = (x.y / d + 1)^3), computed in float64 on `device`.
    The subset size is capped by the smaller set."""
    m = min(subset_size, len(gen), len(real))
    if m < 2:
        raise ValueError(f"KID needs at least 2 images on each side, got {len(gen)} and {len(real)}")
    device = torch.device(device)
    rng = np.random.RandomState(seed)
    picks = [(rng.choice(len(gen), m, replace=False), rng.choice(len(real), m, replace=False)) for _ in range(subsets)]
    gen, real = gen.to(device, torch.float64), real.to(device, torch.float64)
    gamma = 1.0 / gen.shape[1]
    mmds = []
    chunk = max(1, 2_000_000 // (m * m))  # subsets per batched step: bounded memory
    for i in range(0, subsets, chunk):
        idx_x = torch.as_tensor(np.stack([p[0] for p in picks[i : i + chunk]]), device=device)
        idx_y = torch.as_tensor(np.stack([p[1] for p in picks[i : i + chunk]]), device=device)
        x, y = gen[idx_x], real[idx_y]
        k_xx = (x @ x.transpose(1, 2) * gamma + 1) ** 3
        k_yy = (y @ y.transpose(1, 2) * gamma + 1) ** 3
        k_xy = (x @ y.transpose(1, 2) * gamma + 1) ** 3
        off_xx = k_xx.sum((1, 2)) - k_xx.diagonal(dim1=1, dim2=2).sum(1)
        off_yy = k_yy.sum((1, 2)) - k_yy.diagonal(dim1=1, dim2=2).sum(1)
        mmds.append((off_xx + off_yy) / (m * (m - 1)) - 2 * k_xy.sum((1, 2)) / (m * m))
    mmd = torch.cat(mmds).cpu().numpy()
    return float(np.mean(mmd)), float(np.std(mmd))


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of the (shuffled) samples: (mean, std)."""
    from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric

    out = isc_features_to_metric(logits, splits=splits)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


# ---------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class SearchScore:
    """What a trial is ranked by: FID and KID of its samples, from one pass of features."""

    fid: float
    kid: float
    seconds: float  # generating excluded: features and both measures


def search_score(images: torch.Tensor, labels: torch.Tensor, reference: Reference, opts: MetricOptions) -> SearchScore:
    """FID and KID of uint8 `images` against the cached reference (which must exist or is computed)."""
    t0 = time.perf_counter()
    features = extract(images, labels, opts.detector(), opts.device)
    fid_value = fid(features.pool, reference_statistics(reference, opts), opts.device)
    kid_value, _ = kid(features.pool, real_features(reference, opts).pool, device=opts.device)
    if not (math.isfinite(fid_value) and math.isfinite(kid_value)):
        raise ValueError(f"non-finite score: FID {fid_value}, KID {kid_value}")
    return SearchScore(fid=fid_value, kid=kid_value, seconds=time.perf_counter() - t0)


def precision_recall(gen: torch.Tensor, real: torch.Tensor, k: int = PRC_NEIGHBOURS,
                     device: str | torch.device = "cpu") -> tuple[float, float]:
    """Improved precision and recall (Kynkaanniemi et al. 2019), torch-fidelity's: the share of
    generated samples inside the real samples' k-NN balls, and of real ones inside the generated'."""
    from torch_fidelity.metric_prc import calculate_precision_recall_part

    return calculate_precision_recall_part(gen.to(device, torch.float64), real.to(device, torch.float64), k)


def _at_most(x: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    """A fixed random subset of n rows of x (all of them, shuffled, when x has fewer). Precision and
    recall compare equal-sized sets, and their k-NN distances take rows x rows memory: with 100
    classes of 1,000 samples, 8 GB a block."""
    return x[torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]]


def class_measures(gen: Features, class_stats: tuple[Statistics, ...], classifier: Probe,
                   device: str | torch.device = "cpu") -> tuple[list[float], list[float]]:
    """For each class c: FID of the samples asked to be c against the real images of c, and the
    share of them the probe assigns to c."""
    fids, accuracies = [], []
    predicted = classifier.predict(gen.pool)
    for c, stats in enumerate(class_stats):
        mine = gen.labels == c
        fids.append(fid(gen.pool[mine], stats, device) if mine.sum() >= 2 else math.nan)
        accuracies.append(float((predicted[mine] == c).double().mean()))
    return fids, accuracies


@dataclass(frozen=True)
class Score:
    """A leaderboard row's measures of its samples (see docs/run-folder.md, leaderboard columns)."""

    fid: float
    fid_per_class: list[float]
    intra_fid: float
    class_accuracy: float
    class_accuracy_per_class: list[float]
    probe_accuracy_real: float
    kid_mean: float
    kid_std: float
    precision: float
    recall: float
    is_mean: float | None
    is_std: float | None
    is_missing_reason: str | None
    feature_extractor: str
    reference: str
    n_samples: int
    score_seconds: float  # features and every measure, generating excluded


def score(images: torch.Tensor, labels: torch.Tensor, reference: Reference, opts: MetricOptions) -> Score:
    """Every measure of uint8 `images` (asked to be of classes `labels`) from one pass of the extractor."""
    t0 = time.perf_counter()
    dev = opts.device
    gen = extract(images, labels, opts.detector(), dev)
    real = real_features(reference, opts)
    kid_mean, kid_std = kid(gen.pool, real.pool, device=dev)
    precision, recall = precision_recall(_at_most(gen.pool, PRC_REFERENCE, 1), _at_most(real.pool, PRC_REFERENCE, 0),
                                         device=dev)
    classifier = probe(reference, opts)
    fids, accuracies = class_measures(gen, class_statistics(reference, opts), classifier, dev)
    with_is = gen.logits is not None
    is_mean, is_std = inception_score(gen.logits) if with_is else (None, None)
    return Score(
        fid=fid(gen.pool, reference_statistics(reference, opts), dev),
        fid_per_class=fids, intra_fid=float(np.mean(fids)),
        class_accuracy=float(np.mean(accuracies)), class_accuracy_per_class=accuracies,
        probe_accuracy_real=classifier.accuracy_real,
        kid_mean=kid_mean, kid_std=kid_std, precision=precision, recall=recall,
        is_mean=is_mean, is_std=is_std,
        is_missing_reason=None if with_is else f"{opts.extractor} has no classifier logits (pool features only)",
        feature_extractor=opts.extractor, reference=reference.label(opts.data), n_samples=len(images),
        score_seconds=time.perf_counter() - t0,
    )


def prime_reference(reference: Reference, opts: MetricOptions, conditional: bool = False) -> None:
    """Compute and cache the reference side of a score: its statistics, and with `conditional`
    the class statistics and class probe (a no-op when cached); with opts.progress, says what it computes."""
    if opts.progress and not reference_cached(reference, opts, conditional):
        log.info(f"reference {reference.label(opts.data)}: computing its {opts.extractor} features and statistics"
                 f"{', per class and a class probe' if conditional else ''} (cached in {cache_root(opts.cache_dir)})")
    reference_statistics(reference, opts)
    if conditional:
        class_statistics(reference, opts)
        probe(reference, opts)


def reference_cached(reference: Reference, opts: MetricOptions, conditional: bool = False) -> bool:
    """Whether prime_reference would find everything cached on this machine (nothing is loaded)."""
    wanted = [cache_path(reference, opts, "stats")]
    if conditional:
        wanted += [cache_path(reference, opts, "class-stats"), probe_path(reference, opts)]
    return all(path.exists() for path in wanted)
