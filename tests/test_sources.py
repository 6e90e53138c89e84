"""`--data NAME` and `--data NAME:ROOT` for torchvision's cifar10, cifar100, mnist, fashion-mnist and
svhn: their files, when present, are read as they are (no download; each written here, tiny, in
torchvision's on-disk layout), in torchvision's class order, and cached like any other source."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES

from cvae_core.data import TORCHVISION, load_data
from cvae_core.sources import TORCHVISION_NAMES, DataError, absolute_source, torchvision_name

PER_BATCH, TEST = 6, 10  # images per data_batch_N (5 of them) and in test_batch


def _batch(seed: int, n: int) -> dict:
    rng = np.random.default_rng(seed)
    # torchvision's layout: each row one image, its 1024 red values, then green, then blue (CHW)
    return {"data": rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8),
            "labels": [int(v) for v in rng.integers(0, 10, n)], "batch_label": f"batch {seed}"}


def torchvision_folder(root: Path) -> tuple[np.ndarray, list[int], np.ndarray, list[int]]:
    """ROOT/cifar-10-batches-py as torchvision's download leaves it, with tiny batches; returns the
    train and test images (N, 3, 32, 32) and labels written."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {f"data_batch_{i}": _batch(i, PER_BATCH) for i in range(1, 6)} | {"test_batch": _batch(9, TEST)}
    for name, batch in batches.items():
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": CLASSES, "num_vis": 3072}))
    train = [batches[f"data_batch_{i}"] for i in range(1, 6)]
    return (np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32), sum((b["labels"] for b in train), []),
            batches["test_batch"]["data"].reshape(-1, 3, 32, 32), batches["test_batch"]["labels"])


@pytest.fixture
def offline_torchvision(monkeypatch):
    """torchvision checks each file's MD5 against the real download's: here a file that is there
    passes. Any download fails the test."""
    from torchvision.datasets import cifar, mnist, svhn

    def no_download(*args, **kwargs):
        pytest.fail(f"the files are present, yet torchvision was asked to download {args}")

    def download_url(url, root, filename, md5=None):  # SVHN always calls it: it returns when the file is there
        if not os.path.isfile(os.path.join(root, filename)):
            no_download(url)

    for module in (cifar, mnist, svhn):
        monkeypatch.setattr(module, "check_integrity", lambda path, md5=None: os.path.isfile(path))
    monkeypatch.setattr(cifar, "download_and_extract_archive", no_download)
    monkeypatch.setattr(mnist, "download_and_extract_archive", no_download)
    monkeypatch.setattr(svhn, "download_url", download_url)


@pytest.mark.parametrize("named", ["cifar10:ROOT", "cifar10"])
def test_torchvision_files_that_are_present_are_loaded_as_they_are_and_cached(tmp_path, monkeypatch,
                                                                             offline_torchvision, named):
    monkeypatch.setenv("CVAE_CACHE", str(tmp_path / "cache"))
    if named == "cifar10":  # the default root: under $CVAE_CACHE
        root, source = tmp_path / "cache" / "torchvision", "cifar10"
    else:
        root = tmp_path / "my data"
        source = f"cifar10:{root}"
    train_x, train_y, test_x, test_y = torchvision_folder(root)

    data = load_data(source)
    assert data.source == source and data.classes == tuple(CLASSES)
    assert data.train_x.dtype == torch.uint8 and data.train_x.shape == (5 * PER_BATCH, 3, 32, 32)
    assert np.array_equal(data.train_x.numpy(), train_x) and data.train_y.tolist() == train_y
    assert np.array_equal(data.test_x.numpy(), test_x) and data.test_y.tolist() == test_y
    assert data.train_y.dtype == torch.int64

    # Decoded once: the second load reads the cache, even with torchvision unable to read the files.
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda *a, **k: pytest.fail("read the files again"))
    again = load_data(source)
    assert again.key == data.key and torch.equal(again.train_x, data.train_x)


