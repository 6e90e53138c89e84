"""A training folder: the files `cvae_core.training.train` writes into its `out_dir`.

    metrics.jsonl    one JSON record per epoch (a resume first forgets those after its checkpoint)
    checkpoint.pt    everything needed to continue bit for bit
    best.pt          the kept weights and their ModelConfig
    grids/           reconstructions and prior samples, now and then
    config.json      the settings, when `python -m cvae_core.train` trained it
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from .atomic import read_records

METRICS_FILE = "metrics.jsonl"
CHECKPOINT_FILE = "checkpoint.pt"
BEST_FILE = "best.pt"
GRIDS_DIR = "grids"
CONFIG_FILE = "config.json"
SAMPLES_GRID = "epoch{:04d}_samples.png"  # in GRIDS_DIR: prior samples after that epoch
RECON_GRID = "epoch{:04d}_recon_{}.png"  # in GRIDS_DIR: a split's fixed images over their reconstructions
# Image grids and per-class plots show or name at most this many classes: CIFAR-100's 100 would not read.
GRID_CLASSES = 20


def read_metrics(folder: str | Path) -> list[dict[str, Any]]:
    """The epoch records of a training folder, one per epoch, in order."""
    by_epoch = {rec["epoch"]: rec for rec in read_records(Path(folder) / METRICS_FILE)}
    return [by_epoch[e] for e in sorted(by_epoch)]


def latest_samples_grid(folder: str | Path) -> Path | None:
    """The prior samples of a training folder's latest grid epoch, if it has drawn any."""
    grids = sorted((Path(folder) / GRIDS_DIR).glob(SAMPLES_GRID.replace("{:04d}", "*")))
    return grids[-1] if grids else None


def grids_after(folder: str | Path, epoch: int) -> list[Path]:
    """The grid files of a training folder drawn after `epoch` (either kind)."""
    return [p for p in (Path(folder) / GRIDS_DIR).glob("epoch*.png")
            if (m := re.match(r"epoch(\d+)_", p.name)) and int(m[1]) > epoch]
