import pytest
import torch

from cvae_core import PRESETS, ModelConfig, build_model, count_params, preset


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_every_preset_maps_images_to_images(name):
    model = preset(name).eval()
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 5, 9])
    logits, mu, logvar = model(x, y)
    latent = PRESETS[name].latent
    assert logits.shape == (3, 3, 32, 32)
    assert mu.shape == logvar.shape == (3, latent)
    images = model.decode(torch.randn(3, latent), y)
    assert images.shape == (3, 3, 32, 32)
    assert 0 <= images.min() and images.max() <= 1


@pytest.mark.parametrize(
    "conv",
    [
        [(8, 3, 1, 0)],  # 32 -> 30, mirror back to 32: final kernel 1
        [(8, 4, 2, 1), (16, 4, 2, 1), (32, 4, 2, 1)],  # 32 -> 4, DCGAN-like
        [(8, 7, 3, 0), (8, 2, 1, 0)],  # odd shrink
        [(8, 5, 2, 0)] * 3,  # down to 1x1
    ],
)
def test_cnn_output_is_exactly_32x32_for_any_stack(conv):
    model = build_model(ModelConfig(family="cnn", latent=4, h=16, conv=conv))
    assert model(torch.rand(2, 3, 32, 32), torch.tensor([1, 2]))[0].shape == (2, 3, 32, 32)


def test_cnn_label_enters_as_a_constant_channel():
    model = preset("cnn-arch1-M1").eval()
    first = model.encoder[0]
    assert first.in_channels == 4
    seen = {}
    first.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    model.encode(torch.rand(1, 3, 32, 32), torch.tensor([8]))
    assert torch.all(seen["x"][0, 3] == 8)


def test_options_change_the_network():
    base = dict(family="cnn", latent=8, h=32, conv=[(8, 3, 2, 1)])
    bn = build_model(ModelConfig(**base, norm="batch"))
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in bn.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in bn.modules())
    leaky = build_model(ModelConfig(**base, activation="leaky_relu"))
    assert any(isinstance(m, torch.nn.LeakyReLU) for m in leaky.modules())
    learned = build_model(ModelConfig(**base, likelihood="gaussian_learned"))
    plain = build_model(ModelConfig(**base))
    assert count_params(learned) == count_params(plain) + 1  # the shared log-sigma
    assert learned.log_sigma is not None and plain.log_sigma is None


def test_cnn_onehot_label_enters_as_one_plane_per_class():
    model = build_model(ModelConfig(family="cnn", latent=4, h=16, conv=[(8, 4, 2, 1)], label="onehot")).eval()
    first = model.encoder[0]
    assert first.in_channels == 3 + 10
    seen = {}
    first.register_forward_hook(lambda m, inp, out: seen.update(x=inp[0]))
    model.encode(torch.rand(1, 3, 32, 32), torch.tensor([8]))
    planes = seen["x"][0, 3:]
    assert torch.all(planes[8] == 1) and planes.sum() == 32 * 32


RESNET_SHAPES = [(scales, upsample, norm, cond_norm) for scales in (1, 2, 3) for upsample in ("nearest", "transposed")
                 for norm in ("none", "batch", "group") for cond_norm in (False, True)
                 if not (cond_norm and norm == "none")]


@pytest.mark.parametrize("scales, upsample, norm, cond_norm", RESNET_SHAPES)
def test_resnet_maps_images_to_32x32_logits(scales, upsample, norm, cond_norm):
    cfg = ModelConfig(family="resnet", latent=6, width=4, scales=scales, blocks=2, upsample=upsample, norm=norm,
                      cond_norm=cond_norm, activation="silu")
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    x, y = torch.rand(3, 3, 32, 32), torch.tensor([0, 5, 9])
    logits, mu, logvar = model(x, y)
    assert logits.shape == (3, 3, 32, 32) and mu.shape == logvar.shape == (3, 6)
    assert torch.isfinite(logits).all() and logits.std() > 0  # logits, not probabilities: any real number
    assert model.encoder[0].in_channels == 3 + 10  # the label as one-hot planes
    assert model.bottom == (4 * 2 ** (scales - 1), 32 // 2**scales, 32 // 2**scales)
    norms = {torch.nn.BatchNorm2d: "batch", torch.nn.GroupNorm: "group"}
    assert {norms[type(m)] for m in model.modules() if type(m) in norms} == ({norm} - {"none"})


@pytest.mark.parametrize("cond_norm", [False, True])
def test_cond_norm_brings_the_label_to_every_decoder_layer(cond_norm):
    """With the label cut from the decoder's input, only conditional norms can still use it."""
    cfg = ModelConfig(family="resnet", latent=4, width=4, scales=2, blocks=1, norm="group", cond_norm=cond_norm)
    torch.manual_seed(0)
    model = build_model(cfg).eval()
    with torch.no_grad():
        model.decoder_fc.weight[:, cfg.latent:] = 0  # the one-hot label's columns
        for m in model.modules():
            if getattr(m, "scale_shift", None) is not None:  # trained away from the identity
                m.scale_shift.weight.normal_()
    z = torch.randn(1, 4).expand(10, -1)
    images = model.decode(z, torch.arange(10))
    differ = (images[1:] - images[0]).abs().amax() > 1e-4
    assert differ == cond_norm
    # two norms per block (2 scales x 1 block) and the one before the last conv
    assert sum(isinstance(m, torch.nn.Embedding) for m in model.modules()) == (2 * 2 + 1 if cond_norm else 0)


def test_resnet_size_grows_with_width_blocks_and_scales():
    def params(**kw):
        return count_params(build_model(ModelConfig(**{"family": "resnet", "latent": 8, "width": 8, "scales": 2,
                                                       "blocks": 1, **kw})))
    base = params()
    assert params(width=16) > base and params(blocks=2) > base and params(scales=3) > base
    assert params(upsample="transposed") != base


@pytest.mark.parametrize("shape", [{"image_size": 28, "channels": 1, "num_classes": 5},
                                   {"image_size": 64, "channels": 3, "num_classes": 3}])
@pytest.mark.parametrize("family", ["mlp", "cnn", "resnet"])
def test_every_family_is_built_for_the_datas_shape(family, shape):
    arch = {"mlp": {"hidden": (32,)}, "cnn": {"conv": ((8, 4, 2, 1), (16, 4, 2, 1)), "h": 16, "label": "onehot"},
            "resnet": {"width": 4, "scales": 2, "blocks": 1, "cond_norm": True, "norm": "batch"}}[family]
    cfg = ModelConfig(family=family, latent=4, **arch, **shape)
    model = build_model(cfg).eval()
    n, size, channels = 2 * shape["num_classes"], shape["image_size"], shape["channels"]
    x, y = torch.rand(n, channels, size, size), torch.arange(shape["num_classes"]).repeat(2)
    logits, mu, _ = model(x, y)
    assert logits.shape == x.shape and mu.shape == (n, 4)
    assert model.decode(mu, y).shape == x.shape
