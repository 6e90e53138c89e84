"""Labelled image data: decoded once to uint8 tensors, cached on disk, split for training.

Sources (`load_data(source)`):
- "NAME" or "NAME:ROOT", NAME one of torchvision's cifar10, cifar100, mnist, fashion-mnist, svhn:
  its files under ROOT (downloaded when missing);
- a folder holding `train/<class>/*` and `test/<class>/*` images;
- a `.zip` of such a tree (e.g. shared/data/cifar10-jpeg.zip).
The default is $CVAE_DATA, else "cifar10". The data decides its shape: the classes (the sorted
folder names, which for CIFAR-10 is torchvision's order; at least 2), the square image size and
the channels (1 grayscale, 3 RGB), all checked before anything is cached.
"""

from __future__ import annotations

import hashlib
import io
import os
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .atomic import atomic_torch_save
from .config import CHANNELS, data_shape, image_size_problem
from .sources import (
    SPLITS,
    TORCHVISION_NAMES,
    TRAIN_ON,
    DataError,
    default_cache_dir,
    default_source,
    torchvision_name,
    torchvision_root,
)

CACHE_VERSION = 3  # 2: keys name the torchvision dataset (several share a ROOT); images of any shape; 3: file names


@dataclass(frozen=True)
class ImageData:
    """Images as uint8 (N, C, S, S) (C = 1 grayscale or 3 RGB, S the square size), labels as int64 (N,)."""

    train_x: torch.Tensor
    train_y: torch.Tensor
    test_x: torch.Tensor
    test_y: torch.Tensor
    classes: tuple[str, ...]
    source: str
    key: str  # names this exact version of the source (path, size, mtime): a cache key for derived data

    @property
    def image_size(self) -> int:
        return self.train_x.shape[-1]

    @property
    def channels(self) -> int:
        return self.train_x.shape[1]

    @property
    def shape(self) -> dict[str, int]:
        """What a model is built for (ModelConfig's DATA_FIELDS): image size, channels, classes."""
        return data_shape(self.image_size, self.channels, len(self.classes))


# ---------------------------------------------------------------------------- sources

# Pillow's one-channel modes (bilevel, 8-bit, 32-bit int, float); 16-bit ones start with "I;16".
# Every other mode (RGBA, P, CMYK, LA, ...) is read as RGB.
GRAY_MODES = ("1", "L", "I", "F")
# Pillow's convert("L") clips at 255, which would turn most of a 16-bit image's pixels white: these
# are scaled instead. A 16-bit PGM opens as mode "I", its values stretched to 0..65535 whatever its
# maxval; so does a 16-bit PNG before Pillow 10.3 (pyproject allows 10.1).
SIXTEEN_BIT = 65535
# What a file that cannot be read at all raises (rather than a bad image in it): an unreadable or
# vanished file, a zip member with a bad CRC, an encrypted one, a compression zipfile cannot undo.
READ_ERRORS = (OSError, zipfile.BadZipFile, RuntimeError, NotImplementedError, EOFError, zlib.error)


