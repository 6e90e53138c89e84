"""`--data cifar10` and `--data cifar10:ROOT`: torchvision's CIFAR-10 files, when present, are read
as they are (no download), in torchvision's class order, and cached like any other source."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import CLASSES

from cvae_core.data import load_data

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
    """torchvision checks each file's MD5 against the real 170 MB download's: here a file that is
    there passes. Any download fails the test."""
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda path, md5=None: os.path.isfile(path))

    def no_download(*args, **kwargs):
        pytest.fail(f"the files are present, yet torchvision was asked to download {args}")

    monkeypatch.setattr(cifar, "download_and_extract_archive", no_download)


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
