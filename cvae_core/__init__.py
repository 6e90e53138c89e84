"""cVAE models, data loading and training for cvae-search."""

from .config import ConfigError, ConvLayer, ModelConfig
from .models import CNNCVAE, CVAE, MLPCVAE, build_model, count_params
from .presets import PRESETS, preset, preset_config

__all__ = [
    "CNNCVAE",
    "CVAE",
    "ConfigError",
    "ConvLayer",
    "MLPCVAE",
    "ModelConfig",
    "PRESETS",
    "build_model",
    "count_params",
    "preset",
    "preset_config",
]
