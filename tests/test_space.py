"""The `space:` section's distribution language, its Optuna adapter and the trial -> model mapping.
(Errors in a whole space file, this section's included, are in test_settings.py.)"""

import optuna
import pytest
from conftest import MIXED_SPACE as SPACE

from cvae_core import REPORT, ModelConfig
from search.space import Choice, Fixed, IntRange, SpaceError, Uniform, model_config, parse_space_section


def test_distributions_are_parsed_and_what_is_left_out_is_the_reports():
    space = parse_space_section(SPACE)
    assert space.top["family"] == Choice(("mlp", "cnn"))
    assert space.top["latent"] == IntRange(4, 16)
    assert space.top["lr"] == Uniform(1e-4, 1e-2, log=True)
    assert space.top["beta"] == Uniform(0.5, 1.0)
    assert space.conv["stride"] == Fixed(2)
    assert space.top["norm"] == Fixed(ModelConfig.norm) and space.top["sigma"] == Fixed(ModelConfig.sigma)
    presets = parse_space_section({"presets": ["mlp-M1"]})
    assert presets.top == {"lr": Fixed(REPORT.lr), "batch_size": Fixed(REPORT.batch_size)}


def test_conditional_space_samples_only_the_chosen_family():
    space = parse_space_section(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        config = space(study.ask())
        cfg = model_config(config)
        assert isinstance(cfg, ModelConfig)
        seen.add(cfg.family)
        if cfg.family == "cnn":
            assert not any(k.startswith("mlp_") for k in config)
            assert cfg.conv[1].out_channels == 2 * cfg.conv[0].out_channels
        else:
            assert not any(k.startswith("conv_") for k in config) and cfg.hidden == (128, 64)
    assert seen == {"mlp", "cnn"}


def test_every_conv_stack_a_space_can_sample_must_fit_the_image():
    expected = r"space\.conv: layers=5, kernel_size=5, stride=2, padding=1 does not fit 32x32"
    with pytest.raises(SpaceError, match=expected):
        parse_space_section({**SPACE, "conv": {**SPACE["conv"], "layers": {"int": [2, 9]}}})
