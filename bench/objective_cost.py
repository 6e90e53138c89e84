"""Scoring's share of a trial's time: the same trial with and without the search objective, in one run.

Both runs train the same model on the same data for --epochs epochs (training + validation, as a
trial does); the scored run also scores its kept weights at --score-at epochs with the search's
own scorer (search.objective.TrialScorer: prior samples, one pass of the feature extractor, FID
and KID against the cached reference). Printed: seconds per epoch, seconds per score, and the
share scoring takes of a trial under a space's schedule (default spaces/cnn.yaml: a score at
every ASHA milestone and at the last epoch), for trials that stop at each milestone or run to
max_t. GPU target: scoring <= 10% of trial time (an H100 extracts 10k Inception features in 13 s).

    python bench/objective_cost.py --data ../shared/data/cifar10-jpeg.zip                  # GPU
    python bench/objective_cost.py --device cpu --n-train 5000 --reference-n 1000 --data ../shared/data/cifar10-jpeg.zip
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from search_efficiency import SPACE_FILE  # noqa: E402  (bench/, beside this script)

from cvae_core import REPORT, Recipe, preset_config  # noqa: E402
from cvae_core.cli import number  # noqa: E402
from cvae_core.presets import PRESETS  # noqa: E402
from cvae_core.sources import DataError  # noqa: E402
from results.names import resolve_extractor  # noqa: E402
from search.settings import load_spec  # noqa: E402


def timed_trial(cfg, data, epochs: int, batch_size: int, device, scorer=None, score_at=()):
    """(seconds per epoch without scoring, [seconds per score], wall seconds)."""
    from cvae_core.training import train

    epoch_seconds, score_seconds = [], []

    def callback(metrics, make_checkpoint):
        epoch_seconds.append(metrics["epoch_seconds"])
        if scorer is not None and metrics["epoch"] in score_at:
            t0 = time.perf_counter()
            scorer(make_checkpoint()["best_state"], metrics["epoch"])
            score_seconds.append(time.perf_counter() - t0)

    t0 = time.perf_counter()
    train(cfg, data.train_x, data.train_y, data.test_x, data.test_y, epochs=epochs,
          recipe=Recipe(batch_size=batch_size), patience=epochs + 1, seed=0, device=device, callback=callback)
    return statistics.median(epoch_seconds[1:] or epoch_seconds), score_seconds, time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cnn-arch3-M3", choices=sorted(PRESETS), metavar="NAME")
    p.add_argument("--data", default=None)
    p.add_argument("--space", default=SPACE_FILE, help="whose objective settings and ASHA schedule to use")
    p.add_argument("--device", default=None, help="cpu to run without a GPU (default: cuda when present)")
    p.add_argument("--epochs", type=number(int, at_least=2), default=3, help="the first is warm-up")
    p.add_argument("--batch-size", type=int, default=REPORT.batch_size)
    p.add_argument("--score-at", type=int, nargs="+", default=[2, 3], help="epochs of the scored run that score")
    p.add_argument("--n-train", type=int, default=50000)
    p.add_argument("--n-val", type=int, default=10000)
    p.add_argument("--reference-n", type=int, default=None, help="default: the space's search.objective.reference.n")
    p.add_argument("--extractor", default=None, help="default: the space's, resolved as the search resolves it")
    args = p.parse_args()
    if not set(args.score_at) & set(range(2, args.epochs + 1)):
        p.error(f"--score-at: none of {args.score_at} is an epoch from 2 to --epochs {args.epochs}")
    import torch

    from cvae_core.data import load_data
    from cvae_core.training import resolve_device
    from results.features import MetricOptions
    from results.metrics import prime_reference
    from results.reference import Reference
    from search.objective import TrialScorer, milestones

    spec = load_spec(args.space)
    objective, s = spec.search.objective, spec.search.asha
    dev = resolve_device(args.device)
    data = load_data(args.data)
    data = replace(data, train_x=data.train_x[: args.n_train], train_y=data.train_y[: args.n_train],
                   test_x=data.test_x[: args.n_val], test_y=data.test_y[: args.n_val])
    extractor = resolve_extractor(args.extractor or objective.feature_extractor, None)
    reference = Reference(split=objective.reference.split, n=args.reference_n or objective.reference.n)
    opts = MetricOptions(load_data(args.data), extractor, device=str(dev))
    cfg, batch = preset_config(args.preset), args.batch_size
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"{args.preset}, {len(data.train_x)} training + {len(data.test_x)} validation images, batch {batch}, "
          f"device {name}; scores of {len(data.classes) * objective.samples_per_class} samples with {extractor} "
          f"against {reference.label(opts.data)}")

    t0 = time.perf_counter()
    prime_reference(reference, opts)
    print(f"  reference features + statistics (once per search, cached): {time.perf_counter() - t0:8.1f} s")

    base_epoch, _, base_wall = timed_trial(cfg, data, args.epochs, batch, dev)
    scorer = TrialScorer(cfg, objective.ranked_by, objective.samples_per_class, reference, opts)
    epoch, scores, wall = timed_trial(cfg, data, args.epochs, batch, dev, scorer, set(args.score_at))
    per_score = statistics.median(scores[1:] or scores)
    print(f"  baseline trial, no scoring:     {base_epoch:8.2f} s/epoch   {base_wall:8.1f} s for {args.epochs} epochs")
    print(f"  same trial, scored at {sorted(args.score_at)}: {epoch:8.2f} s/epoch   {wall:8.1f} s "
          f"(+{wall - base_wall:.1f} s)")
    print(f"  seconds per score: {per_score:.2f} (first, building the extractor: {scores[0]:.2f})")

    rungs = sorted(milestones(s.grace_period, s.reduction_factor, s.max_t))
    print(f"  share of trial time spent scoring under {args.space}'s schedule (milestones {rungs}, "
          f"max_t {s.max_t}), at the epoch time above:")
    for length in [*rungs, s.max_t] if s.max_t not in rungs else rungs:
        n_scores = sum(m <= length for m in rungs) + (length not in rungs)
        share = n_scores * per_score / (length * base_epoch + n_scores * per_score)
        print(f"    a trial of {length:4d} epochs, {n_scores} scores: {100 * share:5.1f}%")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: --data: {e}")
