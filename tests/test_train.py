"""The `python -m cvae_core.train` command line."""

import json

import pytest

from cvae_core.train import main


def test_cli_trains_writes_and_resumes(tree, tmp_path, capsys):
    out = tmp_path / "run"
    args = ["--preset", "cnn-arch1-M1", "--data", str(tree), "--out", str(out), "--batch-size", "10",
            "--device", "cpu", "--grid-every", "1"]
    assert main([*args, "--epochs", "1"]) == 0
    assert json.loads((out / "config.json").read_text())["model"]["latent"] == 64
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
