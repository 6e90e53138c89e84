import pytest
from PIL import Image

from results.sample import main


def test_sample_regenerates_one_class_from_a_row(scored_run, tmp_path, capsys):
    out = tmp_path / "cat.png"
    assert main([str(scored_run), "--row", "0", "--class", "cat", "--n", "9", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 + 3 * 34, 2 + 3 * 34)  # 9 images, 3 by 3
    assert "9 images of cat from row 0" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["prior", "gmm"])
def test_sample_every_class_with_either_sampler(scored_run, tmp_path, sampler):
    out = tmp_path / "all.png"
    assert main([str(scored_run), "--row", "1", "--n", "4", "--sampler", sampler, "--out", str(out)]) == 0
    assert Image.open(out).size == (2 + 4 * 34, 2 + 10 * 34)  # one row per class


@pytest.mark.parametrize(
    "args, message",
    [
        (["--row", "7"], "--row 7: the leaderboard has rows 0..3"),
        (["--class", "unicorn"], "--class 'unicorn' is not one of"),
        (["--n", "0"], "--n 0 must be >= 1"),
    ],
)
def test_bad_arguments_are_named(scored_run, tmp_path, capsys, args, message):
    assert main([str(scored_run), *args, "--out", str(tmp_path / "x.png")]) == 2
    assert message in capsys.readouterr().err
