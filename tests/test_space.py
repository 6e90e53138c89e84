"""The `space:` section's distribution language, its Optuna adapter and the trial -> model mapping.
(Errors in a whole space file, this section's included, are in test_settings.py.)"""

import optuna
import pytest
from conftest import CNN_RESNET_SPACE
from conftest import MIXED_SPACE as SPACE

from cvae_core import REPORT, ModelConfig, Recipe
from cvae_core.config import CIFAR10_SHAPE, MAX_DEPTH, ConfigError
from search.space import Choice, Fixed, IntRange, SpaceError, Uniform, parse_space_section, trial_config


def test_distributions_are_parsed_and_what_is_left_out_is_the_reports():
    space = parse_space_section(SPACE)
    assert space.top["family"] == Choice(("mlp", "cnn"))
    assert space.top["latent"] == IntRange(4, 16)
    assert space.top["lr"] == Uniform(1e-4, 1e-2, log=True)
    assert space.top["beta"] == Uniform(0.5, 1.0)
    assert space.group("conv")["stride"] == Fixed(2)
    assert space.top["norm"] == Fixed(ModelConfig.norm) and space.top["sigma"] == Fixed(ModelConfig.sigma)
    presets = parse_space_section({"presets": ["mlp-M1"]})
    assert presets.top == {k: Fixed(v) for k, v in REPORT.to_dict().items()}


