"""The `python -m cvae_core.train` command line."""

import dataclasses
import json

import pytest

from cvae_core.config import CHOICES, RANGES, Recipe
from cvae_core.train import main


def test_cli_trains_writes_and_resumes(tree, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "cnn-arch1-M1", "--data", str(tree), "--out", str(out), "--batch-size", "10",
            "--device", "cpu", "--grid-every", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["latent"] == 64 and config["recipe"] == Recipe(batch_size=10).to_dict()
    assert (out / "best.pt").exists() and (out / "grids" / "epoch0001_samples.png").exists()

    with pytest.raises(SystemExit):  # an existing run is never silently overwritten
        main([*args, "--epochs", "2"])
    assert "pass --resume" in capsys.readouterr().err

    assert main([*args, "--epochs", "2", "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


@pytest.mark.parametrize("changed, message", [
    (["--lr", "0.001"], "trained with --lr 0.0001 (not 0.001)"),
    (["--ema", "0.99", "--batch-size", "5"], "trained with --batch-size 10 (not 5), --ema 0.0 (not 0.99)"),
    (["--preset", "cnn-arch1-M2"], "trained --preset cnn-arch1-M1, not cnn-arch1-M2"),
    (["--train-on", "all"], "trained with --train-on train (not all)"),
    (["--reduction", "mean"], "trained with --reduction sum (not mean)"),
])
def test_resuming_with_other_settings_is_one_line_and_the_run_is_left_as_it_was(tree, tmp_path, capsys, changed,
                                                                                  message):
    out = tmp_path / "run"
    args = ["--preset", "cnn-arch1-M1", "--data", str(tree), "--out", str(out), "--batch-size", "10",
            "--device", "cpu", "--epochs", "1"]
    assert main(args) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(SystemExit) as exit_:
        main([*args, *changed, "--resume"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: argument --resume: {out} {message}; continue it with the same settings, or choose another --out")
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_cli_rejects_an_unknown_preset(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "cnn-arch9-M1", "--out", str(tmp_path)])
    assert exit_.value.code == 2 and "cnn-arch9-M1" in capsys.readouterr().err


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "error: argument --epochs: 0 must be >= 1"),
    (["--lr", "-0.001"], "error: argument --lr: -0.001 must be > 0"),
    (["--lr", "inf"], "error: argument --lr: 'inf' is not a finite number"),
    (["--patience", "two"], "error: argument --patience: 'two' is not an integer"),
    (["--batch-size", "1000"], "error: argument --batch-size: 1000 is more than the 30 training images"),
    (["--ema", "1"], "error: argument --ema: 1.0 must be < 1"),
    (["--ema", "-0.5"], "error: argument --ema: -0.5 must be >= 0"),
    (["--weight-decay", "-1"], "error: argument --weight-decay: -1.0 must be >= 0"),
    (["--device", "gpu"], "error: argument --device: 'gpu' is not cpu, cuda, cuda:N or mps"),
    (["--device", "cuda:x"], "error: argument --device: 'cuda:x' is not cpu, cuda, cuda:N or mps"),
    (["--device", "cuda:\u00b2"], "error: argument --device: 'cuda:\u00b2' is not cpu, cuda, cuda:N or mps"),
    (["--seed", "4294967296"], "error: argument --seed: 4294967296 must be <= 4294967295"),
])
def test_a_bad_number_is_one_line_naming_the_flag_and_nothing_is_written(tree, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), *args])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip() == message
    assert not out.exists()


def test_a_gpu_this_machine_lacks_is_one_line_and_nothing_is_written(tree, tmp_path, capsys, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), "--device", "cuda:1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: argument --device: 'cuda:1': this machine has 1 cuda device(s)"
    assert not out.exists()


def _refused(name: str) -> str:
    """A value the Recipe field `name` refuses."""
    if name in CHOICES:
        return "nope"
    r = RANGES[name]
    return str(r.minimum if r.exclusive else r.minimum - 1)


