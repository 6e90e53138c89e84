"""cVAE models, data loading and training for cvae-search.

Names are imported on first use, so that code needing only the configuration (a CLI checking
its input, the space file's validation) does not pay for importing torch.
"""

import importlib

_HOMES = {
    "ConfigError": "config", "ConvLayer": "config", "ModelConfig": "config", "PATIENCE": "config",
    "REPORT": "config", "Recipe": "config", "TrialConfig": "config",
    "CNNCVAE": "models", "CVAE": "models", "MLPCVAE": "models", "ResNetCVAE": "models", "build_model": "models",
    "count_params": "models",
    "PRESETS": "presets", "preset": "presets", "preset_config": "presets",
}

__all__ = sorted(_HOMES)


def __getattr__(name: str):
    if name in _HOMES:
        return getattr(importlib.import_module(f".{_HOMES[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
