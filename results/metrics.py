"""FID and Inception Score of generated images, computed by torch-fidelity.

The math is torch-fidelity's (float64 Frechet distance, split-wise IS); this module feeds it
uint8 images, resolves the feature extractor and caches reference statistics on disk under a
key naming the dataset version, the split, the subset and the extractor (torch-fidelity
appends the extractor and layer to our cache name and writes via a temp file + rename, so
concurrent scorers never read half a file).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch_fidelity
from torch.utils.data import Dataset
from torch_fidelity.metric_fid import KEY_METRIC_FID, fid_input_id_to_statistics_cached, fid_statistics_to_metric
from torch_fidelity.metric_isc import KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD, isc_features_to_metric
from torch_fidelity.utils import create_feature_extractor, resolve_feature_layer_for_metric

from cvae_core.data import ImageData, default_cache_dir, is_torchvision, split

from .extractors import COMPAT, has_logits, register_extractors, resolve_extractor

REFERENCE_SPLITS = ("train", "test", "all")


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^1/2), in float64."""
    as64 = lambda a: np.asarray(a, dtype=np.float64)  # noqa: E731
    stats1 = {"mu": as64(mu1), "sigma": as64(sigma1)}
    stats2 = {"mu": as64(mu2), "sigma": as64(sigma2)}
    return fid_statistics_to_metric(stats1, stats2, verbose=False)[KEY_METRIC_FID]


def inception_score(logits: torch.Tensor, splits: int = 10) -> tuple[float, float]:
    """exp(E_x KL(p(y|x) || p(y))) per split of the (shuffled) samples: (mean, std)."""
    out = isc_features_to_metric(logits, splits=splits)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


class UInt8Images(Dataset):
    """What torch-fidelity reads: one uint8 [3, H, W] tensor per item."""

    def __init__(self, images: torch.Tensor):
        if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] != 3:
            raise ValueError(f"images must be uint8 (N, 3, H, W), got {images.dtype} {tuple(images.shape)}")
        self.images = images.cpu()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i]


@dataclass(frozen=True)
class Reference:
    """The real images generated samples are compared with: a split, optionally a fixed subset."""

    data: ImageData
    split: str = "train"
    n: int | None = None  # None: the whole split; else a fixed random subset of n images

    def __post_init__(self):
        if self.split not in REFERENCE_SPLITS:
            raise ValueError(f"split={self.split!r} must be one of {list(REFERENCE_SPLITS)}")
        if self.n is not None and not (isinstance(self.n, int) and self.n >= 2):
            raise ValueError(f"n={self.n!r} must be an integer >= 2 or None")

    def images(self) -> torch.Tensor:
        x = self.data.test_x if self.split == "test" else split(self.data, self.split)[0]
        if self.n is not None and self.n < len(x):
            x = x[torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: self.n]]
        return x

    @property
    def label(self) -> str:
        """How the leaderboard names it, e.g. 'cifar10-jpeg:train[500]'."""
        source = "cifar10" if is_torchvision(self.data.source) else Path(self.data.source).stem
        return f"{source}:{self.split}" + (f"[{self.n}]" if self.n is not None else "")

    @property
    def cache_name(self) -> str:
        return f"cvae-ref-{self.data.key}-{self.split}-{self.n if self.n is not None else 'all'}"


@dataclass(frozen=True)
class Score:
    fid: float
    is_mean: float | None
    is_std: float | None
    is_missing_reason: str | None
    feature_extractor: str
    reference: str
    n_samples: int


def _setup(reference: Reference, extractor, inception_weights, device, batch_size, cache_dir) -> tuple[str, dict]:
    """The resolved extractor name and torch-fidelity's keyword arguments for this reference."""
    register_extractors()
    name = resolve_extractor(extractor, inception_weights)
    cuda = (torch.device(device).type == "cuda") if device is not None else torch.cuda.is_available()
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir() / "fidelity"
    cache_root.mkdir(parents=True, exist_ok=True)
    kwargs = dict(
        input2=UInt8Images(reference.images()),
        input2_cache_name=reference.cache_name,
        cache_root=str(cache_root),
        cache=True,
        feature_extractor=name,
        cuda=cuda,
        batch_size=batch_size,
        save_cpu_ram=True,  # no DataLoader workers: the images are already in memory
        verbose=False,
    )
    if inception_weights and name == COMPAT:
        kwargs["feature_extractor_weights_path"] = str(inception_weights)
    return name, kwargs


def reference_statistics(
    reference: Reference,
    *,
    extractor: str = "auto",
    inception_weights: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 200,
    cache_dir: str | os.PathLike | None = None,
) -> dict[str, np.ndarray]:
    """The reference's FID statistics {"mu", "sigma"}: computed once, then read from the cache."""
    name, kwargs = _setup(reference, extractor, inception_weights, device, batch_size, cache_dir)
    layer = resolve_feature_layer_for_metric("fid", **kwargs)
    feat = create_feature_extractor(name, [layer], **kwargs)
    return fid_input_id_to_statistics_cached(2, feat, layer, **kwargs)


def score(
    images: torch.Tensor,
    reference: Reference,
    *,
    extractor: str = "auto",
    inception_weights: str | None = None,
    device: str | torch.device | None = None,
    batch_size: int = 200,
    cache_dir: str | os.PathLike | None = None,
) -> Score:
    """FID (and IS when the extractor has logits) of uint8 `images` against `reference`."""
    name, kwargs = _setup(reference, extractor, inception_weights, device, batch_size, cache_dir)
    with_is = has_logits(name)
    out = torch_fidelity.calculate_metrics(input1=UInt8Images(images), fid=True, isc=with_is, **kwargs)
    return Score(
        fid=float(out[KEY_METRIC_FID]),
        is_mean=float(out[KEY_METRIC_ISC_MEAN]) if with_is else None,
        is_std=float(out[KEY_METRIC_ISC_STD]) if with_is else None,
        is_missing_reason=None if with_is else f"{name} has no classifier logits (pool features only)",
        feature_extractor=name,
        reference=reference.label,
        n_samples=len(images),
    )
