"""Training options a user selects and no other test covers: the loss reduction, --compile on the
CPU, and the share of the device a trial's worker claims (search.workers.claim_device)."""

from __future__ import annotations

import json

import pytest
import torch

from cvae_core import ModelConfig, Recipe
from cvae_core.layout import read_metrics
from cvae_core.losses import kl_divergence
from cvae_core.training import load_model, train

MLP = ModelConfig(family="mlp", latent=8, hidden=(64,))


def _classes_by_brightness(n=200, seed=0):
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(10).repeat_interleave(n // 10)
    x = (torch.rand(n, 3, 32, 32, generator=g) * 60 + y.view(-1, 1, 1, 1) * 20).to(torch.uint8)
    return x, y


def test_mean_reduction_reports_per_element_losses_and_collapses_the_posterior_as_the_report_found():
    """reduction="mean" averages the reconstruction over 3,072 pixels and the KL over the latents:
    the KL weighs ~400 times more than with "sum" (the report's failure mode, kept selectable), so
    the encoder's codes carry next to no information. The validation loss stays nats per image."""
    x, y = _classes_by_brightness()
    runs = {}
    for reduction in ("sum", "mean"):
        epochs = []
        result = train(MLP, x, y, x[:100], y[:100], recipe=Recipe(lr=1e-3, batch_size=20), epochs=3,
                       reduction=reduction, device="cpu", callback=lambda m, _: epochs.append(m))
        with torch.no_grad():
            mu, logvar = result.model.encode(x[:100].float() / 255, y[:100])
        runs[reduction] = epochs, kl_divergence(mu, logvar).sum(1).mean().item()
    (sum_epochs, sum_kl), (mean_epochs, mean_kl) = runs["sum"], runs["mean"]
    assert all(1000 < e["train_loss"] for e in sum_epochs)  # nats per image
    assert all(0.3 < e["train_loss"] < 1.5 for e in mean_epochs)  # nats per pixel: ln 2 is a coin flip
    assert all(1000 < e["val_loss"] for e in sum_epochs + mean_epochs)  # always per image: epochs compare
    assert mean_kl < sum_kl / 10, (mean_kl, sum_kl)


def test_the_train_command_passes_reduction_mean_to_training(tree, tmp_path):
    from cvae_core.train import main

    out = tmp_path / "run"
    assert main(["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), "--epochs", "1", "--batch-size", "10",
                 "--device", "cpu", "--grid-every", "0", "--reduction", "mean"]) == 0
    assert json.loads((out / "config.json").read_text())["args"]["reduction"] == "mean"
    [epoch] = read_metrics(out)
    assert 0.3 < epoch["train_loss"] < 1.5 and epoch["val_loss"] > 1000


@pytest.mark.slow  # torch.compile builds C++ kernels: about a minute on 2 cores
def test_compile_trains_on_the_cpu_and_keeps_plain_weights(tree, tmp_path, capsys):
    """--compile on a machine without a GPU trains as without it (the same losses, up to the
    compiled kernels' own random numbers), and the weights it saves load into a plain model."""
    from cvae_core.train import main

    losses = {}
    for compiled in (False, True):
        out = tmp_path / ("compiled" if compiled else "eager")
        args = ["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), "--epochs", "2", "--batch-size", "10",
                "--device", "cpu", "--grid-every", "0", *(["--compile"] if compiled else [])]
        assert main(args) == 0, capsys.readouterr().err
        losses[compiled] = [(e["train_loss"], e["val_loss"]) for e in read_metrics(out)]
    assert json.loads((tmp_path / "compiled" / "config.json").read_text())["args"]["compile"] is True
    assert len(losses[True]) == 2
    for eager, compiled in zip(losses[False], losses[True]):
        assert compiled == pytest.approx(eager, rel=0.01)
    model = load_model(tmp_path / "compiled" / "best.pt")  # no torch.compile wrapper's "_orig_mod." keys
    assert not any(k.startswith("_orig_mod") for k in model.state_dict())


# ---------------------------------------------------------------------------- claim_device


@pytest.fixture
def threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


@pytest.fixture
def memory_fraction_calls(monkeypatch):
    """torch.cuda.set_per_process_memory_fraction, recorded instead of called."""
    calls = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction",
                        lambda fraction, device=None: calls.append((fraction, torch.device(device))))
    return calls


def test_on_the_cpu_a_worker_takes_its_cpus_as_threads_and_caps_no_memory(monkeypatch, threads,
                                                                         memory_fraction_calls):
    from search.workers import claim_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert claim_device(0.25, 2) == torch.device("cpu") and torch.get_num_threads() == 2
    assert claim_device(0.0, 0.5) == torch.device("cpu") and torch.get_num_threads() == 1  # never 0 threads
    assert memory_fraction_calls == []


@pytest.mark.parametrize("gpu_share, capped", [(0.25, True), (0.5, True), (1.0, False)])
def test_a_worker_sharing_a_gpu_is_capped_to_its_share_of_its_memory(monkeypatch, threads, memory_fraction_calls,
                                                                     gpu_share, capped):
    """docs/search.md: `resources: {gpu: 0.25}` = four trials per GPU, each capped to that share of GPU
    memory; a whole GPU is not capped."""
    from search.workers import claim_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    # resolve_device turns on TF32 and cudnn autotuning for CUDA: put them back after the test
    flags = [(torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"),
             (torch.backends.cudnn, "benchmark")]
    before = [getattr(module, name) for module, name in flags]
    try:
        device = claim_device(gpu_share, 1)
    finally:
        for (module, name), value in zip(flags, before):
            setattr(module, name, value)
    assert device.type == "cuda"
    assert memory_fraction_calls == ([(gpu_share, device)] if capped else [])
