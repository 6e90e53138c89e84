"""Aggregate trial-epochs per second through Ray Tune with 1, 2, 4, 8 trials per GPU.

Each setting runs k copies of the real trainable (search.trainable.run_trial, ranked by the
validation loss: bench/objective_cost.py measures scoring) on one preset
at the same time, sharing the device (gpu = 1/k each), and counts epochs finished per second
across all of them in steady state (each trial's first epoch is warm-up). The baseline is
one DataLoader trial (bench/train_throughput.py (a)), timed in the same run.

With --s3 each setting also runs with its run folder in a local S3 server (bench/local_s3.py):
what the trials' uploads (a background push after each checkpoint, results.storage) cost their
training, beside the same trials on the local disk; --repeats N alternates the two N times and
gives the median ratio with its range (one pair is within a shared host's noise).

    python bench/search_throughput.py --data ../shared/data/cifar10-jpeg.zip            # GPU
    python bench/search_throughput.py --device cpu --preset cnn-arch1-M1 --n-train 1024 --per-device 1 2
    python bench/search_throughput.py --device cpu --preset cnn-arch1-M1 --n-train 4096 --per-device 1 2 \
        --checkpoint-every 1 --s3 --repeats 3
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from local_s3 import start_s3  # noqa: E402
from train_throughput import dataloader_baseline  # noqa: E402

from cvae_core import REPORT, preset_config  # noqa: E402
from cvae_core.cli import number  # noqa: E402
from cvae_core.layout import METRICS_FILE, read_metrics  # noqa: E402
from cvae_core.presets import PRESETS  # noqa: E402
from cvae_core.sources import DataError  # noqa: E402
from results.run_folder import RunFolder  # noqa: E402


def trial_epochs_per_second(run_dir: Path) -> float:
    """Epochs after each trial's first, over the span from the first warm-up end to the last end."""
    runs = [read_metrics(f.parent) for f in run_dir.glob(f"*/{METRICS_FILE}")]
    runs = [r for r in runs if len(r) >= 2]
    start = min(r[0]["time"] for r in runs)
    end = max(r[-1]["time"] for r in runs)
    return sum(len(r) - 1 for r in runs) / (end - start)


def through_ray(preset: str, k: int, data, epochs: int, batch_size: int, gpu: bool, storage: str,
                checkpoint_every: int) -> float:
    """`storage`: a folder or a URI (results.storage)."""
    import ray
    from ray import tune

    from search.trainable import run_trial
    from search.tuning import tune_storage

    run = RunFolder.at(f"{storage}/k{k}")
    cpus = max(1.0, (ray.cluster_resources().get("CPU", 1) // k))
    trainable = tune.with_parameters(
        run_trial, data=data, run_location=run.location, max_t=epochs, patience=epochs + 1,
        checkpoint_every=checkpoint_every, gpu_share=1 / k if gpu else 0.0, cpus=cpus,
    )
    resources = {"cpu": cpus, "gpu": 1 / k if gpu else 0}
    tuner = tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space={"preset": preset, "lr": REPORT.lr, "batch_size": batch_size},
        tune_config=tune.TuneConfig(num_samples=k, max_concurrent_trials=k),
        run_config=tune.RunConfig(name=run.name, **tune_storage(run), verbose=0),
    )
    tuner.fit()
    return trial_epochs_per_second(run.path)  # this node's mirror, for a URI: every trial ran here


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cnn-arch3-M3", choices=sorted(PRESETS), metavar="NAME")
    p.add_argument("--data", default=None)
    p.add_argument("--device", default=None, help="cpu to run without a GPU (default: cuda when present)")
    p.add_argument("--epochs", type=number(int, at_least=2), default=6, help="epochs per trial (the first is warm-up)")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--n-train", type=int, default=50000)
    p.add_argument("--per-device", type=int, nargs="+", default=[1, 2, 4, 8], help="trials sharing the device")
    p.add_argument("--checkpoint-every", type=int, default=None, help="epochs (default: the last epoch alone)")
    p.add_argument("--s3", action="store_true", help="also run each setting with the run folder in a local S3 server")
    p.add_argument("--repeats", type=int, default=1, help="with --s3: local and S3 runs of each setting, alternated")
    args = p.parse_args()
    every = args.checkpoint_every or args.epochs
    import ray
    import torch

    from cvae_core.data import load_data
    from cvae_core.training import resolve_device

    dev = resolve_device(args.device)
    gpu = dev.type == "cuda"
    data = load_data(args.data)
    data = replace(data, train_x=data.train_x[: args.n_train], train_y=data.train_y[: args.n_train],
                   test_x=data.test_x[:1024], test_y=data.test_y[:1024])
    x, y, vx = data.train_x, data.train_y, data.test_x
    name = torch.cuda.get_device_name(dev) if gpu else "cpu"
    print(f"{args.preset}, {len(x)} images, batch {args.batch_size}, {args.epochs} epochs per trial, device {name}")
    print(f"  (Ray trials also validate on {len(vx)} images every epoch and report to Tune)")

    base = dataloader_baseline(preset_config(args.preset), x, y, dev, 3, args.batch_size, REPORT.lr)
    base_rate = 1 / statistics.median(base[1:])
    print(f"  {'baseline: 1 DataLoader trial':<32} {base_rate:8.2f} trial-epochs/s   (training only)")

    with tempfile.TemporaryDirectory() as storage:
        # Before Ray starts: its workers take this environment (the S3 endpoint, the mirrors' folder).
        server, bucket = start_s3() if args.s3 else (None, None)
        os.environ["CVAE_SCRATCH"] = str(Path(storage) / "scratch")
        ray.init(num_gpus=torch.cuda.device_count() if gpu else 0, include_dashboard=False, log_to_driver=False)
        print(f"  (a checkpoint every {every} epoch(s))")
        for k in args.per_device:
            ratios = []
            for i in range(args.repeats if bucket is not None else 1):
                cpu = time.process_time()
                rate = through_ray(args.preset, k, data, args.epochs, args.batch_size, gpu, f"{storage}/{i}", every)
                print(f"  {f'{k} trial(s) per device via Ray':<32} {rate:8.2f} trial-epochs/s   "
                      f"({rate / base_rate:.1f}x baseline; driver: {time.process_time() - cpu:.1f} CPU-s)")
                if bucket is not None:
                    cpu = time.process_time()  # this process: Tune's driver, and the S3 server's threads
                    s3_rate = through_ray(args.preset, k, data, args.epochs, args.batch_size, gpu,
                                          f"{bucket}/runs/{i}", every)
                    ratios.append(s3_rate / rate)
                    print(f"  {'  the same, run folder on S3':<32} {s3_rate:8.2f} trial-epochs/s   "
                          f"({ratios[-1]:.2f}x the local disk; driver and S3 server: "
                          f"{time.process_time() - cpu:.1f} CPU-s)")
            if len(ratios) > 1:
                print(f"  {k} trial(s), S3 against the local disk over {len(ratios)} pairs: median "
                      f"{statistics.median(ratios):.2f}x (from {min(ratios):.2f}x to {max(ratios):.2f}x)")
        ray.shutdown()
        if server is not None:
            server.stop()


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: --data: {e}")