@pytest.mark.parametrize("name", [f.name for f in dataclasses.fields(Recipe)])
def test_every_recipe_field_is_a_flag_with_its_help_range_and_default(tree, tmp_path, capsys, name):
    flag = "--" + name.replace("_", "-")
    with pytest.raises(SystemExit):
        main(["--help"])
    assert " ".join(Recipe.__dataclass_fields__[name].metadata["help"].split()) in " ".join(
        capsys.readouterr().out.split())
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), flag, _refused(name)])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and err.startswith(f"error: argument {flag}: ") and "\n" not in err
    assert not out.exists()


def test_torchvision_cifar10_that_cannot_be_downloaded_is_one_line(tmp_path, capsys, monkeypatch):
    from urllib.error import URLError

    import torchvision.datasets

    def offline(*args, **kwargs):
        raise URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    assert main(["--preset", "mlp-M1", "--data", f"cifar10:{tmp_path / 'tv'}", "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --data: ") and "torchvision CIFAR-10 unavailable" in err and "\n" not in err


def test_a_cosine_schedule_resumes_only_to_the_epoch_it_decays_to(tree, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), "--batch-size", "10", "--device", "cpu",
            "--lr-schedule", "cosine"]
    assert main([*args, "--epochs", "1"]) == 0
    with pytest.raises(SystemExit):
        main([*args, "--epochs", "3", "--resume"])
    assert "trained with --epochs 1 (not 3)" in capsys.readouterr().err
    assert main([*args, "--epochs", "1", "--resume"]) == 0  # the same schedule goes on


def test_resuming_on_other_data_is_one_line(tree, tmp_path, capsys):
    from conftest import make_tree

    out = tmp_path / "run"
    args = ["--preset", "mlp-M1", "--out", str(out), "--batch-size", "10", "--device", "cpu", "--epochs", "1"]
    assert main([*args, "--data", str(tree)]) == 0
    other = make_tree(tmp_path / "other", per_class=3)
    with pytest.raises(SystemExit):
        main([*args, "--data", str(other), "--resume"])
    assert f"trained on --data {tree.resolve()}, not {other.resolve()}" in capsys.readouterr().err


def test_an_out_that_is_a_file_is_one_line(tree, tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "mlp-M1", "--data", str(tree), "--out", str(tmp_path / "notes.txt")])
    message = capsys.readouterr().err.strip()
    assert exit_.value.code == 2
    assert message == f"error: argument --out: {tmp_path}/notes.txt: it is a file, not a folder"
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_an_out_holding_files_and_no_run_is_refused_and_left_as_it_was(tree, tmp_path, capsys):
    out = tmp_path / "mine"
    out.mkdir()
    (out / "best.pt").write_text("my weights")
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), "--epochs", "1"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: argument --out: {out} holds 1 file(s) (best.pt) and no run to resume: choose an empty or new folder")
    assert [f.name for f in out.iterdir()] == ["best.pt"] and (out / "best.pt").read_text() == "my weights"


def test_a_checkpoint_that_cannot_be_read_is_one_line_and_the_run_is_left_as_it_was(tree, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), "--batch-size", "10", "--epochs", "1"]
    assert main(args) == 0
    (out / "checkpoint.pt").write_text("cut short")
    before = {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()}
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*args, "--resume"])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and err == [f"error: argument --resume: {out / 'checkpoint.pt'} cannot be read as a "
                                             "checkpoint (UnpicklingError): cut short, or not one this program "
                                             "wrote; choose another --out to start over"]
    assert {f.name: f.read_bytes() for f in out.iterdir() if f.is_file()} == before


def test_an_empty_out_is_one_line_not_the_working_folder(tree, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "mlp-M1", "--data", str(tree), "--out", ""])
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: argument --out: an empty path; name a folder\n"


def test_a_run_stopped_before_its_first_checkpoint_starts_again_in_its_folder(tree, tmp_path):
    out = tmp_path / "run"
    args = ["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), "--batch-size", "10", "--epochs", "1"]
    assert main(args) == 0
    (out / "checkpoint.pt").unlink()  # as a Ctrl-C in epoch 1 leaves it: config.json, maybe a record
    (out / "best.pt").unlink()
    assert main(args) == 0
    assert [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()] == [1]
