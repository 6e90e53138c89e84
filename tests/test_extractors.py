import pytest
import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from results.extractors import TinyRandom, has_logits, register_extractors
from results.names import NVIDIA_OFFLINE, TINY


def test_the_tiny_extractor_is_registered_with_pool_features_and_logits():
    register_extractors()
    assert FEATURE_EXTRACTORS_REGISTRY[TINY] is TinyRandom and has_logits(TINY) and not has_logits(NVIDIA_OFFLINE)
    pool, logits = TinyRandom(TINY, ["pool", "logits"])(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert pool.shape == (2, 64) and logits.shape == (2, 10)


def test_an_extractor_that_cannot_load_is_one_line_naming_its_weights(tmp_path):
    from results.features import load_extractor

    weights = tmp_path / "pt_inception-2015-12-05.pth"
    weights.write_text("not a weights file")
    with pytest.raises(ValueError, match=rf"^inception-v3-compat from {weights} cannot be loaded \(UnpicklingError: "):
        load_extractor("inception-v3-compat", str(weights))
