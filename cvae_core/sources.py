"""Naming data: source strings, the cache folder, the splits, and DataError.

Kept apart from cvae_core.data (which decodes images with torch) so that checking a command
line or a space file needs no heavy import.
"""

from __future__ import annotations

import os
from pathlib import Path

SPLITS = ("train", "test")
TRAIN_ON = ("train", "all")  # what trials train on: the train split, or train + test as the report did


class DataError(ValueError):
    """The data source is unusable; the message names the file or folder."""


def default_cache_dir() -> Path:
    return Path(os.environ.get("CVAE_CACHE", Path.home() / ".cache" / "cvae_search")).expanduser()


def default_source() -> str:
    return os.environ.get("CVAE_DATA", "cifar10")


# The --data names torchvision downloads (cvae_core.data reads each; docs/data.md).
TORCHVISION_NAMES = ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn")


def torchvision_name(source: str) -> str | None:
    """"mnist" for "mnist" or "mnist:ROOT" (one of TORCHVISION_NAMES), None for a path."""
    name = source.partition(":")[0]
    return name if name in TORCHVISION_NAMES else None


def torchvision_root(source: str) -> Path:
    """The folder torchvision keeps a NAME[:ROOT] source's files in: ROOT, else one under the cache."""
    return Path(source.partition(":")[2] or default_cache_dir() / "torchvision").expanduser()


def absolute_source(source: str | None) -> str:
    """The source with its path made absolute, since trials and later commands run in other folders:
    a zip or folder's path, or a torchvision NAME:ROOT's ROOT (a bare NAME stays bare)."""
    source = source if source is not None else default_source()
    if (name := torchvision_name(source)) is not None:
        return f"{name}:{torchvision_root(source).resolve()}" if source.partition(":")[2] else name
    return str(Path(source).expanduser().resolve())
