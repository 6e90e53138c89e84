import math

import pytest
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from cvae_core import ModelConfig, Recipe, preset_config
from cvae_core.layout import read_metrics
from cvae_core.training import TrainingDiverged, load_model, train

SMALL = ModelConfig(family="cnn", latent=8, h=32, conv=[(8, 4, 2, 1), (16, 4, 2, 1)])


def _tiny(n=256, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    return x, y


@pytest.mark.slow  # decoding the real CIFAR-10 zip
def test_a_few_epochs_on_real_images_reduce_the_loss(real_data):
    tx, ty = real_data.train_x[:512], real_data.train_y[:512]
    vx, vy = real_data.test_x[:256], real_data.test_y[:256]
    losses = []
    train(preset_config("cnn-arch1-M1"), tx, ty, vx, vy, epochs=5, recipe=Recipe(lr=1e-3, batch_size=64),
          device="cpu", callback=lambda m, _: losses.append(m))
    assert losses[-1]["train_loss"] < losses[0]["train_loss"] - 20
    assert losses[-1]["val_loss"] < losses[0]["val_loss"] - 20
    assert losses[-1]["best_val_loss"] == min(m["val_loss"] for m in losses)


@pytest.mark.parametrize("recipe", [Recipe(lr=1e-3, batch_size=32),
                                    Recipe(lr=1e-3, batch_size=32, ema=0.9, weight_decay=0.01),
                                    Recipe(lr=1e-3, batch_size=32, grad_clip=1.0, lr_schedule="cosine",
                                           warmup_epochs=1)])
def test_resume_from_checkpoint_is_bit_for_bit(tmp_path, recipe):
    x, y = _tiny()
    args = dict(epochs=4, recipe=recipe, device="cpu", grid_every=0)
    straight = train(SMALL, x, y, x[:64], y[:64], **args)

    ckpts = {}
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 2
        def stop_at_2(metrics, make_checkpoint):
            if metrics["epoch"] == 2:
                ckpts[2] = make_checkpoint()
                torch.save(ckpts[2], tmp_path / "c.pt")
                raise KeyboardInterrupt
        train(SMALL, x, y, x[:64], y[:64], callback=stop_at_2, **args)
    resume = torch.load(tmp_path / "c.pt", weights_only=True)
    resumed = train(SMALL, x, y, x[:64], y[:64], resume=resume, **args)

    assert resumed.epochs_run == 4 and resumed.best_val_loss == straight.best_val_loss
    for (k, a), b in zip(straight.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(a, b), k


def test_a_resume_forgets_the_epochs_a_killed_attempt_ran_past_its_checkpoint(tmp_path):
    x, y = _tiny()
    args = dict(recipe=Recipe(lr=1e-3, batch_size=32), device="cpu", out_dir=tmp_path, grid_every=1,
                checkpoint_every=3)
    with pytest.raises(KeyboardInterrupt):  # killed after epoch 5, its checkpoint at 3
        def stop_at_5(metrics, _):
            if metrics["epoch"] == 5:
                raise KeyboardInterrupt
        train(SMALL, x, y, x[:64], y[:64], epochs=6, callback=stop_at_5, **args)
    assert [r["epoch"] for r in read_metrics(tmp_path)] == [1, 2, 3, 4, 5]
    resume = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    train(SMALL, x, y, x[:64], y[:64], epochs=4, resume=resume, **args)  # this attempt stops sooner
    assert [r["stop"] for r in read_metrics(tmp_path)] == [None, None, None, "max_epochs"]
    assert sorted({p.name[:9] for p in (tmp_path / "grids").iterdir()}) == [f"epoch000{e}" for e in range(1, 5)]


def test_float_images_are_refused_before_training():
    x, y = _tiny(64)
    with pytest.raises(ValueError, match=r"^images are torch.float32; train\(\) takes uint8 images"):
        train(SMALL, x.float() / 255, y, x, y, device="cpu", recipe=Recipe(batch_size=32))


def test_patience_stops_and_keeps_the_best_weights(tmp_path):
    x, y = _tiny(128)
    seen = []
    result = train(SMALL, x, y, x[:64], y[:64], epochs=200, recipe=Recipe(lr=3e-2, batch_size=32), patience=2,
                   device="cpu", out_dir=tmp_path, grid_every=0, callback=lambda m, _: seen.append(m))
    assert result.stop_reason == "patience" and result.epochs_run < 200
    assert seen[-1]["epochs_since_best"] == 2
    assert result.best_epoch == result.epochs_run - 2
    best = load_model(tmp_path / "best.pt")
    for a, b in zip(best.state_dict().values(), result.model.state_dict().values()):
        assert torch.equal(a, b)
    from cvae_core.training import evaluate
    assert evaluate(best, x[:64], y[:64]) == pytest.approx(result.best_val_loss, rel=1e-6)


def test_divergence_raises_with_the_epoch_and_is_logged(tmp_path):
    x, y = _tiny(64)
    cfg = ModelConfig(family="mlp", latent=4, hidden=[16], likelihood="gaussian_learned")
    with pytest.raises(TrainingDiverged) as err:
        train(cfg, x, y, x, y, epochs=50, recipe=Recipe(lr=1e6, batch_size=16), device="cpu", out_dir=tmp_path,
              grid_every=0)
    assert err.value.epoch >= 1 and f"epoch {err.value.epoch}" in str(err.value)
    last = read_metrics(tmp_path)[-1]
    assert last["epoch"] == err.value.epoch
    assert not (math.isfinite(last["train_loss"]) and math.isfinite(last["val_loss"]))


def test_out_dir_gets_metrics_grids_and_checkpoints(tmp_path):
    x, y = _tiny(64)
    train(SMALL, x, y, x, y, epochs=2, recipe=Recipe(batch_size=32), device="cpu", out_dir=tmp_path, grid_every=1)
    records = read_metrics(tmp_path)
    assert [m["epoch"] for m in records] == [1, 2]
    # the optimisation steps' time, then the whole epoch's (steps and validation)
    assert all(0 < m["step_seconds"] < m["epoch_seconds"] for m in records)
    names = sorted(p.name for p in (tmp_path / "grids").iterdir())
    assert "epoch0002_samples.png" in names and "epoch0002_recon_test.png" in names
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize(
    "kwargs, match",
    [(dict(recipe=Recipe(batch_size=1000)), "recipe.batch_size: 1000 is more than the 64 training images"),
     (dict(patience=0), "patience=0"), (dict(epochs=0), "epochs=0"), (dict(reduction="avg"), "reduction='avg'"),
     (dict(recipe={"lr": 1}), "recipe=")],
)
def test_bad_arguments_fail_before_training(kwargs, match):
    x, y = _tiny(64)
    with pytest.raises(ValueError, match=match):
        train(SMALL, x, y, x, y, device="cpu", **{"recipe": Recipe(batch_size=32), **kwargs})


def test_with_ema_the_kept_weights_are_the_average_of_every_step():
    """The weights validated and kept are decay * average + (1 - decay) * weights after each step,
    the first step's weights to begin with."""
    x, y = _tiny(128)
    decay, raw = 0.8, []
    cfg = ModelConfig(family="cnn", latent=8, h=32, conv=[(8, 4, 2, 1)], norm="batch")

    def record(optimizer, args, kwargs):
        raw.append([p.detach().clone() for p in optimizer.param_groups[0]["params"]])

    hook = register_optimizer_step_post_hook(record)
    try:  # one epoch of 4 steps: the kept weights are the ones after it
        result = train(cfg, x, y, x[:64], y[:64], epochs=1, recipe=Recipe(lr=1e-2, batch_size=32, ema=decay),
                       device="cpu", grid_every=0)
    finally:
        hook.remove()
    assert len(raw) == 4
    expected = raw[0]
    for step in raw[1:]:
        expected = [decay * e + (1 - decay) * w for e, w in zip(expected, step)]
    kept = list(result.model.parameters())
    for e, k, last in zip(expected, kept, raw[-1]):
        assert torch.allclose(e, k, atol=1e-6) and not torch.allclose(k, last)
    from cvae_core.training import evaluate
    assert evaluate(result.model, x[:64], y[:64]) == pytest.approx(result.best_val_loss, rel=1e-6)


def test_weight_decay_trains_with_adamw():
    x, y = _tiny(64)
    seen = {}

    def grab(metrics, make_checkpoint):
        seen["groups"] = make_checkpoint()["optimizer"]["param_groups"]

    train(SMALL, x, y, x, y, epochs=1, recipe=Recipe(batch_size=32, weight_decay=0.05), device="cpu",
          grid_every=0, callback=grab)
    assert seen["groups"][0]["weight_decay"] == 0.05 and seen["groups"][0]["decoupled_weight_decay"]
    train(SMALL, x, y, x, y, epochs=1, recipe=Recipe(batch_size=32), device="cpu", grid_every=0, callback=grab)
    assert seen["groups"][0]["weight_decay"] == 0 and not seen["groups"][0].get("decoupled_weight_decay")


def test_the_learning_rate_warms_up_linearly_then_decays_to_zero_by_a_cosine_at_the_last_epoch():
    x, y = _tiny(128)  # 4 steps per epoch
    rates = []
    hook = register_optimizer_step_post_hook(lambda optimizer, args, kwargs: rates.append(
        optimizer.param_groups[0]["lr"]))
    try:
        records = []
        train(SMALL, x, y, x[:64], y[:64], epochs=3, recipe=Recipe(lr=1e-2, batch_size=32, lr_schedule="cosine",
              warmup_epochs=1), device="cpu", grid_every=0, callback=lambda m, _: records.append(m["lr"]))
        constant = []
        train(SMALL, x, y, x[:64], y[:64], epochs=2, recipe=Recipe(lr=1e-2, batch_size=32), device="cpu", grid_every=0,
              callback=lambda m, _: constant.append(m["lr"]))
    finally:
        hook.remove()
    warm = [1e-2 * (i + 1) / 4 for i in range(4)]
    decay = [1e-2 * 0.5 * (1 + math.cos(math.pi * i / 8)) for i in range(8)]
    assert rates[:12] == pytest.approx(warm + decay) and rates[12:] == [1e-2] * 8
    assert records == pytest.approx([warm[0], decay[0], decay[4]]) and constant == [1e-2, 1e-2]


def test_gradients_are_clipped_to_the_recipes_norm():
    x, y = _tiny(64)
    norms = []

    def record(optimizer, args, kwargs):
        grads = [p.grad for p in optimizer.param_groups[0]["params"] if p.grad is not None]
        norms.append(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])).item())

    hook = register_optimizer_step_post_hook(record)
    try:
        train(SMALL, x, y, x, y, epochs=1, recipe=Recipe(batch_size=32, grad_clip=0.5), device="cpu", grid_every=0)
        clipped, norms[:] = norms[:], []
        train(SMALL, x, y, x, y, epochs=1, recipe=Recipe(batch_size=32), device="cpu", grid_every=0)
    finally:
        hook.remove()
    assert max(clipped) == pytest.approx(0.5, rel=1e-4) and min(norms) > 0.5  # a summed loss: large gradients


