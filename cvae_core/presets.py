"""The report's 16 models, as pinned down by their parameter counts (shared/seed/architectures.md)."""

from __future__ import annotations

from .config import ConvLayer, ModelConfig

_LATENTS = {"M1": 64, "M2": 128, "M3": 196, "M4": 256}

_CNN_ARCHS = {
    # 32 -> 14 -> 5; decoder 5 -> 13 -> 29, final ConvT(3, 3, 4) -> 32.
    "arch1": dict(conv=(ConvLayer(16, 5, 2, 0), ConvLayer(32, 5, 2, 0)), h=256),
    # 32 -> 17 -> 10 -> 6; decoder 6 -> 9 -> 15 -> 27, final ConvT(3, 3, 6) -> 32.
    "arch2": dict(conv=(ConvLayer(32, 3, 2, 2), ConvLayer(64, 3, 2, 2), ConvLayer(128, 3, 2, 2)), h=512),
    "arch3": dict(conv=(ConvLayer(64, 3, 2, 2), ConvLayer(128, 3, 2, 2), ConvLayer(256, 3, 2, 2)), h=512),
}


def _build_presets() -> dict[str, ModelConfig]:
    presets = {}
    for m, latent in _LATENTS.items():
        hidden = (512, 256) if m == "M1" else (1024, 512, 256)
        presets[f"mlp-{m}"] = ModelConfig(family="mlp", hidden=hidden, latent=latent)
    for arch, spec in _CNN_ARCHS.items():
        for m, latent in _LATENTS.items():
            presets[f"cnn-{arch}-{m}"] = ModelConfig(family="cnn", latent=latent, **spec)
    return presets


PRESETS: dict[str, ModelConfig] = _build_presets()


def preset_config(name: str) -> ModelConfig:
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; known: {sorted(PRESETS)}")
    return PRESETS[name]


def preset(name: str):
    """The report's model `name` (e.g. "cnn-arch3-M3"), freshly initialised."""
    from .models import build_model

    return build_model(preset_config(name))
