"""Features of images under a torch-fidelity feature extractor, and the cached features of real images.

Every measure of a set of generated images comes from one pass of the extractor over them
(`extract`). The features of real images, and their statistics, are computed once per (dataset
version, split, subset, extractor) and cached under $CVAE_CACHE/fidelity/, written atomically so
that concurrent readers (trials, finalists) see a whole file or none. Each process builds an
extractor once and keeps what it read from the cache.
"""

from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from cvae_core.atomic import atomic_torch_save
from cvae_core.config import NUM_CLASSES
from cvae_core.data import ImageData, split
from cvae_core.sources import default_cache_dir, is_torchvision

from .names import COMPAT, REFERENCE_SPLITS

EXTRACT_BATCH = 200  # images per extractor call
PROBE_MAX_ITER = 1000  # L-BFGS iterations of the class probe


@dataclass(frozen=True)
class Features:
    """One extractor pass over a set of images."""

    pool: torch.Tensor  # (N, d) float32 on the CPU: what FID, KID and precision/recall use
    logits: torch.Tensor | None  # (N, classes) when the extractor has a classifier (IS), else None
    labels: torch.Tensor  # (N,) int64: each image's class (real) or the class it was asked for (generated)

    def of_class(self, c: int) -> torch.Tensor:
        return self.pool[self.labels == c]


