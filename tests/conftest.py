"""Shared fixtures: small generated image trees and the real CIFAR-10 zip when present."""

from __future__ import annotations

import io
import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REAL_ZIP = Path(
    os.environ.get("CVAE_TEST_ZIP", Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip")
)


def png_bytes(label: int, i: int, size=(32, 32)) -> bytes:
    rng = np.random.default_rng(label * 1000 + i)
    arr = (rng.random((size[1], size[0], 3)) * 60 + label * 20).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, per_class: int = 3, classes=CLASSES) -> Path:
    """train/<class>/NNNN.png and test/<class>/NNNN.png with class-dependent colours."""
    for split in ("train", "test"):
        for label, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (d / f"{i:04d}.png").write_bytes(png_bytes(label, i))
    return root


def zip_tree(root: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(root.rglob("*")):
            zf.write(p, p.relative_to(root).as_posix() + ("/" if p.is_dir() else ""))
    return zip_path


@pytest.fixture(autouse=True)
def _private_cache(tmp_path_factory, monkeypatch):
    """Tests never touch the user's cache."""
    monkeypatch.setenv("CVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "tree")


@pytest.fixture(scope="session")
def real_data(tmp_path_factory):
    """The real CIFAR-10 (decoded once per test session), or a skip saying why."""
    if not REAL_ZIP.exists():
        pytest.skip(f"real CIFAR-10 zip not found at {REAL_ZIP} (set CVAE_TEST_ZIP)")
    from cvae_core.data import load_data

    return load_data(REAL_ZIP, cache_dir=tmp_path_factory.getbasetemp() / "cache")
