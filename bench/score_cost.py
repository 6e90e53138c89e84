"""Seconds to score one leaderboard row: FID alone vs every measure (per-class FID, class accuracy,
KID, precision/recall), in one run, on the same images and the same cached reference.

(a) baseline: one pass of the feature extractor over the images, then FID (and IS when the
    extractor has logits) -- what a row cost before the conditional measures;
(b) results.metrics.score: the same pass, then every measure the leaderboard holds.
The reference's features, statistics and class probe are computed first (once per dataset and
extractor, cached) and timed apart. The images are real test images with their labels: the
cost does not depend on what the pixels show. Target: (b) <= 1.15 x (a).

    python bench/score_cost.py --data ../shared/data/cifar10-jpeg.zip                       # GPU: 10k images
    python bench/score_cost.py --device cpu --n 500 --reference-n 1000 --data ../shared/data/cifar10-jpeg.zip
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cvae_core.sources import DataError  # noqa: E402
from results.names import resolve_extractor  # noqa: E402

if TYPE_CHECKING:  # the heavy modules (torch) are imported where they are used: --help and input errors skip them
    from results.features import MetricOptions
    from results.reference import Reference


def fid_alone(images, labels, reference: Reference, opts: MetricOptions) -> float:
    from results.features import extract, reference_statistics
    from results.metrics import fid, inception_score

    t0 = time.perf_counter()
    features = extract(images, labels, opts.detector(), opts.device)
    fid(features.pool, reference_statistics(reference, opts), opts.device)
    if features.logits is not None:
        inception_score(features.logits)
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--device", default=None, help="cpu to run without a GPU (default: cuda when present)")
    p.add_argument("--n", type=int, default=10000, help="images per row (the final stage's default: 10 x 1000)")
    p.add_argument("--reference-n", type=int, default=None, help="reference subset (default: the whole train split)")
    p.add_argument("--extractor", default="auto")
    p.add_argument("--repeats", type=int, default=2)
    args = p.parse_args()
    import torch

    from cvae_core.data import load_data
    from cvae_core.training import resolve_device
    from results.features import MetricOptions
    from results.metrics import prime_reference, score
    from results.reference import Reference

    dev = str(resolve_device(args.device))
    data = load_data(args.data)
    extractor = resolve_extractor(args.extractor, None)
    reference, opts = Reference(n=args.reference_n), MetricOptions(data, extractor, device=dev)
    images, labels = data.test_x[: args.n], data.test_y[: args.n]
    name = torch.cuda.get_device_name(dev) if dev.startswith("cuda") else "cpu"
    print(f"{len(images)} images per row, {extractor}, reference {reference.label(data)}, device {name}")

    t0 = time.perf_counter()
    opts.detector()
    prime_reference(reference, opts, conditional=True)
    print(f"  reference side (once per dataset and extractor, cached): {time.perf_counter() - t0:8.1f} s")

    base, full = [], []
    for _ in range(args.repeats):
        base.append(fid_alone(images, labels, reference, opts))
        full.append(score(images, labels, reference, opts).score_seconds)
    a, b = statistics.median(base), statistics.median(full)
    print(f"  (a) features + FID (+ IS with logits): {a:8.2f} s per row")
    print(f"  (b) features + every measure:         {b:8.2f} s per row   (+{100 * (b - a) / a:.1f}% over (a))")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: --data: {e}")
