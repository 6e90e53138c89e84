"""Every seed of a search comes from `search.seed` and a trial's place in the search, so the same
space file, seed and data give the same search (with one trial at a time: with several, the
order in which trials end changes what the searcher is told before it samples the next).

A trial's place is its study trial number (the order the searcher sampled it in), or its preset's name in
a presets grid. A retraining of the final stage takes its seed from its trial's and its index.
"""

from __future__ import annotations

import json
import math
import zlib

TRIAL_NUMBER = "trial_number"  # the study trial number, in the configuration the searcher suggests


def _derive(*parts: int | str) -> int:
    return zlib.crc32(json.dumps(parts).encode())


def trial_seed(search_seed: int, config: dict, trial_id: str) -> int:
    """The training seed of the trial with this configuration and Tune trial id."""
    if TRIAL_NUMBER in config:
        return _derive(search_seed, config[TRIAL_NUMBER])
    if "preset" in config:
        return _derive(search_seed, config["preset"])
    # Sampled by a version before seeds were derived, and resumed: the seed it started with.
    return zlib.crc32(trial_id.encode())


def retraining_seed(seed: int | float | None, retraining: int) -> int:
    """The final stage's seed for retraining `retraining` (0, 1, ...) of a trial trained with
    `seed`: another seed, so that the retraining measures the configuration, not the draw that
    ranked it first. A trial of a version that recorded no seed (None, or NaN as pandas reads a
    missing one) retrains with `retraining` itself, as that version did."""
    if seed is None or (isinstance(seed, float) and math.isnan(seed)):
        return int(retraining)
    return _derive(int(seed), "retraining", int(retraining))
