"""What a search ranks its trials by.

With `search.objective.metric: fid | kid` a trial scores samples from the weights it keeps (its
best so far by validation loss) at every ASHA milestone and at its last epoch; each result then
carries the latest `score`, so ASHA, the searcher and the final stage's top-k compare sample quality.
With `val_loss` the score is the best validation loss of every epoch. With a list of objectives,
e.g. [fid, params], the first is the score and the search trades them off (searched_keys).
"""

from __future__ import annotations

import functools
from typing import Any

import torch

from cvae_core.config import ModelConfig
from cvae_core.grids import grid_labels
from cvae_core.models import build_model
from results.features import MetricOptions
from results.metrics import search_score
from results.reference import Reference
from results.samplers import generate

from .settings import RESULT_KEYS

METRIC, MODE = "score", "min"  # what Tune's scheduler and searcher see, for every objective
SAMPLE_SEED = 0  # the same latents at every score: scores differ by the weights alone


def searched_keys(metrics: tuple[str, ...]) -> list[str]:
    """The result keys the searcher minimises, one per objective: the score first (the first
    objective's value), then the others'."""
    return [METRIC, *(RESULT_KEYS[m] for m in metrics[1:])]


@functools.cache  # an ASHAScheduler built per search, not per caller
def milestones(grace_period: int, reduction_factor: int, max_t: int) -> frozenset[int]:
    """The epochs at which ASHA compares trials (grace_period * reduction_factor^k <= max_t), as
    Ray's ASHA computes them: its floating-point logarithm leaves max_t out when max_t / grace_period
    is a power of reduction_factor above a few (1, 3, 243: up to 81), and ASHA decides on its own."""
    from ray.tune.schedulers import ASHAScheduler

    from .private_api import asha_rungs

    asha = ASHAScheduler(time_attr="epoch", metric=METRIC, mode=MODE, max_t=max_t, grace_period=grace_period,
                         reduction_factor=reduction_factor)
    return frozenset(int(milestone) for milestone, _ in asha_rungs(asha)[0])


class TrialScorer:
    """Scores a trial's kept weights: FID and KID of `samples_per_class` prior samples per class."""

    def __init__(self, cfg: ModelConfig, metric: str, samples_per_class: int, reference: Reference,
                 opts: MetricOptions):
        self.cfg, self.metric, self.samples_per_class = cfg, metric, samples_per_class
        self.reference, self.opts = reference, opts

    def __call__(self, best_state: dict[str, torch.Tensor], epoch: int) -> dict[str, Any]:
        model = build_model(self.cfg).to(self.opts.device)
        model.load_state_dict(best_state)
        images = generate(model, "prior", self.samples_per_class, seed=SAMPLE_SEED)
        s = search_score(images, grid_labels(self.samples_per_class, self.cfg.num_classes), self.reference, self.opts)
        return {METRIC: s.fid if self.metric == "fid" else s.kid, "fid": s.fid, "kid": s.kid,
                "score_epoch": epoch, "score_seconds": s.seconds}
