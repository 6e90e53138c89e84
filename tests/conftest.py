"""Shared fixtures: small generated image trees and the real CIFAR-10 zip when present."""

from __future__ import annotations

import io
import json
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


@pytest.fixture
def scored_run(tmp_path):
    """A run folder as the final stage leaves it (2 finalists, both samplers), built in-process:
    the same finalist_job Ray runs, with the tiny extractor and no Ray."""
    import torch
    from cli import tiny_space

    from cvae_core.data import load_data
    from results.leaderboard import write_leaderboard
    from search.final import finalist_job
    from search.record import record
    from search.space import load_space

    source = make_tree(tmp_path / "tree", per_class=4)
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    spec = load_space(tiny_space(tmp_path, final={"top_k": 2}))
    (run_dir / "space.yaml").write_text((tmp_path / "space.yaml").read_text())
    record(run_dir, str(source))
    data = load_data(source)
    for trial_id, lr in (("aaaa0001", 3e-3), ("aaaa0002", 1e-2)):
        trial_dir = run_dir / f"mlp_{trial_id}"
        trial_dir.mkdir()
        config = {"batch_size": 40, "family": "mlp", "latent": 4, "lr": lr, "mlp_layers": 1, "mlp_width": 32}
        (trial_dir / "params.json").write_text(json.dumps(config))
        trial = {"trial_id": trial_id, "trial_dir": str(trial_dir), "objective": "fid", "score": 100.0}
        finalist_job(trial, 0, data, "train", spec.final,
                     str(run_dir), "t", cpus=torch.get_num_threads())
    write_leaderboard(run_dir)
    return run_dir
