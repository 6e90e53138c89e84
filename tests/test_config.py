import re

import pytest

from cvae_core.config import ConfigError, ConvLayer, ModelConfig

CNN = dict(family="cnn", latent=8, conv=[(16, 3, 2, 1)], h=32)


def test_lists_become_tuples_and_round_trip():
    cfg = ModelConfig(**CNN)
    assert cfg.conv == (ConvLayer(16, 3, 2, 1),)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    hash(cfg)


@pytest.mark.parametrize(
    "override, field",
    [
        (dict(family="rnn"), "family"),
        (dict(latent=0), "latent"),
        (dict(latent=2.5), "latent"),
        (dict(norm="layer"), "norm"),
        (dict(activation="gelu"), "activation"),
        (dict(likelihood="poisson"), "likelihood"),
        (dict(sigma=0.0), "sigma"),
        (dict(beta=-1.0), "beta"),
        (dict(h=0), "h"),
        (dict(conv=[]), "conv"),
        (dict(conv=[(16, 0, 1, 0)]), "conv[0].kernel"),
        (dict(conv=[(16, 3, 0, 0)]), "conv[0].stride"),
        (dict(conv=[(16, 3, 1, 3)]), "conv[0].padding"),
        (dict(conv=[(0, 3, 1, 0)]), "conv[0].out_channels"),
        (dict(hidden=[64]), "hidden"),
    ],
)
def test_bad_cnn_field_is_named(override, field):
    with pytest.raises(ConfigError, match="^" + re.escape(field)):
        ModelConfig(**{**CNN, **override})


def test_conv_stack_that_shrinks_below_one_pixel_names_the_layer():
    with pytest.raises(ConfigError, match=r"conv\[3\].*shrinks 1x1 below 1x1"):
        ModelConfig(family="cnn", latent=8, h=8, conv=[(8, 5, 2, 0)] * 4)


def test_mlp_needs_hidden_widths():
    with pytest.raises(ConfigError, match=r"^hidden"):
        ModelConfig(family="mlp", latent=8)
    with pytest.raises(ConfigError, match=r"^hidden\[1\]"):
        ModelConfig(family="mlp", latent=8, hidden=[64, -1])


def test_unknown_field_in_dict_is_named():
    with pytest.raises(ConfigError, match="widht"):
        ModelConfig.from_dict({"family": "mlp", "latent": 8, "hidden": [8], "widht": 3})
