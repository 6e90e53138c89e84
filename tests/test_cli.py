"""What every command line shares (cvae_core.cli), through the commands themselves."""

from __future__ import annotations

import importlib

import pytest

LONG = "x" * 300  # a name no Linux or macOS file system takes (255 bytes at most)


@pytest.mark.parametrize("command, flag, argv", [
    ("cvae_core.train", "--out", ["--preset", "mlp-M1", "--out", "TMP/" + LONG]),
    ("cvae_core.train", "--data", ["--preset", "mlp-M1", "--out", "TMP/out", "--data", "TMP/" + LONG + ".zip"]),
    ("search.run", "--space", ["--space", "TMP/" + LONG + ".yaml"]),
    ("search.run", "--storage", ["--space", "spaces/cnn.yaml", "--storage", "TMP/" + LONG]),
    ("search.run", "--storage", ["--space", "spaces/cnn.yaml", "--storage", "file://TMP/" + LONG]),
    ("search.run", "--name", ["--space", "spaces/cnn.yaml", "--storage", "TMP", "--name", LONG]),
    ("search.run", "--inception-weights", ["--space", "spaces/cnn.yaml", "--inception-weights", "TMP/" + LONG]),
    ("search.final", "run_dir", ["TMP/" + LONG]),
    ("results.show", "run_dir", ["TMP/" + LONG]),
    ("results.show", "--out", ["TMP", "--out", "TMP/" + LONG + "/report"]),
    ("results.sample", "run_dir", ["TMP/" + LONG, "--out", "TMP/a.png"]),
    ("results.sample", "--out", ["TMP", "--out", "TMP/" + LONG + ".png"]),
])
def test_a_name_too_long_for_the_file_system_is_one_line_naming_the_argument(command, flag, argv, tmp_path, capsys):
    argv = [a.replace("TMP", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(command).main(argv)
    assert exit.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: argument {flag}: xxx") and "a name of 30" in err and "at most 255" in err
    assert err.count("\n") == 1
    assert not any(tmp_path.iterdir())  # nothing made


def test_a_path_too_long_for_the_system_is_refused_and_a_uri_left_to_its_file_system(capsys):
    from cvae_core.cli import ArgumentParser, path

    p = ArgumentParser(prog="p")
    p.add_argument("--to", type=path)
    assert p.parse_args(["--to", "s3://bucket/" + LONG]).to == "s3://bucket/" + LONG
    assert p.parse_args(["--to", "runs/" + "y" * 255]).to == "runs/" + "y" * 255
    with pytest.raises(SystemExit):
        p.parse_args(["--to", "/".join(["y" * 200] * 21)])
    assert capsys.readouterr().err == "error: argument --to: a path of 4220 bytes; at most 4095\n"


@pytest.mark.parametrize("command, flag, argv", [
    ("cvae_core.train", "--out", ["--preset", "mlp-M1", "--out", "~nosuchuser/t"]),
    ("search.run", "--storage", ["--space", "spaces/cnn.yaml", "--storage", "~nosuchuser/runs"]),
    ("search.run", "--data", ["--space", "spaces/cnn.yaml", "--data", "~nosuchuser/cifar.zip"]),
    ("search.final", "run_dir", ["~nosuchuser/run"]),
    ("results.show", "--out", ["TMP", "--out", "~nosuchuser/report"]),
    ("results.sample", "--out", ["TMP", "--out", "~nosuchuser/x.png"]),
])
def test_a_home_folder_of_no_user_is_one_line_naming_the_argument(command, flag, argv, tmp_path, capsys):
    with pytest.raises(SystemExit) as exit:
        importlib.import_module(command).main([a.replace("TMP", str(tmp_path)) for a in argv])
    assert exit.value.code == 2
    assert capsys.readouterr().err == f"error: argument {flag}: ~nosuchuser/{argv[-1].split('/')[-1]}: ~nosuchuser " \
                                      "names no home folder on this machine\n"


def test_a_nul_character_is_one_line_in_a_path_and_in_a_file_uri(capsys):
    from cvae_core.cli import ArgumentParser, path

    p = ArgumentParser(prog="p")
    p.add_argument("--to", type=path)
    for given in ("runs/a\0b", "file:///tmp/a%00b"):
        with pytest.raises(SystemExit):
            p.parse_args(["--to", given])
        assert capsys.readouterr().err == f"error: argument --to: {given!r}: holds a NUL character, which no path can\n"


def test_a_tilde_that_no_command_expands_is_taken_as_typed(tmp_path, monkeypatch):
    from cvae_core.cli import local_path
    from search.run import _parser

    assert _parser().parse_args(["--space", "x.yaml", "--name", "~nosuchuser"]).name == "~nosuchuser"  # a run name
    monkeypatch.chdir(tmp_path)
    (tmp_path / "~nosuchuser.yaml").write_text("a space file the shell left unexpanded")
    assert local_path("~nosuchuser.yaml").read_text() == "a space file the shell left unexpanded"
