"""Sample quality at equal training time: the report's best model against a configuration of spaces/cnn.yaml.

(a) cnn-arch3-M3, the report's best, with the report's recipe (Adam lr 1e-4, batch 512, BCE + KL
summed), and (b) --config train on the same images for the same wall-clock budget each (each stops
when its next epoch, as long as its last, would end past the budget; no patience stop), keeping the
weights with the best validation loss. Each is then sampled with every sampler (prior, gmm, two_stage: the final
stage's) and scored with one feature extractor against one reference: FID and KID side by side
with their ratio (b / a), parameters, epochs reached and seconds.

The default (b), from spaces/cnn.yaml's range: resnet, width 64, scales 3, blocks 1, nearest
upsampling, conditional BatchNorm, SiLU, latent 128, Gaussian likelihood with sigma 1 and beta
0.02, Adam lr 1e-3, batch 64, no EMA (over the few hundred steps a CPU budget allows, an average
with decay 0.999 would still be half the first steps' weights).

    # GPU: all 50k training images, 15 minutes each, 1,000 samples per class against the train split
    python bench/quality.py --data ../shared/data/cifar10-jpeg.zip
    # CPU (2 cores: about 50 minutes with the offline Inception)
    python bench/quality.py --device cpu --n-train 10000 --n-val 1000 --minutes 10 --samples-per-class 50 \
        --reference-n 2000 --two-stage-width 512 --data ../shared/data/cifar10-jpeg.zip

Target: on a CPU, (b)'s FID below (a)'s with every sampler; on an H100, (b) <= 70 from one
15-minute training.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from cvae_core import REPORT, ModelConfig, Recipe, TrialConfig, preset_config  # noqa: E402
from cvae_core.sources import DataError  # noqa: E402
from results.names import SAMPLERS, resolve_extractor  # noqa: E402
from search.settings import Final, TwoStage  # noqa: E402

if TYPE_CHECKING:  # the heavy modules (torch) are imported where they are used: --help and input errors skip them
    import torch

    from cvae_core.data import ImageData
    from results.features import MetricOptions
    from results.reference import Reference

REPORTS_BEST = TrialConfig(preset_config("cnn-arch3-M3"), REPORT)
RESNET = TrialConfig(
    ModelConfig(family="resnet", latent=128, width=64, scales=3, blocks=1, upsample="nearest", cond_norm=True,
                norm="batch", activation="silu", likelihood="gaussian", sigma=1.0, beta=0.02),
    Recipe(lr=1e-3, batch_size=64),
)


class _BudgetSpent(Exception):
    pass


def train_for(trial: TrialConfig, data: ImageData, seconds: float, device: torch.device):
    """(model with the kept weights, epochs, wall seconds): train while the next epoch, as long as the
    last, would end within `seconds` (at least one epoch)."""
    from cvae_core import build_model
    from cvae_core.data import split
    from cvae_core.training import train

    seen = {}
    t0 = time.perf_counter()

    def stop_when_spent(metrics, make_checkpoint):
        seen["epoch"] = metrics["epoch"]
        print(f"    epoch {metrics['epoch']:3d}  val {metrics['val_loss']:.1f}  {time.perf_counter() - t0:6.0f} s",
              flush=True)
        if time.perf_counter() - t0 + metrics["epoch_seconds"] > seconds:
            seen["state"] = make_checkpoint()["best_state"]
            raise _BudgetSpent

    try:
        train(trial.model, *split(data), recipe=trial.recipe, epochs=10**9, patience=10**9, seed=0, device=device,
              grid_every=0, callback=stop_when_spent)
    except _BudgetSpent:
        pass
    model = build_model(trial.model).to(device)
    model.load_state_dict(seen["state"])
    return model.eval(), seen["epoch"], time.perf_counter() - t0


def scores(model, data: ImageData, reference: Reference, opts: MetricOptions, per_class: int, settings: TwoStage,
           components: int, device: torch.device) -> dict[str, tuple[float, float, float]]:
    """{sampler: (FID, KID, seconds to sample and score)} of `model`'s samples."""
    from cvae_core.grids import grid_labels
    from results import two_stage
    from results.metrics import search_score
    from results.samplers import encoder_means, generate

    t0 = time.perf_counter()
    second, loss = two_stage.fit(encoder_means(model, data.train_x, data.train_y), data.train_y, model.cfg.num_classes,
                                 width=settings.width, layers=settings.layers, epochs=settings.epochs, device=device)
    print(f"    two_stage fit ({settings.layers} x {settings.width}, {settings.epochs} epochs): loss {loss:.2f}, "
          f"{time.perf_counter() - t0:.0f} s", flush=True)
    out = {}
    for sampler in SAMPLERS:
        t0 = time.perf_counter()
        images = generate(model, sampler, per_class, data.train_x, data.train_y, components=components,
                          second_stage=second)
        s = search_score(images, grid_labels(per_class, model.cfg.num_classes), reference, opts)
        out[sampler] = (s.fid, s.kid, time.perf_counter() - t0)
        print(f"    {sampler}: FID {s.fid:.1f}, KID {s.kid:.4f} ({out[sampler][2]:.0f} s)", flush=True)
    return out


