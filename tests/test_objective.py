import pytest
import torch

from cvae_core import ModelConfig
from cvae_core.data import load_data
from cvae_core.models import build_model
from results.extractors import TINY
from results.features import MetricOptions, load_extractor
from results.reference import Reference
from search.objective import TrialScorer, milestones


def test_milestones_are_ashas_rungs():
    assert milestones(15, 3, 300) == {15, 45, 135}
    assert milestones(2, 2, 16) == {2, 4, 8, 16}
    assert milestones(5, 3, 100) == {5, 15, 45}  # spaces/cnn.yaml's
    # 243 / 1 = 3^5, but Ray's float logarithm makes 4 rungs: ASHA decides nothing at 243
    assert milestones(1, 3, 243) == {1, 3, 9, 27, 81}


def test_a_trial_scores_the_weights_it_is_given_and_builds_the_extractor_once(tree, monkeypatch):
    import torch_fidelity.utils

    built = []
    original = torch_fidelity.utils.create_feature_extractor
    monkeypatch.setattr(torch_fidelity.utils, "create_feature_extractor",
                        lambda *a, **k: built.append(a[0]) or original(*a, **k))
    load_extractor.cache_clear()
    cfg = ModelConfig(family="mlp", latent=4, hidden=(32,))
    reference, opts = Reference(), MetricOptions(load_data(tree), TINY)
    scorer = TrialScorer(cfg, "kid", 3, reference, opts)
    torch.manual_seed(0)
    a, b = build_model(cfg).state_dict(), build_model(cfg).state_dict()
    first, again, other = scorer(a, 2), scorer(a, 4), scorer(b, 8)
    assert built == [TINY]  # once, however often the trial scores
    assert first["score"] == first["kid"] and first["score_epoch"] == 2 and first["fid"] > 0
    assert (again["fid"], again["kid"]) == (first["fid"], first["kid"])  # same weights, same samples
    assert other["fid"] != first["fid"]
    assert TrialScorer(cfg, "fid", 3, reference, opts)(a, 2)["score"] == first["fid"]


def test_non_finite_samples_fail_the_score(tree):
    cfg = ModelConfig(family="mlp", latent=4, hidden=(32,))
    state = {k: torch.full_like(v, float("nan")) for k, v in build_model(cfg).state_dict().items()}
    scorer = TrialScorer(cfg, "fid", 3, Reference(), MetricOptions(load_data(tree), TINY))
    with pytest.raises(ValueError, match="non-finite pixels"):
        scorer(state, 2)