def _decode(raw: bytes, name: str) -> np.ndarray:
    """One image as uint8 (H, W, C): C = 1 for a grayscale mode, else 3 (RGB)."""
    try:
        with Image.open(io.BytesIO(raw)) as im:
            if im.mode.startswith("I;16") or (im.mode == "I" and im.format in ("PPM", "PNG")):
                wide = np.asarray(im).astype(np.int64)
                return ((wide * 255 + SIXTEEN_BIT // 2) // SIXTEEN_BIT).astype(np.uint8)[..., None]
            if im.mode in ("I", "F"):
                _check_wide_values(np.asarray(im), im.mode, name)
            if im.mode in GRAY_MODES:
                return np.asarray(im.convert("L"))[..., None]
            return np.asarray(im.convert("RGB"))
    except UnidentifiedImageError:  # its message names the in-memory buffer, not the file
        raise DataError(f"{name}: not a readable image (not a format Pillow can open)") from None
    except (OSError, Image.DecompressionBombError) as e:  # a truncated or corrupt image, or one far too large
        raise DataError(f"{name}: not a readable image ({e})") from None


def _check_wide_values(values: np.ndarray, mode: str, name: str) -> None:
    """A 32-bit integer or float image is read as 8-bit values as they are, so they must be 0..255:
    outside, Pillow would clip them; a float image within [0, 1] would read as black."""
    low, high = float(values.min()), float(values.max())
    normalised = mode == "F" and 0 < high <= 1.0  # a 0/1 mask too: as 8-bit values, black
    if low < 0 or high > 255 or normalised:
        kind = "32-bit integer" if mode == "I" else "float"
        raise DataError(f"{name}: {kind} image with values from {low:g} to {high:g}; images are read as "
                        "8-bit values 0..255 (save it as an 8- or 16-bit image)")


def _describe(shape: tuple[int, ...]) -> str:
    h, w, c = shape
    return f"{w}x{h} {'grayscale' if c == 1 else 'RGB'}"


def _check_image(shape: tuple[int, ...], first: tuple[int, ...] | None, name: str) -> None:
    """Refuse an image the models cannot take, or one unlike the first: one tensor holds them all."""
    h, w = shape[:2]
    if w != h:
        raise DataError(f"{name}: image is {w}x{h}, not square; the models take square images")
    if first is None:
        if problem := image_size_problem(w):
            raise DataError(f"{name}: {problem}")
    elif shape != first:
        raise DataError(f"{name}: {_describe(shape)}, but earlier images are {_describe(first)}")


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
        if len(parts) != 3 or name.endswith("/"):
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
    if len(tree["train"]) < 2:
        raise DataError(f"{where}: one class folder, train/{next(iter(tree['train']))}/; a class-conditional "
                        "model needs at least 2 classes (one folder per class under train/ and test/)")
    return tree


def _stack(tree, read, where: str) -> dict[str, torch.Tensor]:
    classes = sorted(tree["train"])
    out: dict[str, torch.Tensor] = {}
    first = None  # the first image's (H, W, C): every other must match it
    for split in SPLITS:
        images, labels = [], []
        for label, cls in enumerate(classes):
            for name in sorted(tree[split][cls]):
                try:
                    raw = read(name)
                except READ_ERRORS as e:
                    raise DataError(f"{where}/{name}: cannot be read ({e})") from None
                image = _decode(raw, f"{where}/{name}")
                _check_image(image.shape, first, f"{where}/{name}")
                first = first or image.shape
                images.append(image)
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


def _folder_names(path: Path) -> list[str]:
    """The 'split/class/' folders and 'split/class/file' paths a folder source reads (links
    followed): what it decodes and what its cache key is made of, so both see the same files."""
    names = []
    for split in SPLITS:
        if not (path / split).is_dir():
            raise DataError(f"{path}: missing folder {split}/")
        for cls_dir in sorted((path / split).iterdir()):
            if not cls_dir.is_dir():
                raise DataError(f"{cls_dir}: expected only class folders under {split}/")
            names.append(f"{split}/{cls_dir.name}/")
            for f in sorted(cls_dir.iterdir()):
                names.append(f"{split}/{cls_dir.name}/{f.name}" + ("/" if f.is_dir() else ""))
    return names


def _read_folder(path: Path, names: list[str]) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The images `names` (_folder_names) of a folder source."""
    tree = _tree_entries(names, str(path))
    return _stack(tree, lambda n: (path / n).read_bytes(), str(path)), sorted(tree["train"])


@dataclass(frozen=True)
class _Torchvision:
    """How one of torchvision's datasets is opened and how it holds its images."""

    title: str  # its name in messages
    dataset: str  # its class in torchvision.datasets
    files: tuple[str, ...]  # what its download leaves under ROOT: the cache key's fingerprint
    layout: str  # its images' axes: "NHWC", "NCHW", or "NHW" (grayscale)
    labels: str = "targets"  # the attribute holding its labels
    by_split: bool = False  # opened with split="train"/"test" rather than train=True/False
    classes: tuple[str, ...] = ()  # its class names, where torchvision gives none


TORCHVISION = {
    "cifar10": _Torchvision("CIFAR-10", "CIFAR10", ("cifar-10-batches-py",), "NHWC"),
    "cifar100": _Torchvision("CIFAR-100", "CIFAR100", ("cifar-100-python",), "NHWC"),  # the 100 fine labels
    "mnist": _Torchvision("MNIST", "MNIST", ("MNIST",), "NHW"),
    "fashion-mnist": _Torchvision("Fashion-MNIST", "FashionMNIST", ("FashionMNIST",), "NHW"),
    # torchvision gives the digit 0 label 0 (10 in SVHN's files), so label i is the digit i
    "svhn": _Torchvision("SVHN", "SVHN", ("train_32x32.mat", "test_32x32.mat"), "NCHW", labels="labels",
                         by_split=True, classes=tuple("0123456789")),
}


def _read_torchvision(name: str, root: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    from torchvision import datasets  # its attribute looked up here, so that a test can stand in for it

    spec = TORCHVISION[name]
    out = {}
    for split in SPLITS:
        which = {"split": split} if spec.by_split else {"train": split == "train"}
        try:
            ds = getattr(datasets, spec.dataset)(str(root), download=True, **which)
        except (RuntimeError, OSError) as e:  # not there, and no network to download it (URLError)
            reason = " ".join(str(e).split())  # MNIST's names each mirror on a line of its own
            raise DataError(f"{root}: torchvision {spec.title} unavailable ({reason}); "
                            "give a zip or image folder instead") from None
        x = torch.as_tensor(np.asarray(ds.data))
        if spec.layout == "NHW":  # grayscale: one channel
            x = x.unsqueeze(1)
        elif spec.layout == "NHWC":
            x = x.permute(0, 3, 1, 2)
        out[f"{split}_x"] = x.contiguous()
        out[f"{split}_y"] = torch.as_tensor(np.asarray(getattr(ds, spec.labels)), dtype=torch.int64)
    return out, list(spec.classes or ds.classes)


def _every_file(path: Path) -> list[str]:
    """Every file under a folder torchvision left (its own layout), as paths relative to it."""
    names = []
    for dirpath, dirs, files in os.walk(path):
        dirs.sort()  # os.walk's order is the file system's
        names += [f"{os.path.relpath(dirpath, path)}/{f}" for f in sorted(files)]  # "./f" at the top, as keyed
    return names


def _walk_order(name: str) -> tuple[list[str], str]:
    """Where os.walk, its folders sorted, meets the file `name` (_every_file's form): by folder,
    part by part ("cat" before "cat-2", whose files sort first as whole paths), a folder's files
    before its subfolders', the top folder's first."""
    folder, _, file = name.rpartition("/")
    return ([] if folder == "." else folder.split("/")), file


def _fingerprint(path: Path, names: list[str] | None = None) -> str:
    """Path, and the name, size and mtime of every file under a folder and of those the source
    reads through links (`names`): any change re-decodes (an image moved to another class folder
    keeps its size and mtime, not its name)."""
    if path.is_file():
        st = path.stat()
        return f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}"
    files = hashlib.sha1()
    # The files os.walk lists, in its order, as every folder was keyed before links were followed
    # (so its cache stays valid), and the files behind a linked class folder, which it does not list.
    listed = _every_file(path)
    if names is not None:
        listed = sorted(set(listed) | {n for n in names if not n.endswith("/")}, key=_walk_order)
    for name in listed:
        try:
            st = (path / name).stat()
        except OSError as e:  # a broken link
            raise DataError(f"{path}/{name}: cannot be read ({e.strerror})") from None
        files.update(f"{name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return f"{path.resolve()}|{files.hexdigest()}"


def _check_tensors(data: dict[str, torch.Tensor], n_classes: int, where: str) -> None:
    """What torchvision's files gave (a folder's images were checked one by one): labels in
    range, uint8 (N, C, S, S) images the models take, one shape for both splits."""
    for split in SPLITS:
        y = data[f"{split}_y"]
        bad = ((y < 0) | (y >= n_classes)).nonzero()
        if len(bad):
            i = int(bad[0])
            raise DataError(f"{where}: {split} label {int(y[i])} at index {i} is outside [0, {n_classes})")
        x = data[f"{split}_x"]
        if x.dtype != torch.uint8 or x.ndim != 4 or x.shape[1] not in CHANNELS or x.shape[2] != x.shape[3]:
            raise DataError(f"{where}: {split} images are {x.dtype} {tuple(x.shape)}, expected uint8 "
                            f"(N, C, S, S) with C one of {list(CHANNELS)} (grayscale, RGB)")
        if problem := image_size_problem(x.shape[-1]):
            raise DataError(f"{where}: {problem}")
    if data["train_x"].shape[1:] != data["test_x"].shape[1:]:
        raise DataError(f"{where}: train images are {tuple(data['train_x'].shape[1:])}, "
                        f"test images {tuple(data['test_x'].shape[1:])}")


def _cache_file(kind: str, path: Path, cache: Path, names: list[str] | None) -> Path | None:
    """Where the decoded tensors of this exact source version live; None if nothing to key on yet.
    The key holds the kind ("zip", "folder" or the torchvision name: several share one ROOT) and
    the path, sizes and mtimes of what is read, so no two sources or versions share a file."""
    targets = [path / f for f in TORCHVISION[kind].files] if kind in TORCHVISION else [path]
    if not all(t.exists() for t in targets):
        return None
    fingerprint = "|".join(_fingerprint(t, names) for t in targets)
    key = hashlib.sha1(f"v{CACHE_VERSION}|{kind}|{fingerprint}".encode()).hexdigest()[:16]
    return cache / "data" / f"{kind if kind in TORCHVISION else path.name}-{key}.pt"


def _read(kind: str, path: Path, names: list[str] | None) -> tuple[dict[str, torch.Tensor], list[str]]:
    if kind == "zip":
        return _read_zip(path)
    if kind == "folder":
        return _read_folder(path, names)
    return _read_torchvision(kind, path)


def load_data(
    source: str | os.PathLike | None = None,
    *,
    cache_dir: str | os.PathLike | None = None,
) -> ImageData:
    """Decode `source` once, cache the tensors on disk, and return them (see module doc)."""
    source = str(source if source is not None else default_source())
    if (name := torchvision_name(source)) is not None:
        kind, path = name, torchvision_root(source)
    else:
        path = Path(source).expanduser()
        if not path.exists():
            raise DataError(f"{path}: data source does not exist (a zip or folder of images, or one of "
                            f"{', '.join(TORCHVISION_NAMES)})")
        kind = "zip" if path.is_file() else "folder"

    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    names = _folder_names(path) if kind == "folder" else None  # listed once: the key's files are the ones read
    cache_file = _cache_file(kind, path, cache, names)
    if cache_file is not None and cache_file.exists():
        blob = torch.load(cache_file, weights_only=True)
        return ImageData(**blob["tensors"], classes=tuple(blob["classes"]), source=source, key=cache_file.stem)

    tensors, classes = _read(kind, path, names)
    _check_tensors(tensors, len(classes), str(path))
    if kind in TORCHVISION:  # torchvision may only now have downloaded the files the key is made of
        cache_file = _cache_file(kind, path, cache, names)
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
