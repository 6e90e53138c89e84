"""Any labelled image dataset: a search and its final stage on data whose classes, image size and
channels are not CIFAR-10's, read from the data; and what is refused, in one line each."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli import command, in_process, tiny_space
from conftest import make_tree
from PIL import Image

from results.sample import main as sample
from results.show import main as show

GRAY = ["ant", "bee", "cow", "dog", "eel"]  # 5 classes of 28x28 grayscale images
RGB = ["fig", "kiwi", "lime"]  # 3 classes of 64x64 RGB images


def zipped(tree: Path) -> Path:
    path = tree.with_suffix(".zip")
    with zipfile.ZipFile(path, "w") as zf:
        for f in sorted(tree.rglob("*.png")):
            zf.write(f, f.relative_to(tree).as_posix())
    return path


def space_for_any_size(tmp: Path) -> Path:
    """Each family, with stacks that fit both sizes (28 -> 14 -> 7, 64 -> 32 -> 16)."""
    space = tiny_space(tmp, final={"samplers": ["prior", "gmm", "two_stage"],
                                   "two_stage": {"width": 16, "layers": 1, "epochs": 2}},
                       num_samples=3, seed=1, searcher={"n_startup_trials": 3},
                       asha={"max_t": 2, "grace_period": 2, "reduction_factor": 2})
    raw = yaml.safe_load(space.read_text())
    raw["space"] = {"family": {"choice": ["mlp", "cnn", "resnet"]}, "latent": 4, "lr": 3e-3, "batch_size": 10,
                    "mlp": {"layers": 1, "width": 16}, "h": 16, "label": "onehot",
                    "conv": {"layers": 2, "channels": 4, "kernel_size": 4, "stride": 2, "padding": 1},
                    "resnet": {"width": 4, "scales": 2, "blocks": 1, "cond_norm": True, "norm": "batch"}}
    space.write_text(yaml.safe_dump(raw))
    return space


@pytest.mark.slow
@pytest.mark.parametrize(("classes", "size", "mode", "as_zip"), [(GRAY, 28, "L", False), (RGB, 64, "RGB", True)])
def test_a_search_and_its_final_stage_on_data_of_any_shape(tmp_path, ray_session, classes, size, mode, as_zip):
    tree = make_tree(tmp_path / "data", per_class=6, classes=classes, size=size, mode=mode)
    data = zipped(tree) if as_zip else tree
    proc = in_process(command(space_for_any_size(tmp_path), data, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"

    trials = pd.read_parquet(run_dir / "trials.parquet")
    assert (trials["status"] == "TERMINATED").all(), trials[["family", "status", "error"]]
    channels = 1 if mode == "L" else 3
    assert set(zip(trials["image_size"], trials["channels"], trials["num_classes"])) == {(size, channels, len(classes))}
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["sampler"]) == {"prior", "gmm", "two_stage"}
    for row in board.itertuples():  # one entry per class of the data
        assert list(row.classes) == classes
        assert len(row.fid_per_class) == len(row.class_accuracy_per_class) == len(classes)
    grid = Image.open(board["sample_grid"].iloc[0])
    assert grid.height == 2 + len(classes) * (size + 2)  # one row per class

    assert show([str(run_dir)]) == 0 and (run_dir / "report" / "per_class.png").stat().st_size > 0
    out = tmp_path / "one.png"
    assert sample([str(run_dir), "--class", classes[-1], "--n", "4", "--out", str(out)]) == 0
    image = Image.open(out)
    assert image.size == (2 + 2 * (size + 2),) * 2 and image.mode == ("L" if mode == "L" else "RGB")


def test_a_preset_or_a_stack_that_does_not_fit_the_data_is_one_line_before_anything_starts(tmp_path, capsys):
    data = make_tree(tmp_path / "gray", per_class=2, classes=GRAY, size=28, mode="L")
    space = space_for_any_size(tmp_path)
    raw = yaml.safe_load(space.read_text())
    raw["space"]["conv"]["layers"] = 5  # 28 -> 14 -> 7 -> 3 -> 1 -> less than a pixel (256x256 takes it)
    raw["space"]["family"] = "cnn"
    del raw["space"]["mlp"], raw["space"]["resnet"]
    space.write_text(yaml.safe_dump(raw))
    proc = in_process(command(space, data, tmp_path / "runs"))
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    [line] = proc.stderr.splitlines()
    assert line.startswith(f"error: {space}: space.conv: layers=5, kernel_size=4, stride=2, padding=1 does not fit "
                           "28x28: ")

    presets = tmp_path / "presets.yaml"
    presets.write_text(yaml.safe_dump({"space": {"presets": ["mlp-M1"], "batch_size": 2}}))
    proc = in_process(command(presets, data, tmp_path / "runs"))
    assert proc.returncode == 2 and not (tmp_path / "runs").exists()
    assert proc.stderr.splitlines() == [
        f"error: {presets}: space.presets: the report's presets are CIFAR-10 models (32x32 RGB, 10 classes); "
        "the data is 28x28 grayscale, 5 classes: search a space of families instead"]


def test_training_a_preset_on_other_data_is_refused_in_one_line(tmp_path, capsys):
    from cvae_core.train import main as train

    data = make_tree(tmp_path / "rgb", per_class=2, classes=RGB, size=64)
    with pytest.raises(SystemExit):
        train(["--preset", "mlp-M1", "--data", str(data), "--out", str(tmp_path / "out"), "--epochs", "1"])
    assert ("--preset: the report's presets are CIFAR-10 models (32x32 RGB, 10 classes); --data "
            f"{data} is 64x64 RGB, 3 classes") in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
