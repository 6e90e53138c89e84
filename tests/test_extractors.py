import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from results.extractors import TinyRandom, has_logits, register_extractors
from results.names import NVIDIA_OFFLINE, TINY


def test_the_tiny_extractor_is_registered_with_pool_features_and_logits():
    register_extractors()
    assert FEATURE_EXTRACTORS_REGISTRY[TINY] is TinyRandom and has_logits(TINY) and not has_logits(NVIDIA_OFFLINE)
    pool, logits = TinyRandom(TINY, ["pool", "logits"])(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert pool.shape == (2, 64) and logits.shape == (2, 10)