def subset(data: ImageData, n_train: int | None, n_val: int | None) -> ImageData:
    """Fixed random subsets (the splits are stored class by class: a prefix would hold few classes)."""
    import torch

    g = torch.Generator().manual_seed(0)
    train = torch.randperm(len(data.train_x), generator=g)[:n_train]
    val = torch.randperm(len(data.test_x), generator=g)[:n_val]
    return replace(data, train_x=data.train_x[train], train_y=data.train_y[train], test_x=data.test_x[val],
                   test_y=data.test_y[val])


def main() -> None:
    final = Final()
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=None)
    p.add_argument("--device", default=None, help="cpu to run without a GPU (default: cuda when present)")
    p.add_argument("--config", default=None, help="(b) as TrialConfig JSON, or a file of it (default: the docstring's)")
    p.add_argument("--minutes", type=float, default=15.0, help="training budget of each model")
    p.add_argument("--n-train", type=int, default=None, help="training images (default: the whole train split)")
    p.add_argument("--n-val", type=int, default=None, help="validation images (default: the whole test split)")
    p.add_argument("--samples-per-class", type=int, default=final.samples_per_class)
    p.add_argument("--reference-n", type=int, default=None, help="train-split reference images (default: all)")
    p.add_argument("--extractor", default="auto", help="feature extractor, resolved as the final stage resolves it")
    p.add_argument("--two-stage-width", type=int, default=final.two_stage.width)
    p.add_argument("--two-stage-epochs", type=int, default=final.two_stage.epochs)
    args = p.parse_args()

    text = args.config
    if text is not None and Path(text).is_file():
        text = Path(text).read_text()
    try:
        b = TrialConfig.from_dict(json.loads(text)) if text is not None else RESNET
    except ValueError as e:  # not JSON, or not a trial's configuration (ConfigError)
        p.error(f"--config: {e}")
    import torch

    from cvae_core import count_params
    from cvae_core.data import load_data
    from cvae_core.training import resolve_device
    from results.features import MetricOptions
    from results.metrics import prime_reference
    from results.reference import Reference

    settings = final.two_stage.model_copy(update={"width": args.two_stage_width, "epochs": args.two_stage_epochs})
    dev = resolve_device(args.device)
    full = load_data(args.data)
    data = subset(full, args.n_train, args.n_val)
    extractor = resolve_extractor(args.extractor, None)
    reference, opts = Reference(n=args.reference_n), MetricOptions(full, extractor, device=str(dev))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    print(f"{len(data.train_x)} training + {len(data.test_x)} validation images, {args.minutes:g} min each, device "
          f"{name}; {len(full.classes) * args.samples_per_class} samples per sampler against {reference.label(full)} "
          f"with {extractor}")
    t0 = time.perf_counter()
    prime_reference(reference, opts)
    print(f"reference features + statistics: {time.perf_counter() - t0:.0f} s")

    results = {}
    for label, trial in (("(a) cnn-arch3-M3, the report's recipe", REPORTS_BEST), (f"(b) {b.model.family}", b)):
        print(label, flush=True)
        model, epochs, seconds = train_for(trial, data, 60 * args.minutes, dev)
        results[label] = (count_params(model), epochs, seconds,
                          scores(model, data, reference, opts, args.samples_per_class, settings,
                                 final.gmm_components, dev))
    report(results)


def report(results: dict) -> None:
    (label_a, (params_a, epochs_a, seconds_a, a)), (label_b, (params_b, epochs_b, seconds_b, b)) = results.items()
    print()
    for label, params, epochs, seconds in ((label_a, params_a, epochs_a, seconds_a),
                                           (label_b, params_b, epochs_b, seconds_b)):
        print(f"{label}: {params:,} parameters, {epochs} epochs in {seconds:.0f} s")
    print(f"{'sampler':10s} {'FID (a)':>9s} {'FID (b)':>9s} {'b/a':>6s}   {'KID (a)':>8s} {'KID (b)':>8s} {'b/a':>6s}")
    for sampler in a:
        (fid_a, kid_a, _), (fid_b, kid_b, _) = a[sampler], b[sampler]
        kid_ratio = f"{kid_b / kid_a:6.2f}" if kid_a > 0 else "   n/a"  # unbiased KID can be <= 0
        print(f"{sampler:10s} {fid_a:9.1f} {fid_b:9.1f} {fid_b / fid_a:6.2f}   {kid_a:8.4f} {kid_b:8.4f} {kid_ratio}")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: --data: {e}")
