"""bench/search_efficiency.py's measures: how much of random search + ASHA's compute another
search needs to reach random search's final best, from the trials each seed's search ended.

A search is its trials in the order they ended, each `Ended(value, full, spent, spent_s)`: its
last score (None when it failed), whether it ran to max_t, and what the whole search had trained
when it ended, in trial-epochs and in the benchmark's seconds (None where the benchmark has no
time) - the epochs of the trials still running then included, since they were spent before that
moment just as much. A search's best is the lowest last score among its trials that ran to max_t.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import NamedTuple

BOOTSTRAP = 2000  # resamples of the seeds for each interval
INTERVAL = (0.05, 0.95)  # a 90% interval


class Ended(NamedTuple):
    value: float | None
    full: bool
    spent: float
    spent_s: float | None


def _clock(trial: Ended, unit: str) -> float:
    return trial.spent if unit == "epochs" else (trial.spent_s or 0.0)


def spent(search: list[Ended], unit: str = "epochs") -> float:
    """Everything the search trained, in trial-epochs or seconds."""
    return max((_clock(t, unit) for t in search), default=0.0)


def final_best(search: list[Ended]) -> float:
    return min((t.value for t in search if t.full and t.value is not None), default=math.inf)


def cost_to_reach(search: list[Ended], target: float, unit: str = "epochs") -> float:
    """What the search had spent when a trial that ran to max_t first ended at or below `target`
    (inf: never)."""
    return next((_clock(t, unit) for t in search if t.full and t.value is not None and t.value <= target), math.inf)


def best_within(search: list[Ended], budget: float) -> float:
    """The best among the trials that ran to max_t and ended within `budget` trial-epochs (equal compute)."""
    return min((t.value for t in search if t.full and t.value is not None and t.spent <= budget), default=math.inf)


def _quantile(values: list[float], q: float) -> float:
    """The nearest-rank quantile (infinities allowed, where interpolation would give nan)."""
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def bootstrap_interval(ref: list[list[Ended]], seeds: list[list[Ended]], rng: random.Random) -> tuple[float, float]:
    """A 90% percentile-bootstrap interval of the ratio: the seeds resampled with replacement, the
    same draw for the reference's searches and the method's, and B and T measured again on each
    draw, since they come from the same seeds and their uncertainty is the ratio's too."""
    spent_ref, best_ref = [spent(s) for s in ref], [final_best(s) for s in ref]
    ratios = []
    for _ in range(BOOTSTRAP):
        draw = rng.choices(range(len(seeds)), k=len(seeds))
        budget, target = (statistics.median(x[i] for i in draw) for x in (spent_ref, best_ref))
        ratios.append(statistics.median(cost_to_reach(seeds[i], target) / budget for i in draw))
    return _quantile(ratios, INTERVAL[0]), _quantile(ratios, INTERVAL[1])


def _finite_or_none(x: float) -> float | None:
    return x if math.isfinite(x) else None  # JSON has no infinity: null means never reached


def measure(searches: dict[str, list[list[Ended]]], reference: str = "random") -> dict[str, dict]:
    """Each method's figures on one task, from its searches (one per seed): B, the median over
    seeds of the reference's trial-epochs; T, the median of its final best; per method, the median
    best within B, the ratio (median over seeds of the trial-epochs to reach T, over B) with a 90%
    bootstrap interval, and the same ratio in the benchmark's seconds (None where it has none)."""
    ref = searches[reference]
    budget = statistics.median(spent(s) for s in ref)
    target = statistics.median(final_best(s) for s in ref)
    timed = all(t.spent_s is not None for s in ref for t in s)
    budget_s = statistics.median(spent(s, "seconds") for s in ref) if timed else None
    rng, out = random.Random(0), {}
    for method, seeds in searches.items():
        needed = [cost_to_reach(s, target) / budget for s in seeds]
        low, high = bootstrap_interval(ref, seeds, rng)
        ratio_time = statistics.median(cost_to_reach(s, target, "seconds") / budget_s for s in seeds) if timed else None
        out[method] = {
            "median_best": _finite_or_none(statistics.median(best_within(s, budget) for s in seeds)),
            "ratio": _finite_or_none(statistics.median(needed)),
            "interval": [_finite_or_none(low), _finite_or_none(high)],
            "ratio_time": None if ratio_time is None else _finite_or_none(ratio_time),
            "final_best": _finite_or_none(statistics.median(final_best(s) for s in seeds)),
            "trial_epochs": statistics.median(spent(s) for s in seeds),
        }
    return out


def median_ratios(tasks: dict[str, dict[str, dict]]) -> dict[str, float | None]:
    """Each method's median ratio over the tasks (a task where it never reached T counts as infinite)."""
    methods = next(iter(tasks.values())).keys()
    ratios = {m: [math.inf if t[m]["ratio"] is None else t[m]["ratio"] for t in tasks.values()] for m in methods}
    return {m: _finite_or_none(statistics.median(r)) for m, r in ratios.items()}
