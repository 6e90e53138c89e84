"""Seconds per training epoch: a DataLoader baseline vs the project's loop, in one run.

(a) baseline: a Dataset that turns each PIL image into a tensor with ToTensor(), a DataLoader
    with num_workers=2, fp32 -- the report's (and Ray's CIFAR example's) way;
(b) cvae_core.training.train: uint8 data resident on the device, batches indexed there.
Both run the same model, loss, optimiser and batch size; only the training steps are timed
(validation excluded), and the first epoch of each is warm-up.

    python bench/train_throughput.py --preset cnn-arch3-M3 --data ../shared/data/cifar10-jpeg.zip
    python bench/train_throughput.py --device cpu --n-train 2048 --epochs 3   # small, on a CPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import TYPE_CHECKING

from cvae_core import REPORT, Recipe, preset_config
from cvae_core.presets import PRESETS
from cvae_core.sources import DataError

if TYPE_CHECKING:  # torch is imported where it is used: --help and input errors skip it
    import torch


class PILDataset:
    # A map-style dataset as DataLoader takes it (torch.utils.data.Dataset's protocol, without the
    # class as its base, so that importing this module, as bench/search_throughput.py does, skips torch).
    def __init__(self, x_u8: torch.Tensor, y: torch.Tensor):
        from PIL import Image
        from torchvision.transforms import ToTensor

        self.images = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in x_u8]
        self.labels = y.tolist()
        self.to_tensor = ToTensor()

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.to_tensor(self.images[i]), self.labels[i]


def _sync(dev: torch.device) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def dataloader_baseline(cfg, x, y, dev, epochs, batch_size, lr) -> list[float]:
    import torch
    from torch.utils.data import DataLoader

    from cvae_core import build_model
    from cvae_core.losses import neg_elbo

    model = build_model(cfg).to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    loader = DataLoader(PILDataset(x, y), batch_size=batch_size, shuffle=True, num_workers=2,
                        drop_last=True, pin_memory=dev.type == "cuda", persistent_workers=True)
    times = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        for xb, yb in loader:
            xb, yb = xb.to(dev, non_blocking=True), yb.to(dev, non_blocking=True)
            logits, mu, logvar = model(xb, yb)
            loss = neg_elbo(logits, xb, mu, logvar)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return times


def project_loop(cfg, x, y, vx, vy, dev, epochs, batch_size, lr, compile) -> list[float]:
    from cvae_core.training import train

    times = []
    train(cfg, x, y, vx, vy, epochs=epochs, recipe=Recipe(lr=lr, batch_size=batch_size), patience=epochs + 1,
          device=dev, compile=compile, callback=lambda m, _: times.append(m["step_seconds"]))
    return times


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--preset", default="cnn-arch3-M3", choices=sorted(PRESETS), metavar="NAME")
    p.add_argument("--data", default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--epochs", type=int, default=5, help="timed epochs + 1 warm-up")
    p.add_argument("--batch-size", type=int, default=512)
    p.add_argument("--n-train", type=int, default=50000, help="training images used (fewer for a CPU)")
    p.add_argument("--compile", action="store_true", help="also time (b) with torch.compile")
    args = p.parse_args()
    import torch

    from cvae_core.data import load_data
    from cvae_core.training import resolve_device

    dev = resolve_device(args.device)
    cfg = preset_config(args.preset)
    data = load_data(args.data)
    x, y = data.train_x[: args.n_train], data.train_y[: args.n_train]
    vx, vy = data.test_x[:1024], data.test_y[:1024]
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{args.preset}, {len(x)} images, batch {args.batch_size}, device {name}, torch {torch.__version__}")

    def report(label, times):
        timed = times[1:] or times
        print(f"  {label:<34} {statistics.median(timed):8.3f} s/epoch  (median of {len(timed)})")
        return statistics.median(timed)

    epochs = args.epochs + 1
    base = report("(a) DataLoader + ToTensor, 2 workers",
                  dataloader_baseline(cfg, x, y, dev, epochs, args.batch_size, REPORT.lr))
    ours = report("(b) cvae_core.training.train",
                  project_loop(cfg, x, y, vx, vy, dev, epochs, args.batch_size, REPORT.lr, False))
    print(f"  speed-up (a)/(b): {base / ours:.2f}x")
    if args.compile:
        comp = report("(b) + torch.compile",
                      project_loop(cfg, x, y, vx, vy, dev, epochs, args.batch_size, REPORT.lr, True))
        print(f"  speed-up (a)/(b+compile): {base / comp:.2f}x")


if __name__ == "__main__":
    try:
        main()
    except DataError as e:
        sys.exit(f"error: --data: {e}")
