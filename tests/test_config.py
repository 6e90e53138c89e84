import dataclasses
import json
import re

import pytest

from cvae_core.config import (
    CHOICES,
    MAX_DEPTH,
    RANGES,
    REPORT,
    ConfigError,
    ConvLayer,
    ModelConfig,
    Recipe,
    TrialConfig,
    column_types,
)

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



@pytest.mark.parametrize("make, message", [  # a config read from JSON (a checkpoint, --config) of the wrong shape
    (lambda: ModelConfig.from_dict({"latent": 8}), "model field(s) ['family'] missing"),
    (lambda: ModelConfig.from_dict({"family": "mlp", "latent": 8, "hidden": 5}), "hidden=5 must be a list"),
    (lambda: ModelConfig.from_dict({**CNN, "conv": [[16, 3, 2, 1, 0]]}), "conv layer [16, 3, 2, 1, 0] must be"),
    (lambda: ModelConfig.from_dict({**CNN, "conv": [16]}), "conv layer 16 must be"),
    (lambda: TrialConfig.from_dict({"recipe": {}}), "trial field(s) ['model'] missing"),
    (lambda: TrialConfig.from_dict({"model": [1]}), "model: [1] is not a mapping of fields"),
])
def test_a_config_of_the_wrong_shape_is_a_config_error_naming_the_field(make, message):
    with pytest.raises(ConfigError, match="^" + re.escape(message)):
        make()


RESNET = dict(family="resnet", latent=8, width=8, scales=3, blocks=1)


@pytest.mark.parametrize(
    "override, field",
    [
        (dict(width=0), "width"),
        (dict(scales=0), "scales"),
        (dict(scales=6), "scales"),  # 32 / 2^6 < 1
        (dict(blocks=0), "blocks"),
        (dict(upsample="bilinear"), "upsample"),
        (dict(cond_norm=1), "cond_norm"),
        (dict(cond_norm=True), "cond_norm"),  # norm none: nothing to condition
        (dict(norm="layer"), "norm"),
        (dict(activation="gelu"), "activation"),
        (dict(h=64), "h"),  # a cnn field
        (dict(label="index"), "label"),
        (dict(hidden=[64]), "hidden"),
    ],
)
def test_bad_resnet_field_is_named(override, field):
    with pytest.raises(ConfigError, match="^" + re.escape(field)):
        ModelConfig(**{**RESNET, **override})


def test_each_family_keeps_its_own_options():
    resnet = ModelConfig(**RESNET, norm="group", activation="silu", cond_norm=True)
    assert resnet.upsample == "nearest" and resnet.label is None  # resnet's default; a cnn-only field
    assert ModelConfig(**CNN).label == "index" and ModelConfig(**CNN, label="onehot").label == "onehot"
    with pytest.raises(ConfigError, match=r"^norm='group' must be one of \['none', 'batch'\] for family='cnn'"):
        ModelConfig(**CNN, norm="group")
    with pytest.raises(ConfigError, match=r"^activation='silu' must be one of .* for family='mlp'"):
        ModelConfig(family="mlp", latent=4, hidden=[8], activation="silu")
    with pytest.raises(ConfigError, match=r"^width=64 is for family='resnet', not 'cnn'"):
        ModelConfig(**CNN, width=64)
    with pytest.raises(ConfigError, match=r"^label='onehot' is for family='cnn', not 'mlp'"):
        ModelConfig(family="mlp", latent=4, hidden=[8], label="onehot")
    assert ModelConfig.from_dict(resnet.to_dict()) == resnet


@pytest.mark.parametrize(
    "kwargs, field",
    [(dict(lr=0.0), "lr"), (dict(lr=float("inf")), "lr"), (dict(batch_size=0), "batch_size"),
     (dict(batch_size=2.5), "batch_size"), (dict(weight_decay=-1e-4), "weight_decay"), (dict(ema=1.0), "ema"),
     (dict(ema=-0.1), "ema"), (dict(ema="0.999"), "ema"), (dict(warmup_epochs=0.5), "warmup_epochs")],
)
def test_bad_recipe_field_is_named(kwargs, field):
    with pytest.raises(ConfigError, match="^" + field):
        Recipe(**kwargs)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Recipe)])
def test_every_recipe_field_is_checked_against_its_range_or_choices(field):
    """A new field is checked as soon as it has its range (RANGES) or its names (CHOICES)."""
    if field in CHOICES:
        refused, allowed = "nope", CHOICES[field][-1]
    else:
        r = RANGES[field]
        refused, allowed = (r.minimum if r.exclusive else r.minimum - 1), r.minimum + (r.kind == "int" or r.exclusive)
    with pytest.raises(ConfigError, match=f"^{field}={refused!r} must be "):
        Recipe(**{field: refused})
    assert getattr(Recipe(**{field: allowed}), field) == allowed


def test_a_trial_config_round_trips_and_its_columns_are_every_field_once():
    trial = TrialConfig(ModelConfig(**RESNET, norm="batch", cond_norm=True), Recipe(lr=3e-4, ema=0.999))
    assert TrialConfig.from_dict(json.loads(json.dumps(trial.to_dict()))) == trial
    assert list(trial.columns()) == list(column_types())
    names = [f.name for cls in (ModelConfig, Recipe) for f in dataclasses.fields(cls)]
    assert len(set(names)) == len(names)  # no model field shares a name with a recipe field
    assert TrialConfig(ModelConfig(**CNN)).recipe == REPORT == Recipe()  # the report's recipe by default
    assert (REPORT.lr, REPORT.batch_size, REPORT.weight_decay, REPORT.ema) == (1e-4, 512, 0.0, 0.0)
    with pytest.raises(ConfigError, match="unknown recipe field"):
        TrialConfig.from_dict({"model": ModelConfig(**CNN).to_dict(), "recipe": {"momentum": 0.9}})


@pytest.mark.parametrize(("field", "value", "message"), [
    ("image_size", 30, "image_size=30: image size 30x30 is not supported: square sizes that are multiples of 4"),
    ("image_size", 512, "image_size=512: image size 512x512 is not supported"),
    ("channels", 2, "channels=2 must be one of [1, 3]"),
    ("num_classes", 1, "num_classes=1 must be an integer >= 2"),
])
def test_the_datas_shape_is_checked(field, value, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        ModelConfig(family="mlp", latent=4, hidden=(8,), **{field: value})


def test_a_resnet_cannot_halve_the_image_to_a_fraction_of_a_pixel():
    with pytest.raises(ConfigError, match=re.escape("scales=3 halves 28x28 to a fraction of a pixel (at most 2)")):
        ModelConfig(family="resnet", latent=4, width=4, scales=3, blocks=1, image_size=28)
    assert ModelConfig(family="resnet", latent=4, width=4, scales=2, blocks=1, image_size=28).image_size == 28
    # 2**scales is never computed: a scales typed too long is refused at once, not after minutes
    with pytest.raises(ConfigError, match=re.escape("scales=1000000000000 halves 32x32 to a fraction of a pixel "
                                                    "(at most 5)")):
        ModelConfig(**{**RESNET, "scales": 10**12})


def test_a_resnet_deeper_than_max_depth_blocks_per_stage_is_refused():
    assert ModelConfig(**{**RESNET, "blocks": MAX_DEPTH}).blocks == MAX_DEPTH
    with pytest.raises(ConfigError, match=f"^blocks=1000000000000 must be <= {MAX_DEPTH}$"):
        ModelConfig(**{**RESNET, "blocks": 10**12})