def test_the_train_command_trains_on_torchvision_files(tmp_path, offline_torchvision, capsys):
    from cvae_core.train import main

    root = tmp_path / "tv"
    torchvision_folder(root)
    out = tmp_path / "run"
    code = main(["--preset", "mlp-M1", "--data", f"cifar10:{root}", "--out", str(out), "--epochs", "1",
                 "--batch-size", "10", "--device", "cpu", "--grid-every", "0"])
    assert code == 0, capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["args"]["data"] == f"cifar10:{root}"
    assert (out / "best.pt").exists() and "stopped (max_epochs) after 1 epochs" in capsys.readouterr().out


# ---------------------------------------------------------------------------- the other torchvision names

N_TRAIN, N_TEST = 7, 5


def cifar100_folder(root: Path) -> dict:
    """ROOT/cifar-100-python: train, test and meta, as CIFAR-10's batches but with 100 fine labels."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng, out = np.random.default_rng(100), {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        data, labels = rng.integers(0, 256, (n, 3 * 32 * 32), dtype=np.uint8), rng.integers(0, 100, n).tolist()
        (folder / split).write_bytes(pickle.dumps({"data": data, "fine_labels": labels,
                                                   "coarse_labels": [v // 5 for v in labels]}))
        out[split] = (data.reshape(-1, 3, 32, 32), labels)
    names = [f"fine{i:03d}" for i in range(100)]
    (folder / "meta").write_bytes(pickle.dumps({"fine_label_names": names, "coarse_label_names": names[:20]}))
    return out | {"classes": names}


def idx_file(path: Path, arr: np.ndarray) -> None:
    """MNIST's IDX format: zero, zero, the type (8: uint8), the rank, each size big-endian, the bytes."""
    header = bytes([0, 0, 8, arr.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in arr.shape)
    path.write_bytes(header + arr.astype(np.uint8).tobytes())


def mnist_folder(root: Path, folder: str = "MNIST", seed: int = 28) -> dict:
    """ROOT/<folder>/raw/*-ubyte as torchvision's MNIST and FashionMNIST leave them, uncompressed."""
    raw = root / folder / "raw"
    raw.mkdir(parents=True)
    rng, out = np.random.default_rng(seed), {}
    for split, prefix, n in (("train", "train", N_TRAIN), ("test", "t10k", N_TEST)):
        images, labels = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8), rng.integers(0, 10, n)
        idx_file(raw / f"{prefix}-images-idx3-ubyte", images)
        idx_file(raw / f"{prefix}-labels-idx1-ubyte", labels)
        out[split] = (images[:, None], labels.tolist())  # one channel
    return out


def svhn_files(root: Path) -> dict:
    """ROOT/train_32x32.mat and test_32x32.mat: X as (H, W, C, N), y as (N, 1) with the digit 0 as 10."""
    from scipy.io import savemat

    root.mkdir(parents=True)
    rng, out = np.random.default_rng(32), {}
    for split, n in (("train", N_TRAIN), ("test", N_TEST)):
        x, digits = rng.integers(0, 256, (32, 32, 3, n), dtype=np.uint8), np.arange(n) % 10
        savemat(root / f"{split}_32x32.mat", {"X": x, "y": np.where(digits == 0, 10, digits)[:, None]})
        out[split] = (x.transpose(3, 2, 0, 1), digits.tolist())  # (N, C, H, W)
    return out


FASHION = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
DIGITS = ("0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six", "7 - seven",
          "8 - eight", "9 - nine")
WRITERS = {  # name: (writer, shape of one image, class names; None: the writer's)
    "cifar100": (cifar100_folder, (3, 32, 32), None),
    "mnist": (mnist_folder, (1, 28, 28), DIGITS),
    "fashion-mnist": (lambda root: mnist_folder(root, "FashionMNIST"), (1, 28, 28), FASHION),
    "svhn": (svhn_files, (3, 32, 32), tuple("0123456789")),
}