@dataclass(frozen=True)
class Reference:
    """Real images to compare with: a split, optionally a fixed random subset of n images."""

    data: ImageData
    split: str = "train"
    n: int | None = None  # None: the whole split

    def __post_init__(self):
        if self.split not in REFERENCE_SPLITS:
            raise ValueError(f"split={self.split!r} must be one of {list(REFERENCE_SPLITS)}")
        if self.n is not None and not (isinstance(self.n, int) and self.n >= 2):
            raise ValueError(f"n={self.n!r} must be an integer >= 2 or None")

    def images(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(uint8 images, labels); a subset is the same fixed one every time."""
        if self.split == "test":
            x, y = self.data.test_x, self.data.test_y
        else:
            x, y = split(self.data, self.split)[:2]
        if self.n is not None and self.n < len(x):
            keep = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))[: self.n]
            x, y = x[keep], y[keep]
        return x, y

    @property
    def label(self) -> str:
        """How the leaderboard names it, e.g. 'cifar10-jpeg:train[500]'."""
        source = "cifar10" if is_torchvision(self.data.source) else Path(self.data.source).stem
        return f"{source}:{self.split}" + (f"[{self.n}]" if self.n is not None else "")

    @property
    def cache_name(self) -> str:
        return f"cvae-ref-{self.data.key}-{self.split}-{self.n if self.n is not None else 'all'}"


# ---------------------------------------------------------------------------- extraction


@functools.lru_cache(maxsize=4)
def load_extractor(name: str, inception_weights: str | None = None, device: str = "cpu"):
    """torch-fidelity's feature extractor `name` on `device`, built once per process."""
    from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY
    from torch_fidelity.utils import create_feature_extractor

    from .extractors import has_logits, register_extractors

    register_extractors()
    cls = FEATURE_EXTRACTORS_REGISTRY[name]
    layers = [cls.get_default_feature_layer_for_metric("fid")]
    if has_logits(name):
        layers.append(cls.get_default_feature_layer_for_metric("isc"))
    kwargs = {"feature_extractor_weights_path": inception_weights} if inception_weights and name == COMPAT else {}
    extractor = create_feature_extractor(name, layers, cuda=False, verbose=False, **kwargs)
    return extractor.to(device)


@torch.no_grad()
def extract(images_u8: torch.Tensor, labels: torch.Tensor, extractor, device: str | torch.device = "cpu",
            batch_size: int = EXTRACT_BATCH) -> Features:
    """Features of uint8 (N, 3, H, W) images: one pass, in batches, on `device`."""
    if images_u8.dtype != torch.uint8 or images_u8.ndim != 4 or images_u8.shape[1] != 3:
        raise ValueError(f"images must be uint8 (N, 3, H, W), got {images_u8.dtype} {tuple(images_u8.shape)}")
    pools, logits = [], []
    for i in range(0, len(images_u8), batch_size):
        out = extractor(images_u8[i : i + batch_size].to(device))
        pools.append(out[0].float().cpu())
        if len(out) > 1:
            logits.append(out[1].float().cpu())
    pool = torch.cat(pools)
    if not torch.isfinite(pool).all():
        raise ValueError("the feature extractor gave non-finite features")
    return Features(pool=pool, logits=torch.cat(logits) if logits else None, labels=labels.cpu())


# ---------------------------------------------------------------------------- the cache


def cache_root(cache_dir: str | os.PathLike | None = None) -> Path:
    return Path(cache_dir) if cache_dir is not None else default_cache_dir() / "fidelity"


@functools.lru_cache(maxsize=8)
def _weights_tag(path: str) -> str:
    return hashlib.sha1(Path(path).read_bytes()).hexdigest()[:10]


def extractor_tag(name: str, inception_weights: str | None) -> str:
    """The extractor as cache keys name it: its weights file too, when one is given."""
    return f"{name}-{_weights_tag(inception_weights)}" if inception_weights and name == COMPAT else name


@functools.lru_cache(maxsize=8)
def _load(path: str) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def cache_path(reference: Reference, extractor: str, inception_weights: str | None, what: str,
               cache_dir: str | os.PathLike | None = None) -> Path:
    """The file caching `what` (features, stats, class-stats, probe) of the reference's images."""
    return cache_root(cache_dir) / f"{reference.cache_name}-{extractor_tag(extractor, inception_weights)}-{what}.pt"


def _cached(path: Path, compute: Callable[[], dict]) -> dict:
    """The dict in `path`, computed and written atomically on a miss; read once per process."""
    if not path.exists():
        atomic_torch_save(compute(), path)
    return _load(str(path))


def real_features(reference: Reference, extractor: str, inception_weights: str | None = None,
                  device: str = "cpu", cache_dir: str | os.PathLike | None = None) -> Features:
    """Features of the reference's images, computed once and cached."""
    path = cache_path(reference, extractor, inception_weights, "features", cache_dir)

    def compute() -> dict:
        x, y = reference.images()
        f = extract(x, y, load_extractor(extractor, inception_weights, str(device)), device)
        return {"pool": f.pool, "logits": f.logits, "labels": f.labels}

    return Features(**_cached(path, compute))


@dataclass(frozen=True)
class Statistics:
    """Mean and covariance (float64) of a reference's pool features: FID's reference side."""

    mu: torch.Tensor
    sigma: torch.Tensor


def moments(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics' fields of features (n, d), in float64."""
    x = x.double()
    return {"mu": x.mean(0), "sigma": torch.cov(x.T)}


def reference_statistics(reference: Reference, extractor: str, inception_weights: str | None = None,
                         device: str = "cpu", cache_dir: str | os.PathLike | None = None) -> Statistics:
    """Mean and covariance of the reference's features, computed once and cached."""
    path = cache_path(reference, extractor, inception_weights, "stats", cache_dir)
    return Statistics(**_cached(path, lambda: moments(
        real_features(reference, extractor, inception_weights, device, cache_dir).pool)))


def class_statistics(reference: Reference, extractor: str, inception_weights: str | None = None,
                     device: str = "cpu", cache_dir: str | os.PathLike | None = None) -> list[Statistics]:
    """Per class: mean and covariance of that class's reference features, computed once and cached."""
    path = cache_path(reference, extractor, inception_weights, "class-stats", cache_dir)

    def compute() -> dict:
        f = real_features(reference, extractor, inception_weights, device, cache_dir)
        per_class = [moments(f.of_class(c)) for c in range(NUM_CLASSES)]
        return {k: torch.stack([m[k] for m in per_class]) for k in per_class[0]}

    blob = _cached(path, compute)
    return [Statistics(**{k: v[c] for k, v in blob.items()}) for c in range(NUM_CLASSES)]


@dataclass(frozen=True)
class Probe:
    """A linear classifier of real images' features: does a generated image look like its class?"""

    weight: torch.Tensor  # (classes, d), on standardised features
    bias: torch.Tensor  # (classes,)
    mean: torch.Tensor  # (d,) standardisation
    scale: torch.Tensor  # (d,)
    accuracy_real: float  # on real held-out images: the ceiling a perfect generator reaches

    def predict(self, pool: torch.Tensor) -> torch.Tensor:
        z = (pool.double() - self.mean) / self.scale
        return (z @ self.weight.T + self.bias).argmax(1)


def probe_references(reference: Reference) -> tuple[Reference, Reference]:
    """The class probe's training images (the train split, as many as the reference) and held-out ones."""
    return Reference(reference.data, "train", reference.n), Reference(reference.data, "test", reference.n)


def probe(reference: Reference, extractor: str, inception_weights: str | None = None, device: str = "cpu",
          cache_dir: str | os.PathLike | None = None) -> Probe:
    """A multinomial logistic regression (scikit-learn) on the features of the train split's
    images (the reference's subset size), scored on as many test images; fitted once, cached."""
    fit_on, held_out = probe_references(reference)
    path = cache_path(fit_on, extractor, inception_weights, "probe", cache_dir)

    def compute() -> dict:
        from sklearn.linear_model import LogisticRegression

        train = real_features(fit_on, extractor, inception_weights, device, cache_dir)
        test = real_features(held_out, extractor, inception_weights, device, cache_dir)
        missing = sorted(set(range(NUM_CLASSES)) - set(train.labels.tolist()))
        if missing:
            raise ValueError(f"the class probe needs training images of every class; {fit_on.label} has none of "
                             f"classes {missing}: use a larger reference n")
        x = train.pool.double()
        mean, scale = x.mean(0), x.std(0).clamp_min(1e-8)
        model = LogisticRegression(max_iter=PROBE_MAX_ITER).fit(((x - mean) / scale).numpy(), train.labels.numpy())
        fitted = {"weight": torch.from_numpy(model.coef_), "bias": torch.from_numpy(model.intercept_),
                  "mean": mean, "scale": scale}
        accuracy = (Probe(**fitted, accuracy_real=0.0).predict(test.pool) == test.labels).double().mean()
        return {**fitted, "accuracy_real": float(accuracy)}

    return Probe(**_cached(path, compute))

