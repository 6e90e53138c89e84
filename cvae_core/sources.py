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
    return Path(os.environ.get("CVAE_CACHE", Path.home() / ".cache" / "cvae_search"))


def default_source() -> str:
    return os.environ.get("CVAE_DATA", "cifar10")


def is_torchvision(source: str) -> bool:
    """True for "cifar10" / "cifar10:ROOT" (torchvision), False for a path."""
    return source == "cifar10" or source.startswith("cifar10:")


def absolute_source(source: str | None) -> str:
    """A path made absolute (trials and later commands run elsewhere); 'cifar10[:ROOT]' as is."""
    source = source if source is not None else default_source()
    if is_torchvision(source):
        return source
    return str(Path(source).expanduser().resolve())
