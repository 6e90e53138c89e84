"""Shared fixtures: small generated image trees and the real CIFAR-10 zip when present."""

from __future__ import annotations

import fcntl
import io
import json
import os
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest_plugins = ("buckets",)  # real S3 and GCS endpoints and a bucket per test (tests/buckets.py)

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
REAL_ZIP = Path(
    os.environ.get("CVAE_TEST_ZIP", Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpeg.zip")
)


def png_bytes(label: int, i: int, size=(32, 32), mode: str = "RGB") -> bytes:
    """A (width, height) PNG in Pillow's `mode` ("L": grayscale) whose colours depend on the label."""
    rng = np.random.default_rng(label * 1000 + i)
    arr = (rng.random((size[1], size[0], 3)) * 60 + label * 20).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).convert(mode).save(buf, format="PNG")
    return buf.getvalue()


def make_tree(root: Path, per_class: int = 3, classes=CLASSES, size: int = 32, mode: str = "RGB") -> Path:
    """train/<class>/NNNN.png and test/<class>/NNNN.png, size x size in Pillow's `mode`, with
    class-dependent colours."""
    for split in ("train", "test"):
        for label, cls in enumerate(classes):
            d = root / split / cls
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_class):
                (d / f"{i:04d}.png").write_bytes(png_bytes(label, i, (size, size), mode))
    return root


