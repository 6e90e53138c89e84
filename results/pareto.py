"""Pareto fronts: the rows no other row beats in every objective (all minimised)."""

from __future__ import annotations

import numpy as np
import pandas as pd


def on_front(df: pd.DataFrame, columns: list[str]) -> pd.Series:
    """Whether each row is on the front of `columns`: no other row is as good in every column and
    better in one. A row with a missing value is not on it (and beats no one)."""
    values = df[columns].to_numpy(dtype=float)
    known = ~np.isnan(values).any(axis=1)
    front = known.copy()
    for i in np.flatnonzero(known):
        others = values[known]
        dominated = (others <= values[i]).all(axis=1) & (others < values[i]).any(axis=1)
        front[i] = not dominated.any()
    return pd.Series(front, index=df.index)
