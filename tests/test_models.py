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
