"""Features of images under a torch-fidelity feature extractor, and the cached features of real images.

Every measure of a set of generated images comes from one pass of the extractor over them
(`extract`). The features of real images, and their statistics, are computed once and cached
under $CVAE_CACHE/fidelity/ in files named by a hash of everything their value depends on (dataset
version, split, subset, extractor and its weights: `cache_path`), written atomically so that
concurrent readers (trials, finalists) see a whole file or none. Each process builds an extractor
once and keeps what it read from the cache. `MetricOptions` carries what every step shares.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

from cvae_core.atomic import atomic_torch_save
from cvae_core.cli import first_line
from cvae_core.data import ImageData
from cvae_core.sources import default_cache_dir

from .names import COMPAT
from .reference import SUBSET_SEED, Reference

log = logging.getLogger("results")

EXTRACT_BATCH = 200  # images per extractor call
PROBE_MAX_ITER = 1000  # L-BFGS iterations of the class probe
PROBE_FORMAT = 2  # bump when a cached probe's values change; 2: two-class probes' accuracy scored right


@dataclass(frozen=True)
class Features:
    """One extractor pass over a set of images."""

    pool: torch.Tensor  # (N, d) float32 on the CPU: what FID, KID and precision/recall use
    logits: torch.Tensor | None  # (N, classes) when the extractor has a classifier (IS), else None
    labels: torch.Tensor  # (N,) int64: each image's class (real) or the class it was asked for (generated)

    def of_class(self, c: int) -> torch.Tensor:
        return self.pool[self.labels == c]


@dataclass(frozen=True, eq=False)
class MetricOptions:
    """What every measure of a set of images shares besides the images and the reference (as
    stylegan2-ada's MetricOptions): the dataset the reference's images come from, the feature
    extractor and its weights file, the device, the cache folder, and whether to print progress.
    On its way to a Ray task `data` is None: the task is handed the object store's copy beside it."""

    data: ImageData | None
    extractor: str
    inception_weights: str | None = None
    device: str = "cpu"
    cache_dir: str | os.PathLike | None = None  # None: $CVAE_CACHE/fidelity
    progress: bool = False  # print a line per tenth of a long extraction (priming a reference)

    def detector(self):
        return load_extractor(self.extractor, self.inception_weights, self.device)


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
    try:
        extractor = create_feature_extractor(name, layers, cuda=False, verbose=False, **kwargs)
    except Exception as e:  # a damaged weights file, a download without a network
        source = f" from {kwargs['feature_extractor_weights_path']}" if kwargs else ""
        raise ValueError(f"{name}{source} cannot be loaded ({type(e).__name__}: {first_line(e)})") from e
    return extractor.to(device)


@torch.no_grad()
def extract(images_u8: torch.Tensor, labels: torch.Tensor, extractor, device: str | torch.device = "cpu",
            progress: str | None = None) -> Features:
    """Features of uint8 (N, C, H, W) images: one pass, in batches of EXTRACT_BATCH (a part of the
    reference caches' key), on `device`; with `progress` (what is extracted), a line at every tenth
    of the images. Grayscale images (C = 1) enter the extractor as three equal channels, as
    Inception takes them."""
    if images_u8.dtype != torch.uint8 or images_u8.ndim != 4 or images_u8.shape[1] not in (1, 3):
        raise ValueError(f"images must be uint8 (N, 1 or 3, H, W), got {images_u8.dtype} {tuple(images_u8.shape)}")
    pools, logits, t0, shown = [], [], time.perf_counter(), 0
    for i in range(0, len(images_u8), EXTRACT_BATCH):
        out = extractor(images_u8[i : i + EXTRACT_BATCH].to(device).expand(-1, 3, -1, -1))
        pools.append(out[0].float().cpu())
        if len(out) > 1:
            logits.append(out[1].float().cpu())
        done = min(i + EXTRACT_BATCH, len(images_u8))
        if progress and (done - shown >= len(images_u8) / 10 or done == len(images_u8)):
            shown = done
            log.info(f"{progress}: {done}/{len(images_u8)} images ({time.perf_counter() - t0:.0f} s)")
    pool = torch.cat(pools)
    if not torch.isfinite(pool).all():
        raise ValueError("the feature extractor gave non-finite features")
    return Features(pool=pool, logits=torch.cat(logits) if logits else None, labels=labels.cpu())


# ---------------------------------------------------------------------------- the cache

CACHE_FORMAT = 2  # bump when what a cache file holds changes


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


def cache_path(reference: Reference, opts: MetricOptions, what: str, **more) -> Path:
    """The file caching `what` (features, stats, class-stats, probe) of the reference's images:
    named by a hash of everything its value depends on (`more`: what else a kind depends on), so
    that a changed option never reads a stale file. The device is left out: features computed on
    a GPU and on a CPU agree to float tolerance, and a cluster's nodes share one cache."""
    key = {"format": CACHE_FORMAT, "data": opts.data.key, "split": reference.split, "n": reference.size(opts.data),
           "subset_seed": SUBSET_SEED, "extractor": extractor_tag(opts.extractor, opts.inception_weights),
           "batch": EXTRACT_BATCH, "what": what, **more}
    digest = hashlib.sha1(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    return cache_root(opts.cache_dir) / f"cvae-ref-{what}-{digest}.pt"


def _cached(path: Path, compute: Callable[[], dict]) -> dict:
    """The dict in `path`, computed and written atomically on a miss; read once per process."""
    if not path.exists():
        atomic_torch_save(compute(), path)
    return _load(str(path))


def real_features(reference: Reference, opts: MetricOptions) -> Features:
    """Features of the reference's images, computed once and cached."""

    def compute() -> dict:
        x, y = reference.images(opts.data)
        what = f"reference {reference.label(opts.data)}: {opts.extractor} features" if opts.progress else None
        f = extract(x, y, opts.detector(), opts.device, progress=what)
        return {"pool": f.pool, "logits": f.logits, "labels": f.labels}

    return Features(**_cached(cache_path(reference, opts, "features"), compute))


@dataclass(frozen=True, eq=False)
class Statistics:
    """Mean and covariance (float64) of a reference's pool features: FID's reference side."""

    mu: torch.Tensor
    sigma: torch.Tensor
    _roots: dict[str, torch.Tensor] = field(default_factory=dict, repr=False)  # device -> sigma^1/2

    def sqrt_sigma(self, device: torch.device) -> torch.Tensor:
        """The symmetric square root of sigma, once per device (FID with more samples than dimensions)."""
        if str(device) not in self._roots:
            w, v = torch.linalg.eigh(self.sigma.to(device, torch.float64))
            self._roots[str(device)] = (v * w.clamp_min(0).sqrt()) @ v.T
        return self._roots[str(device)]


def moments(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Statistics' fields of features (n, d), in float64."""
    x = x.double()
    return {"mu": x.mean(0), "sigma": torch.cov(x.T)}


@functools.lru_cache(maxsize=16)
def _statistics(path: str) -> tuple[Statistics, ...]:
    """The statistics a cache file holds (one, or one per class), built once per process so that
    each keeps its square roots: a cache keyed by the file, which bounds it."""
    blob = _load(path)
    if blob["mu"].ndim == 1:
        return (Statistics(blob["mu"], blob["sigma"]),)
    return tuple(Statistics(mu, sigma) for mu, sigma in zip(blob["mu"], blob["sigma"]))


def reference_statistics(reference: Reference, opts: MetricOptions) -> Statistics:
    """Mean and covariance of the reference's features, computed once and cached."""
    path = cache_path(reference, opts, "stats")
    _cached(path, lambda: moments(real_features(reference, opts).pool))
    return _statistics(str(path))[0]


def class_statistics(reference: Reference, opts: MetricOptions) -> tuple[Statistics, ...]:
    """Per class: mean and covariance of that class's reference features, computed once and cached."""
    path = cache_path(reference, opts, "class-stats")

    def compute() -> dict:
        f = real_features(reference, opts)
        counts = {name: len(f.of_class(c)) for c, name in enumerate(opts.data.classes)}
        if few := {name: n for name, n in counts.items() if n < 2}:
            raise ValueError(f"per-class FID needs at least 2 real images of each class; "
                             f"{reference.label(opts.data)} has {few}: use a larger reference n or another split")
        each = [moments(f.of_class(c)) for c in range(len(opts.data.classes))]
        return {k: torch.stack([m[k] for m in each]) for k in each[0]}

    _cached(path, compute)
    return _statistics(str(path))


@dataclass(frozen=True)
class Probe:
    """A linear classifier of real images' features: does a generated image look like its class?"""

    weight: torch.Tensor  # (classes, d), on standardised features; (1, d) for two classes, as scikit-learn fits them
    bias: torch.Tensor  # (classes,), or (1,)
    mean: torch.Tensor  # (d,) standardisation
    scale: torch.Tensor  # (d,)
    accuracy_real: float  # on real held-out images: the ceiling a perfect generator reaches

    def predict(self, pool: torch.Tensor) -> torch.Tensor:
        z = (pool.double() - self.mean) / self.scale
        logits = z @ self.weight.T + self.bias
        if logits.shape[1] == 1:  # two classes: one decision function, positive for the second
            return (logits[:, 0] > 0).long()
        return logits.argmax(1)


def probe_references(reference: Reference) -> tuple[Reference, Reference]:
    """The class probe's training images (the train split, as many as the reference) and held-out ones."""
    return Reference(split="train", n=reference.n), Reference(split="test", n=reference.n)


def probe_path(reference: Reference, opts: MetricOptions) -> Path:
    fit_on, held_out = probe_references(reference)
    return cache_path(fit_on, opts, "probe", held_out=held_out.size(opts.data), max_iter=PROBE_MAX_ITER,
                      probe_format=PROBE_FORMAT)


def probe(reference: Reference, opts: MetricOptions) -> Probe:
    """A logistic regression (scikit-learn; multinomial for more than two classes) on the features
    of the train split's images (the reference's subset size), scored on as many test images;
    fitted once, cached."""
    fit_on, held_out = probe_references(reference)

    def compute() -> dict:
        from sklearn.linear_model import LogisticRegression

        train, test = real_features(fit_on, opts), real_features(held_out, opts)
        missing = sorted(set(range(len(opts.data.classes))) - set(train.labels.tolist()))
        if missing:
            raise ValueError(f"the class probe needs training images of every class; {fit_on.label(opts.data)} has "
                             f"none of classes {missing}: use a larger reference n")
        x = train.pool.double()
        mean, scale = x.mean(0), x.std(0).clamp_min(1e-8)
        model = LogisticRegression(max_iter=PROBE_MAX_ITER).fit(((x - mean) / scale).numpy(), train.labels.numpy())
        fitted = {"weight": torch.from_numpy(model.coef_), "bias": torch.from_numpy(model.intercept_),
                  "mean": mean, "scale": scale}
        accuracy = (Probe(**fitted, accuracy_real=0.0).predict(test.pool) == test.labels).double().mean()
        return {**fitted, "accuracy_real": float(accuracy)}

    return Probe(**_cached(probe_path(reference, opts), compute))
