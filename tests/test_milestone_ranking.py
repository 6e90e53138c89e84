"""bench/milestone_ranking.py: how well a milestone ranks configurations, on hand-made scores whose answer is known."""

from __future__ import annotations

import sys

import pytest
from cli import ROOT

sys.path.insert(0, str(ROOT / "bench"))
from milestone_ranking import MIN_BEST, rank_agreement  # noqa: E402


def test_a_milestone_that_reverses_the_best_configurations_shows_it_though_it_ranks_all_well():
    """The slow starters that end best score worst early among the best, yet early scores still sort
    the bad configurations from the good: the best share's correlation is -1, all of them's high."""
    best = [{5: 50.0 - i, 100: 10.0 + i} for i in range(MIN_BEST)]  # the better at the end, the worse at epoch 5
    rest = [{5: 100.0 + i, 100: 40.0 + i} for i in range(90)]
    agreement = rank_agreement(best + rest, final=100)
    assert list(agreement) == [5]
    among_best, among_all = agreement[5]
    assert among_best == pytest.approx(-1.0) and among_all > 0.8


def test_a_milestone_that_ranks_as_the_end_does_scores_one_both_ways():
    scores = [{5: 3.0 * i, 15: 2.0 * i + 1, 52: float(i)} for i in range(40)]
    assert rank_agreement(scores, final=52) == {5: pytest.approx((1.0, 1.0)), 15: pytest.approx((1.0, 1.0))}