@pytest.mark.parametrize("name", list(WRITERS))
def test_each_torchvision_name_gives_its_images_labels_and_classes(tmp_path, offline_torchvision, name):
    write, image_shape, classes = WRITERS[name]
    written = write(tmp_path / "tv")
    data = load_data(f"{name}:{tmp_path / 'tv'}", cache_dir=tmp_path / "cache")
    assert data.classes == (classes or tuple(written["classes"]))
    assert (data.channels, data.image_size) == (image_shape[0], image_shape[1])
    for split in ("train", "test"):
        x, y = getattr(data, f"{split}_x"), getattr(data, f"{split}_y")
        assert x.dtype == torch.uint8 and x.shape[1:] == image_shape and y.dtype == torch.int64
        assert np.array_equal(x.numpy(), written[split][0]) and y.tolist() == written[split][1]


def test_two_torchvision_names_under_one_root_never_share_a_cache_file(tmp_path, offline_torchvision, monkeypatch):
    # The same bytes as MNIST and as Fashion-MNIST: only the name tells them apart.
    mnist_folder(tmp_path / "tv", "MNIST", seed=1)
    mnist_folder(tmp_path / "tv", "FashionMNIST", seed=1)
    cache = tmp_path / "cache"
    digits = load_data(f"mnist:{tmp_path / 'tv'}", cache_dir=cache)
    clothes = load_data(f"fashion-mnist:{tmp_path / 'tv'}", cache_dir=cache)
    assert digits.key != clothes.key and digits.key.startswith("mnist-") and clothes.key.startswith("fashion-mnist-")
    assert len(list((cache / "data").glob("*.pt"))) == 2

    import torchvision.datasets  # from here on from the cache, each with its own classes

    for cls in ("MNIST", "FashionMNIST"):
        monkeypatch.setattr(torchvision.datasets, cls, lambda *a, **k: pytest.fail("read the files again"))
    assert load_data(f"mnist:{tmp_path / 'tv'}", cache_dir=cache).classes == DIGITS
    assert load_data(f"fashion-mnist:{tmp_path / 'tv'}", cache_dir=cache).classes == FASHION


@pytest.mark.parametrize("name, title", [("cifar100", "CIFAR-100"), ("mnist", "MNIST"),
                                         ("fashion-mnist", "Fashion-MNIST"), ("svhn", "SVHN")])
def test_a_torchvision_name_that_cannot_be_downloaded_is_one_line(tmp_path, monkeypatch, name, title):
    from urllib.error import URLError

    from torchvision.datasets import cifar, mnist, svhn

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    for module, download in ((cifar, "download_and_extract_archive"), (mnist, "download_and_extract_archive"),
                             (svhn, "download_url")):
        monkeypatch.setattr(module, download, offline)
    with pytest.raises(DataError) as e:
        load_data(f"{name}:{tmp_path / 'tv'}", cache_dir=tmp_path / "cache")
    message = str(e.value)
    assert message.startswith(f"{tmp_path / 'tv'}: torchvision {title} unavailable (") and "\n" not in message
    assert "Name or service not known" in message and message.endswith("; give a zip or image folder instead")
    assert not (tmp_path / "cache").exists()


def test_every_torchvision_name_is_known_without_torch(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ("cifar10", "cifar100", "mnist", "fashion-mnist", "svhn"):
        assert torchvision_name(name) == torchvision_name(f"{name}:/data") == torchvision_name(f"{name}:x") == name
        assert absolute_source(name) == name  # its root decided when loading: $CVAE_CACHE's
        assert absolute_source(f"{name}:rel/tv") == f"{name}:{tmp_path / 'rel' / 'tv'}"  # trials run elsewhere
    for path in ("mnist.zip", "data/svhn", "cifar10-jpeg.zip", "emnist"):
        assert torchvision_name(path) is None and absolute_source(path) == str(tmp_path / path)
    assert set(TORCHVISION) == set(TORCHVISION_NAMES)  # each name is read by cvae_core.data
    code = "import sys, cvae_core.sources; assert 'torch' not in sys.modules, 'torch imported'"
    assert subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True).returncode == 0
