"""The `python -m cvae_core.train` command line."""

import json

import pytest

from cvae_core.train import main


def test_cli_trains_writes_and_resumes(tree, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "cnn-arch1-M1", "--data", str(tree), "--out", str(out), "--batch-size", "10",
            "--device", "cpu", "--grid-every", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["model"]["latent"] == 64 and config["recipe"] == {"lr": 1e-4, "batch_size": 10, "weight_decay": 0.0,
                                                                    "ema": 0.0}
    assert (out / "best.pt").exists() and (out / "grids" / "epoch0001_samples.png").exists()

    with pytest.raises(SystemExit):  # an existing run is never silently overwritten
        main([*args, "--epochs", "2"])
    assert "pass --resume" in capsys.readouterr().err

    assert main([*args, "--epochs", "2", "--resume"]) == 0
    epochs = [json.loads(line)["epoch"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert epochs == [1, 2]


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
])
def test_a_bad_number_is_one_line_naming_the_flag_and_nothing_is_written(tree, tmp_path, capsys, args, message):
    out = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        main(["--preset", "mlp-M1", "--data", str(tree), "--out", str(out), *args])
    assert exit_.value.code == 2 and capsys.readouterr().err.strip() == message
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
