import torch

import results.names
from results.names import COMPAT, NVIDIA_OFFLINE, TINY, resolve_extractor


def test_auto_prefers_torch_fidelitys_inception_when_its_weights_are_at_hand(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))  # nothing downloaded
    monkeypatch.setattr(results.names, "nvidia_torchscript_path", lambda: tmp_path / "default_1.pt")
    assert resolve_extractor("auto", None) == NVIDIA_OFFLINE
    assert resolve_extractor("auto", "/w/pt_inception.pth") == COMPAT  # weights given: FID and IS
    monkeypatch.setattr(results.names, "nvidia_torchscript_path", lambda: None)
    assert resolve_extractor("auto", None) == COMPAT  # neither: torch-fidelity downloads its own
    assert resolve_extractor(TINY, None) == TINY  # a name is taken as given
