"""CIFAR-10-style data: decoded once to uint8 tensors, cached on disk, split for training.

Sources (`load_data(source)`):
- "cifar10" or "cifar10:ROOT": torchvision's CIFAR-10 under ROOT (downloaded when missing);
- a folder holding `train/<class>/*` and `test/<class>/*` images;
- a `.zip` of such a tree (e.g. shared/data/cifar10-jpeg.zip).
The default is $CVAE_DATA, else "cifar10". Class indices follow the sorted folder names,
which for CIFAR-10 is torchvision's order.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_torch_save
from .config import IMAGE_CHANNELS, IMAGE_SIZE, NUM_CLASSES
from .sources import SPLITS, TRAIN_ON, DataError, default_cache_dir, default_source, is_torchvision

CACHE_VERSION = 1


@dataclass(frozen=True)
class ImageData:
    """Images as uint8 (N, 3, 32, 32), labels as int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: str
    key: str  # names this exact version of the source (path, size, mtime): a cache key for derived data


# ---------------------------------------------------------------------------- sources


def _decode(raw: bytes, name: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(raw)) as im:
            size = im.size
            arr = np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        raise DataError(f"{name}: not a readable image (not a format Pillow can open)") from None
    except OSError as e:  # a truncated or corrupt image of a known format
        raise DataError(f"{name}: not a readable image ({e})") from None
    if size != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{name}: image is {size[0]}x{size[1]}, expected {IMAGE_SIZE}x{IMAGE_SIZE}")
    return arr


def _tree_entries(names: list[str], where: str) -> dict[str, dict[str, list[str]]]:
    """Group 'split/class/file' paths (and 'split/class/' folders) by split and class."""
    tree: dict[str, dict[str, list[str]]] = {s: {} for s in SPLITS}
    for name in names:
        parts = [p for p in name.split("/") if p]
        if not parts or parts[0] not in SPLITS:
            continue
        if len(parts) == 1:
            continue
        if len(parts) == 2 and name.endswith("/"):
            tree[parts[0]].setdefault(parts[1], [])
            continue
        if len(parts) != 3:
            raise DataError(f"{where}: {name} is not at split/class/file depth")
        tree[parts[0]].setdefault(parts[1], []).append(name)
    for split in SPLITS:
        if not tree[split]:
            raise DataError(f"{where}: no class folders under {split}/")
        for cls, files in tree[split].items():
            if not files:
                raise DataError(f"{where}: class folder {split}/{cls}/ is empty")
    if set(tree["train"]) != set(tree["test"]):
        diff = sorted(set(tree["train"]) ^ set(tree["test"]))
        raise DataError(f"{where}: train/ and test/ class folders differ: {diff}")
    if len(tree["train"]) != NUM_CLASSES:
        raise DataError(
            f"{where}: found {len(tree['train'])} class folders {sorted(tree['train'])}, "
            f"the models need {NUM_CLASSES}"
        )
    return tree


def _stack(tree, read, where: str) -> dict[str, torch.Tensor]:
    classes = sorted(tree["train"])
    out: dict[str, torch.Tensor] = {}
    for split in SPLITS:
        images, labels = [], []
        for label, cls in enumerate(classes):
            for name in sorted(tree[split][cls]):
                images.append(_decode(read(name), f"{where}/{name}"))
                labels.append(label)
        x = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_x"] = x
        out[f"{split}_y"] = torch.tensor(labels, dtype=torch.int64)
    return out