def zip_tree(root: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w") as zf:
        for p in sorted(root.rglob("*")):
            zf.write(p, p.relative_to(root).as_posix() + ("/" if p.is_dir() else ""))
    return zip_path


@pytest.fixture(autouse=True, scope="session")
def _quiet_machine(tmp_path_factory):
    """Tests never touch the user's cache, and torch uses one thread: a loaded machine does not
    turn a fast suite slow. What the packages log is printed as the commands print it, whether or
    not a test ran a command first."""
    import torch

    from cvae_core.cli import show_logs

    show_logs()
    torch.set_num_threads(1)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CVAE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
        yield


@pytest.fixture(scope="session")
def ray_session(_quiet_machine):
    """One local Ray cluster for the commands run `in_process` (tests/cli.py): the first command
    starts it, as `connect` does, the later ones keep it; it ends with the session. Not started
    before: an idle cluster costs about 2 CPU-s a minute."""
    yield
    import ray

    ray.shutdown()


# The longest files, handed out in this order. pytest-xdist gives a worker its next file as soon as
# 2 or fewer of its tests are left, so the one-test test_interrupts.py takes test_cluster.py along
# at the start and the other worker takes test_run.py. Measured in parallel on 2 cores: 151, 89, 66,
# 113, 104 and 87 s, and the two workers ended 0.2 s apart.
LONGEST_FIRST = ("test_interrupts.py", "test_run.py", "test_cluster.py", "test_metrics.py", "test_final.py",
                 "test_bench.py")


def pytest_collection_modifyitems(items):
    """The longest files first, then the other slow tests, then the quick ones: run in parallel
    (docs/testing.md), the workers are handed the long work first and so end together."""
    def order(item):
        name = item.path.name
        return (LONGEST_FIRST.index(name) if name in LONGEST_FIRST else len(LONGEST_FIRST),
                item.get_closest_marker("slow") is None)

    items.sort(key=order)


@pytest.fixture
def all_cores():
    """For a test whose time is torch's own compute (real Inception): every core this test process
    has to itself (its share when pytest-xdist's workers divide the machine), not one."""
    import torch

    threads = torch.get_num_threads()
    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", 1))
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // workers))
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_tree(tmp_path / "tree")


def shared_dir(tmp_path_factory, name: str) -> Path:
    """A folder of this test run that every pytest-xdist worker sees."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / name


@pytest.fixture(scope="session")
def real_data(tmp_path_factory):
    """The real CIFAR-10 (decoded once per test run), or a skip saying why."""
    if not REAL_ZIP.exists():
        pytest.skip(f"real CIFAR-10 zip not found at {REAL_ZIP} (set CVAE_TEST_ZIP)")
    from cvae_core.data import load_data

    with open(shared_dir(tmp_path_factory, "real-data.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one pytest-xdist worker decodes, the others read its cache
        return load_data(REAL_ZIP, cache_dir=shared_dir(tmp_path_factory, "real-data"))


def trial_row(trial_id: str, config: dict, score: float = 100.0, seed: int = 0) -> dict:
    """A row of trials.parquet, as much of it as the final stage reads, for a sampled `config`
    that trained with `seed`."""
    from search.space import trial_config

    trial = trial_config(config)
    return {"trial_id": trial_id, "trial_dir": f"/runs/t/{trial.model.family}_{trial_id}",
            "config": json.dumps(trial.to_dict()), "objective": "fid", "score": score, "seed": seed}


# A space section with every kind of distribution, MLP and CNN trials alike.
MIXED_SPACE = {
    "family": {"choice": ["mlp", "cnn"]},
    "conv": {"layers": {"int": [2, 3]}, "channels": {"choice": [8, 16]},
             "kernel_size": {"choice": [3, 4, 5]}, "stride": 2, "padding": 1},
    "h": 64,
    "mlp": {"layers": 2, "width": 128},
    "latent": {"int": [4, 16]},
    "lr": {"loguniform": [1e-4, 1e-2]},
    "batch_size": {"choice": [64, 128]},
    "beta": {"uniform": [0.5, 1.0]},
}

# cnn and resnet trials in one space: a group's own norm and activation for resnet trials alone.
CNN_RESNET_SPACE = {
    "family": {"choice": ["cnn", "resnet"]},
    "conv": {"layers": 2, "channels": 8, "kernel_size": 4, "stride": 2, "padding": 1},
    "h": 32,
    "label": {"choice": ["index", "onehot"]},
    "resnet": {"width": {"choice": [4, 8]}, "scales": {"int": [2, 3]}, "blocks": 1,
               "upsample": {"choice": ["nearest", "transposed"]}, "cond_norm": {"choice": [False, True]},
               "norm": {"choice": ["batch", "group"]}, "activation": "silu"},
    "norm": "batch",
    "latent": {"choice": [4, 8]},
    "lr": {"loguniform": [1e-3, 1e-2]},
    "batch_size": 40,
    "ema": {"choice": [0.0, 0.9]},
    "weight_decay": {"choice": [0.0, 1e-4]},
    "likelihood": "gaussian_learned",
}


TINY_TWO_STAGE = {"width": 16, "layers": 2, "epochs": 5}  # a second VAE fitted in a fraction of a second

MLP_TRIAL = {"batch_size": 40, "family": "mlp", "latent": 4, "mlp_layers": 1, "mlp_width": 32}


def finished_search(tmp_path: Path, data_dir: Path, final: dict) -> Path:
    """A run folder as a finished search leaves it for the final stage, written by hand: the
    space, the data source and trials.parquet (two finished trials), without running a search."""
    import pandas as pd
    from cli import tiny_space

    from cvae_core.data import load_data
    from results.run_folder import RunFolder

    run = RunFolder(tmp_path / "runs" / "t")
    run.path.mkdir(parents=True)
    run.space_file.write_text(tiny_space(tmp_path, final=final).read_text())
    run.record_data(str(data_dir), load_data(data_dir))
    rows = [{**trial_row(f"aaaa000{i}", {**MLP_TRIAL, "lr": lr}, score=100.0 + i), "status": "TERMINATED"}
            for i, lr in enumerate((3e-3, 1e-2), start=1)]
    pd.DataFrame(rows).to_parquet(run.trials_table)
    return run.path


def final_in_process(run_dir: Path, data_dir: Path):
    """The leaderboard the final stage's Ray tasks write, computed by the function they run, here
    and without Ray."""
    import pandas as pd

    from cvae_core.data import load_data
    from results.leaderboard import write_leaderboard
    from results.run_folder import RunFolder
    from search.finalists import finalist_job, finalists
    from search.settings import load_spec

    run, data = RunFolder(run_dir), load_data(data_dir)
    spec = load_spec(run.space_file)
    for row in finalists(pd.read_parquet(run.trials_table), spec.final.top_k).to_dict("records"):
        for seed in range(spec.final.seeds):
            finalist_job(row, seed, data, spec.search.train_on, spec.final, str(run_dir))
    return write_leaderboard(run_dir)


@pytest.fixture(scope="session")
def _scored_run(tmp_path_factory, _quiet_machine):
    """A run folder as the final stage leaves it (2 finalists, every sampler), built in-process
    once: the same finalist_job Ray runs, with the tiny extractor and no Ray."""
    tmp = tmp_path_factory.mktemp("scored")
    source = make_tree(tmp / "tree", per_class=4)
    run_dir = finished_search(tmp, source, final={"top_k": 2, "samplers": ["prior", "gmm", "two_stage"],
                                                  "two_stage": TINY_TWO_STAGE})
    final_in_process(run_dir, source)
    return run_dir


@pytest.fixture
def scored_run(_scored_run):
    """The scored run folder, for tests that only read it."""
    return _scored_run


@pytest.fixture
def scored_run_copy(_scored_run, tmp_path):
    """A copy of the scored run folder, for tests that change it."""
    return Path(shutil.copytree(_scored_run, tmp_path / "runs" / "t"))
