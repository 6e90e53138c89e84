import itertools

import numpy as np
import pandas as pd

from results.pareto import on_front


def brute_force(points: list[tuple]) -> list[bool]:
    def beats(a, b):
        return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))
    return [not any(beats(q, p) for q in points if q is not p) for p in points]


def test_the_front_is_what_no_row_beats_in_every_objective():
    rng = np.random.default_rng(0)
    for n, d in itertools.product((1, 2, 7, 30), (1, 2, 3)):
        values = rng.integers(0, 5, size=(n, d)).astype(float)  # ties included
        df = pd.DataFrame(values, columns=[f"m{i}" for i in range(d)])
        assert on_front(df, list(df.columns)).tolist() == brute_force([tuple(r) for r in values])


def test_a_row_with_a_missing_value_is_off_the_front_and_beats_no_one():
    df = pd.DataFrame({"fid": [50.0, np.nan, 60.0], "params": [10.0, 1.0, 5.0]})
    assert on_front(df, ["fid", "params"]).tolist() == [True, False, True]