def _read_zip(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    try:
        zf = zipfile.ZipFile(path)
    except zipfile.BadZipFile as e:
        raise DataError(f"{path}: not a valid zip file ({e})") from None
    with zf:
        tree = _tree_entries(zf.namelist(), str(path))
        return _stack(tree, zf.read, str(path)), sorted(tree["train"])


def _read_folder(path: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    names = []
    for split in SPLITS:
        if not (path / split).is_dir():
            raise DataError(f"{path}: missing folder {split}/")
        for cls_dir in (path / split).iterdir():
            if cls_dir.is_dir():
                names.append(f"{split}/{cls_dir.name}/")
                names += [f"{split}/{cls_dir.name}/{f.name}" for f in cls_dir.iterdir()]
            else:
                raise DataError(f"{cls_dir}: expected only class folders under {split}/")
    tree = _tree_entries(names, str(path))
    return _stack(tree, lambda n: (path / n).read_bytes(), str(path)), sorted(tree["train"])


def _read_torchvision(root: Path, download: bool) -> tuple[dict[str, torch.Tensor], list[str]]:
    from torchvision.datasets import CIFAR10

    out = {}
    classes: list[str] = []
    for split in SPLITS:
        try:
            ds = CIFAR10(str(root), train=split == "train", download=download)
        except (RuntimeError, OSError) as e:  # not there and no download (no network: URLError)
            raise DataError(f"{root}: torchvision CIFAR-10 unavailable ({e}); give a zip or image folder instead") \
                from None
        out[f"{split}_x"] = torch.from_numpy(ds.data).permute(0, 3, 1, 2).contiguous()
        out[f"{split}_y"] = torch.tensor(ds.targets, dtype=torch.int64)
        classes = list(ds.classes)
    return out, classes


def _fingerprint(path: Path) -> str:
    """Path, sizes and mtimes of everything the source reads: any change re-decodes."""
    if path.is_file():
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    total, newest, count = 0, 0, 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(dirpath, f))
            total, newest, count = total + st.st_size, max(newest, st.st_mtime_ns), count + 1
    return f"{path.resolve()}|{count}|{total}|{newest}"


def _check_tensors(data: dict[str, torch.Tensor], n_classes: int, where: str) -> None:
    for split in SPLITS:
        y = data[f"{split}_y"]
        bad = ((y < 0) | (y >= n_classes)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{where}: {split} label {int(y[i])} at index {i} is outside [0, {n_classes})")
        x = data[f"{split}_x"]
        if x.dtype != torch.uint8 or tuple(x.shape[1:]) != (IMAGE_CHANNELS, IMAGE_SIZE, IMAGE_SIZE):
            raise DataError(
                f"{where}: {split} images are {x.dtype} {tuple(x.shape)}, expected uint8 (N, 3, 32, 32)"
            )


def _cache_file(kind: str, path: Path, cache: Path) -> Path | None:
    """Where the decoded tensors of this exact source version live; None if nothing to key on yet."""
    target = path / "cifar-10-batches-py" if kind == "torchvision" else path
    if not target.exists():
        return None
    key = hashlib.sha1(f"v{CACHE_VERSION}|{kind}|{_fingerprint(target)}".encode()).hexdigest()[:16]
    return cache / "data" / f"{path.name}-{key}.pt"


def load_data(
    source: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
    download: bool = True,
) -> ImageData:
    """Decode `source` once, cache the tensors on disk, and return them (see module doc)."""
    source = str(source if source is not None else default_source())
    if is_torchvision(source):
        root = Path(source.partition(":")[2] or default_cache_dir() / "torchvision").expanduser()
        kind, path = "torchvision", root
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{path}: data source does not exist")
        kind = "zip" if path.is_file() else "folder"

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    cache_file = _cache_file(kind, path, cache)
    if cache_file is not None and cache_file.exists():
        blob = torch.load(cache_file, weights_only=True)
        return ImageData(**blob["tensors"], classes=tuple(blob["classes"]), source=source, key=cache_file.stem)

    if kind == "zip":
        tensors, classes = _read_zip(path)
    elif kind == "folder":
        tensors, classes = _read_folder(path)
    else:
        tensors, classes = _read_torchvision(path, download)
    _check_tensors(tensors, len(classes), str(path))

    # torchvision may only now have downloaded the files the key is made of.
    cache_file = cache_file or _cache_file(kind, path, cache)
    atomic_torch_save({"tensors": tensors, "classes": classes}, cache_file)
    return ImageData(**tensors, classes=tuple(classes), source=source, key=cache_file.stem)


def split(data: ImageData, train_on: str = "train"):
    """(train_x, train_y, val_x, val_y). train_on="all" trains on train + test, as the report did;
    validation is always the test split."""
    if train_on == "train":
        return data.train_x, data.train_y, data.test_x, data.test_y
    if train_on == "all":
        return (
            torch.cat([data.train_x, data.test_x]),
            torch.cat([data.train_y, data.test_y]),
            data.test_x,
            data.test_y,
        )
    raise ValueError(f"{train_on=} must be one of {list(TRAIN_ON)}")
