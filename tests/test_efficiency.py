"""bench/efficiency.py: the benchmark's measures on hand-made searches whose figures are known."""

from __future__ import annotations

import math
import sys

import pytest
from cli import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from efficiency import Ended, best_within, cost_to_reach, measure, median_ratios, spent  # noqa: E402


def one_at_a_time(*trials: tuple) -> list[Ended]:
    """A search that ran its trials one after the other, each (value, epochs, full[, seconds])."""
    out, spent, spent_s = [], 0, 0.0
    for value, epochs, whole, *seconds in trials:
        spent, spent_s = spent + epochs, spent_s + (seconds[0] if seconds else 0.0)
        out.append(Ended(value, whole, spent, spent_s if seconds else None))
    return out


def full(value, epochs=10, *seconds):
    return (value, epochs, True, *seconds)


def cut(value, epochs=2, *seconds):
    return (value, epochs, False, *seconds)


def test_a_cut_trial_never_reaches_the_target_however_low_its_score():
    search = one_at_a_time(cut(1.0), full(50.0), full(30.0))
    assert cost_to_reach(search, 40.0) == 2 + 10 + 10
    assert cost_to_reach(search, 10.0) == math.inf
    assert best_within(search, 12) == 50.0  # the third trial ends past 12 trial-epochs


def test_failed_trials_count_their_epochs():
    assert cost_to_reach(one_at_a_time((None, 3, False), full(5.0)), 5.0) == 13


def test_the_epochs_of_trials_still_running_count_too():
    # two at once: the first ends at 40 after 10 epochs, while the second had trained 10 of its own
    # epochs too; the second ends at 30 after 30 epochs
    search = [Ended(40.0, True, 20, None), Ended(30.0, True, 40, None)]
    assert cost_to_reach(search, 40.0) == 20 and cost_to_reach(search, 35.0) == 40
    assert best_within(search, 30) == 40.0 and spent(search) == 40


def test_ratios_against_random_searchs_budget_and_best():
    # random: 20 trial-epochs and best 40 on both seeds; T = 40, B = 20
    random = [one_at_a_time(cut(90.0), cut(80.0), full(40.0, 16))] * 2
    # fast reaches 40 after 10 trial-epochs on one seed, never on the other
    fast = [one_at_a_time(full(40.0)), one_at_a_time(full(60.0))]
    # slow reaches 30 after 30 trial-epochs on both
    slow = [one_at_a_time(full(70.0, 20), full(30.0))] * 2
    figures = measure({"random": random, "fast": fast, "slow": slow})
    assert figures["random"]["ratio"] == 1.0
    assert figures["fast"]["ratio"] is None  # median of 0.5 and infinity
    assert figures["slow"]["ratio"] == 1.5
    assert figures["slow"]["median_best"] == 70.0  # within B = 20 trial-epochs only the first ended
    assert figures["fast"]["interval"] == [0.5, None]
    assert figures["slow"]["ratio_time"] is None  # no seconds in these searches
    assert median_ratios({"a": figures, "b": figures}) == {"random": 1.0, "fast": None, "slow": 1.5}


def test_time_ratio_counts_the_benchmarks_seconds():
    random = [one_at_a_time(cut(90.0, 2, 10.0), full(40.0, 8, 90.0))]
    wide = [one_at_a_time(full(35.0, 10, 25.0))]  # ten cheap epochs
    figures = measure({"random": random, "wide": wide})
    assert figures["wide"]["ratio"] == 1.0 and figures["wide"]["ratio_time"] == pytest.approx(0.25)


def test_the_interval_holds_the_uncertainty_of_random_searchs_best_too():
    # random's best is 40 on one seed and 60 on the other (T = 50); the method ends at 45 on both,
    # which a draw of random's better seed twice (T = 40) never sees it reach
    random = [one_at_a_time(full(40.0, 20)), one_at_a_time(full(60.0, 20))]
    steady = [one_at_a_time(full(45.0)), one_at_a_time(full(45.0))]
    figures = measure({"random": random, "steady": steady})
    assert figures["steady"]["ratio"] == 0.5 and figures["steady"]["interval"] == [0.5, None]