def test_conditional_space_samples_only_the_chosen_family():
    space = parse_space_section(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = set()
    for _ in range(20):
        config = space(study.ask())
        cfg = trial_config(config).model
        assert isinstance(cfg, ModelConfig)
        seen.add(cfg.family)
        if cfg.family == "cnn":
            assert not any(k.startswith("mlp_") for k in config)
            assert cfg.conv[1].out_channels == 2 * cfg.conv[0].out_channels
        else:
            assert not any(k.startswith("conv_") for k in config) and cfg.hidden == (128, 64)
    assert seen == {"mlp", "cnn"}


def test_every_conv_stack_a_space_can_sample_must_fit_the_datas_images():
    deep = parse_space_section({**SPACE, "conv": {**SPACE["conv"], "layers": {"int": [2, 6]}}})  # fits 256x256
    expected = r"space\.conv: layers=5, kernel_size=5, stride=2, padding=1 does not fit 32x32"
    with pytest.raises(SpaceError, match=expected):
        deep.for_data(CIFAR10_SHAPE)
    with pytest.raises(SpaceError, match=r"space\.conv: layers=4, kernel_size=5, .* does not fit 28x28"):
        deep.for_data({"image_size": 28, "channels": 1, "num_classes": 5})
    wide = deep.for_data({"image_size": 256, "channels": 3, "num_classes": 3})
    config = wide(optuna.create_study().ask())
    assert (config["image_size"], config["channels"], config["num_classes"]) == (256, 3, 3)
    model = trial_config(config).model
    assert (model.image_size, model.channels, model.num_classes) == (256, 3, 3)
    # a stack no image can take is refused with the file, before any data
    with pytest.raises(SpaceError, match=r"space\.conv: layers=8, .* is not a valid model"):
        parse_space_section({**SPACE, "conv": {**SPACE["conv"], "layers": {"int": [2, 9]}}})


def test_a_huge_int_range_is_sampled_but_too_many_networks_to_check_are_one_line():
    # a billion latents is a valid range, never listed; every value of a conv setting is built once
    wide = parse_space_section({**SPACE, "latent": {"int": [4, 10**9]}})
    assert trial_config(wide(optuna.create_study().ask())).model.latent >= 4
    assert wide.for_data(CIFAR10_SHAPE).top["latent"] == IntRange(4, 10**9)  # its largest model is counted at once
    strides = {**SPACE, "conv": {**SPACE["conv"], "kernel_size": 3, "stride": {"int": [1, 10**9]}}}
    expected = (r"^space\.conv: 2,000,000,000 combinations of settings .* \(layers: 2, kernel_size: 1, "
                r"stride: 1,000,000,000, padding: 1 values\), more than the 10,000 .*; narrow an int range$")
    with pytest.raises(SpaceError, match=expected):
        parse_space_section(strides)
    # len() of a range over 2**63 values overflows
    beyond_len = {**SPACE, "conv": {**SPACE["conv"], "kernel_size": 3, "stride": {"int": [1, 2**63 + 5]}}}
    with pytest.raises(SpaceError, match=r"\(layers: 2, kernel_size: 1, stride: 9,223,372,036,854,775,813, "):
        parse_space_section(beyond_len)


def test_a_size_no_model_can_hold_is_one_line_before_the_search():
    """The driver counts each sampled model's parameters: a model torch cannot hold would end the search there."""
    typo = parse_space_section({**SPACE, "latent": {"int": [4, 10**20]}})
    expected = (r"^space: latent=100,000,000,000,000,000,000, mlp\.width=128: the mlp model these give cannot be "
                r"built \(.*\); narrow these ranges$")
    with pytest.raises(SpaceError, match=expected):
        typo.for_data(CIFAR10_SHAPE)
    wide = parse_space_section({**SPACE, "conv": {**SPACE["conv"], "channels": {"choice": [8, 2**40]}}})
    with pytest.raises(SpaceError, match=r"^space: h=64, latent=16, conv\.channels=1,099,511,627,776, "
                                         r"conv\.layers=2, conv\.kernel_size=3: the cnn model these give"):
        wide.for_data(CIFAR10_SHAPE)
    # channels double with each layer: 8 x 2**39 at the deepest
    deep = parse_space_section({**SPACE, "conv": {"layers": {"int": [1, 40]}, "channels": 8, "kernel_size": 3,
                                                  "stride": 1, "padding": 1}})
    with pytest.raises(SpaceError, match=r"conv\.layers=40, conv\.kernel_size=3: the cnn model these give"):
        deep.for_data(CIFAR10_SHAPE)


@pytest.mark.parametrize("group, key, value, problem", [
    # lists of 10**6 layers whose widths are computed with 2**layer, or models of 10**12 blocks to build
    ("conv", "layers", 10**6, f"space.conv.layers: 1000000 must be <= {MAX_DEPTH}"),
    ("mlp", "layers", {"int": [1, 10**8]}, f"space.mlp.layers.int[1]: 100000000 must be <= {MAX_DEPTH}"),
    ("resnet", "blocks", 10**12, f"space.resnet.blocks: 1000000000000 must be <= {MAX_DEPTH}"),
    ("resnet", "blocks", {"int": [1, 10**8]}, f"space.resnet.blocks.int[1]: 100000000 must be <= {MAX_DEPTH}"),
    # 2**scales is never computed; before the data, the largest images any data may have bound it
    ("resnet", "scales", 10**12, "space.resnet: scales=1000000000000, cond_norm=False, norm=batch is not a valid "
                                 "model: scales=1000000000000 halves 256x256 to a fraction of a pixel (at most 8)"),
])
def test_a_depth_no_model_can_have_is_one_line_before_the_data(group, key, value, problem):
    base = CNN_RESNET_SPACE if group == "resnet" else SPACE
    with pytest.raises(SpaceError) as e:
        parse_space_section({**base, group: {**base[group], key: value}})
    assert str(e.value) == problem


def test_the_reports_presets_need_cifar10_shaped_data():
    presets = parse_space_section({"presets": ["mlp-M1"]})
    assert presets.for_data(CIFAR10_SHAPE).presets == ("mlp-M1",)
    with pytest.raises(SpaceError, match=r"space\.presets: the report's presets are CIFAR-10 models \(32x32 RGB, 10 "
                                         r"classes\); the data is 28x28 grayscale, 5 classes"):
        presets.for_data({"image_size": 28, "channels": 1, "num_classes": 5})


def test_a_cnn_or_resnet_space_samples_each_familys_keys_and_the_recipe():
    space = parse_space_section(CNN_RESNET_SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    seen = set()
    for _ in range(30):
        config = space(study.ask())
        trial = trial_config(config)
        model, recipe = trial.model, trial.recipe
        seen.add((model.family, recipe.ema))
        assert recipe.ema in (0.0, 0.9) and recipe.weight_decay in (0.0, 1e-4) and 1e-3 <= recipe.lr <= 1e-2
        if model.family == "resnet":  # its group's norm and activation, not the top-level ones
            assert not any(k.startswith("conv_") for k in config) and "label" not in config and "h" not in config
            assert model.norm == config["resnet_norm"] and model.activation == "silu"
            assert (model.width, model.scales, model.upsample) == (
                config["resnet_width"], config["resnet_scales"], config["resnet_upsample"])
        else:
            assert not any(k.startswith("resnet_") for k in config)
            assert model.norm == "batch" and model.activation == "relu" and model.label == config["label"]
    assert {f for f, _ in seen} == {"cnn", "resnet"} and {e for _, e in seen} == {0.0, 0.9}


def test_a_resnet_whose_cond_norm_has_nothing_to_condition_is_refused():
    resnet = {**CNN_RESNET_SPACE["resnet"], "norm": {"choice": ["none", "batch"]}}
    expected = r"space\.resnet: scales=2, cond_norm=True, norm=none is not a valid model: cond_norm=True needs"
    with pytest.raises(SpaceError, match=expected):
        parse_space_section({**CNN_RESNET_SPACE, "resnet": resnet})


# A valid model of each family, to set one field of.
MODELS = {"mlp": {"family": "mlp", "latent": 4, "hidden": [8]},
          "cnn": {"family": "cnn", "latent": 4, "h": 8, "conv": [(8, 4, 2, 1)]},
          "resnet": {"family": "resnet", "latent": 4, "width": 4, "scales": 2, "blocks": 1}}


def _config_problem(family, field, value):
    """What ModelConfig (of `family`) or Recipe (family None) says of `value` for `field`
    ("must be > 0"), or None."""
    try:
        if family is None:
            Recipe(**{field: value})
        elif field == "padding":
            ModelConfig(**{**MODELS["cnn"], "conv": [(8, 4, 2, value)]})
        elif field == "hidden":
            ModelConfig(**{**MODELS["mlp"], "hidden": [value]})
        else:
            ModelConfig(**{**MODELS[family], field: value})
    except ConfigError as e:
        return str(e).split(" ", 1)[1]
    return None


@pytest.mark.parametrize("key, family, field, outside, inside", [
    ("latent", "mlp", "latent", 0, 1), ("sigma", "mlp", "sigma", 0.0, 1e-9), ("beta", "mlp", "beta", -1e-9, 0.0),
    ("h", "cnn", "h", 0, 1), ("lr", None, "lr", 0.0, 1e-9), ("batch_size", None, "batch_size", 0, 1),
    ("weight_decay", None, "weight_decay", -1e-9, 0.0), ("ema", None, "ema", 1.0, 0.999),
    ("conv.padding", "cnn", "padding", -1, 0), ("mlp.width", "mlp", "hidden", 0, 1),
    ("resnet.blocks", "resnet", "blocks", 0, 1), ("resnet.blocks", "resnet", "blocks", MAX_DEPTH + 1, MAX_DEPTH),
])
def test_a_space_refuses_a_number_exactly_when_the_configuration_does(key, family, field, outside, inside):
    base = CNN_RESNET_SPACE if family == "resnet" else SPACE

    def space_problem(value):
        group, _, name = key.rpartition(".")
        raw = {**base, group: {**base[group], name: value}} if group else {**base, key: value}
        try:
            parse_space_section(raw)
        except SpaceError as e:
            assert str(e).startswith(f"space.{key}: {value!r} "), e
            return str(e).removeprefix(f"space.{key}: {value!r} ")
        return None

    assert space_problem(outside) == _config_problem(family, field, outside) is not None
    assert space_problem(inside) is None and _config_problem(family, field, inside) is None


def test_a_space_saved_before_it_knew_the_datas_shape_samples_cifar10_models():
    """Tune restores a resumed search's searcher, and its space, as an earlier version pickled them."""
    import pickle

    space = parse_space_section(SPACE)
    old = pickle.loads(pickle.dumps(space))
    del old.__dict__["data"]  # as pickled before the field existed
    restored = pickle.loads(pickle.dumps(old))
    model = trial_config(restored(optuna.create_study().ask())).model
    assert (model.image_size, model.channels, model.num_classes) == (32, 3, 10)
