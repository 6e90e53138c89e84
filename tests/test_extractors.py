import torch
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

import results.extractors
from results.extractors import TinyRandom, has_logits, register_extractors, resolve_extractor
from results.names import COMPAT, NVIDIA_OFFLINE, TINY


def test_auto_prefers_torch_fidelitys_inception_when_its_weights_are_at_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing downloaded
    monkeypatch.setattr(results.extractors, "nvidia_torchscript_path", lambda: tmp_path / "default_1.pt")
    assert resolve_extractor("auto", None) == NVIDIA_OFFLINE
    assert resolve_extractor("auto", "/w/pt_inception.pth") == COMPAT  # weights given: FID and IS
    monkeypatch.setattr(results.extractors, "nvidia_torchscript_path", lambda: None)
    assert resolve_extractor("auto", None) == COMPAT  # neither: torch-fidelity downloads its own
    assert resolve_extractor(TINY, None) == TINY  # a name is taken as given


def test_the_tiny_extractor_is_registered_with_pool_features_and_logits():
    register_extractors()
    assert FEATURE_EXTRACTORS_REGISTRY[TINY] is TinyRandom and has_logits(TINY) and not has_logits(NVIDIA_OFFLINE)
    pool, logits = TinyRandom(TINY, ["pool", "logits"])(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert pool.shape == (2, 64) and logits.shape == (2, 10)
