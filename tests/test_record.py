import json

import pytest

import results.extractors
from search.record import EXTRACTOR_FILE, recorded_extractor


def test_auto_is_resolved_once_and_the_run_keeps_that_extractor(tmp_path, monkeypatch):
    def resolving_auto_to(network):
        return lambda name, weights: network if name == "auto" else name

    monkeypatch.setattr(results.extractors, "resolve_extractor", resolving_auto_to("inception-v3-nvidia-offline"))
    assert recorded_extractor(tmp_path, "final", "auto", None) == "inception-v3-nvidia-offline"
    assert json.loads((tmp_path / EXTRACTOR_FILE).read_text()) == {"final": "inception-v3-nvidia-offline"}

    # Later, on a node where auto would pick another network, the run still scores with the first.
    monkeypatch.setattr(results.extractors, "resolve_extractor", resolving_auto_to("inception-v3-compat"))
    assert recorded_extractor(tmp_path, "final", "auto", "/w.pth") == "inception-v3-nvidia-offline"
    # An explicitly different one is refused, naming both.
    with pytest.raises(ValueError, match="final.feature_extractor: tiny-random differs from inception-v3-nvidia-off"):
        recorded_extractor(tmp_path, "final", "tiny-random", None)
    # Each stage keeps its own.
    assert recorded_extractor(tmp_path, "search", "tiny-random", None) == "tiny-random"
    assert json.loads((tmp_path / EXTRACTOR_FILE).read_text()) == {
        "final": "inception-v3-nvidia-offline", "search": "tiny-random"}