def test_validation_weighs_the_kl_by_the_models_beta():
    """What keeps the best weights is the training objective: with beta = 0.5 the validation loss
    is the beta = 1 one less half the KL."""
    from cvae_core.losses import kl_divergence
    from cvae_core.models import build_model
    from cvae_core.training import evaluate

    x, y = _tiny(64)
    torch.manual_seed(0)
    elbo = build_model(ModelConfig(family="mlp", latent=4, hidden=[16], likelihood="gaussian_learned")).eval()
    with torch.no_grad():
        elbo.mu.weight.mul_(30)  # codes far from the prior: a KL of a few nats per image
    half = build_model(ModelConfig(family="mlp", latent=4, hidden=[16], likelihood="gaussian_learned", beta=0.5))
    half.load_state_dict(elbo.state_dict())
    with torch.no_grad():
        kl = kl_divergence(*elbo.encode(x.float() / 255, y)).sum().item() / len(x)
    assert evaluate(elbo, x, y) - evaluate(half, x, y) == pytest.approx(0.5 * kl, rel=1e-4)


def test_a_model_built_for_other_images_or_classes_is_refused_before_training():
    import re

    from cvae_core.config import ConfigError

    cfg = ModelConfig(family="mlp", latent=4, hidden=(8,))  # CIFAR-10's shape, the default
    gray = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    with pytest.raises(ConfigError, match=re.escape("built for images (3, 32, 32) (channels, height, width); "
                                                    "the data's are (1, 28, 28)")):
        train(cfg, gray, torch.zeros(4, dtype=torch.long), gray, torch.zeros(4, dtype=torch.long), epochs=1,
              recipe=Recipe(batch_size=2))
    x = torch.zeros(4, 3, 32, 32, dtype=torch.uint8)
    with pytest.raises(ConfigError, match="built for 10 classes; the data has label 12"):
        train(cfg, x, torch.tensor([0, 1, 2, 12]), x, torch.zeros(4, dtype=torch.long), epochs=1,
              recipe=Recipe(batch_size=2))
