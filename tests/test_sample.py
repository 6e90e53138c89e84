import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import final_in_process, make_tree
from PIL import Image

import search.finalists
from cvae_core.data import load_data
from cvae_core.training import load_model
from results.names import SAMPLERS
from results.run_folder import RunFolder
from results.sample import main
from results.samplers import generate, sample_grid_size, save_sample_grid
from search.settings import load_spec


def test_sample_regenerates_one_class_from_a_row(scored_run, tmp_path, capsys):
    out = tmp_path / "cat.png"
    assert main([str(scored_run), "--row", "0", "--class", "cat", "--n", "9", "--out", str(out)]) == 0
    assert Image.open(out).size == (2 + 3 * 34, 2 + 3 * 34)  # 9 images, 3 by 3
    assert "9 images of cat from row 0" in capsys.readouterr().out


@pytest.mark.parametrize("sampler", ["prior", "gmm", "two_stage"])
def test_sample_every_class_with_any_sampler(scored_run, tmp_path, sampler):
    out = tmp_path / "all.png"
    assert main([str(scored_run), "--row", "1", "--n", "4", "--sampler", sampler, "--out", str(out)]) == 0
    width, height = Image.open(out).size
    assert height == 2 + 10 * 34 and width > 2 + 4 * 34  # one row per class, named on the left


@pytest.mark.parametrize("name, fmt", [("all.jpg", "JPEG"), ("all.bmp", "BMP")])
def test_the_suffix_picks_the_format(scored_run, tmp_path, name, fmt):
    out = tmp_path / name
    assert main([str(scored_run), "--n", "4", "--out", str(out)]) == 0
    assert Image.open(out).format == fmt


def test_the_widest_grid_a_format_holds_is_written_and_one_wider_refused(scored_run, tmp_path, capsys):
    """WebP bounds each side at 16,383 pixels."""
    classes = load_data(RunFolder(scored_run).source()).classes
    n = max(n for n in range(400, 500) if sample_grid_size(n, classes, 32, 32, columns=n)[0] <= 16_383)
    out = tmp_path / "wide.webp"
    assert main([str(scored_run), "--n", str(n), "--out", str(out)]) == 0
    assert Image.open(out).size == sample_grid_size(n, classes, 32, 32, columns=n)
    assert main([str(scored_run), "--n", str(n + 1), "--out", str(tmp_path / "wider.webp")]) == 2
    assert "more than a .webp file holds" in capsys.readouterr().err


def test_gmm_samples_come_from_the_mixture_the_run_scored(scored_run, tmp_path):
    """results.sample refits the GMM with the run's final.gmm_components, not a default."""
    board = pd.read_parquet(scored_run / "leaderboard.parquet")
    spec = load_spec(RunFolder(scored_run).space_file)
    data = load_data(RunFolder(scored_run).source())
    model = load_model(board["checkpoint"].iloc[0])
    x, y = data.train_x, data.train_y

    def expected(components):
        path = tmp_path / f"expected{components}.png"
        save_sample_grid(generate(model, "gmm", 4, x, y, components=components), 4, path, data.classes)
        return np.asarray(Image.open(path))

    out = tmp_path / "gmm.png"
    assert main([str(scored_run), "--row", "0", "--n", "4", "--sampler", "gmm", "--out", str(out)]) == 0
    got = np.asarray(Image.open(out))
    assert spec.final.gmm_components == 2
    assert np.array_equal(got, expected(2)) and not np.array_equal(got, expected(10))


@pytest.mark.parametrize(
    "args, message",
    [
        (["--row", "7"], "--row 7: the leaderboard has rows 0..5"),
        (["--class", "unicorn"], "--class 'unicorn' is not one of"),
        (["--class", "\u00b2"], "--class '\u00b2' is not one of"),
        (["--n", "0"], "argument --n: 0 must be >= 1"),
        (["--device", "gpu"], "argument --device: 'gpu' is not cpu, cuda, cuda:N or mps"),
        (["--seed", "-1"], "argument --seed: -1 must be >= 0"),
        (["--seed", str(2**32)], "argument --seed: 4294967296 must be <= 4294967295"),
        (["--out", "row0"], "argument --out: row0: not an image file name (its suffix picks the format"),
        (["--out", "TMP/folder.png"], "argument --out: TMP/folder.png: is a folder"),
        (["--out", "TMP/file/x.png"], "argument --out: TMP/file/x.png: TMP/file is a file, not a folder"),
        (["--data", "TMP/gray", "--sampler", "gmm"], "--data TMP/gray: holds 16x16 grayscale, 10 classes; row 0's "
                                                     "model was built for 32x32 RGB, 10 classes"),
        (["--n", "2000", "--out", "TMP/x.jpg"], "TMP/x.jpg: 2000 images per class make a grid of 68,0"),
        (["--n", "2000", "--out", "TMP/x.jpg"], "more than a .jpg file holds (Maximum supported image dimension is "
                                                "65500 pixels); give a smaller --n, or write a .png"),
        (["--n", "500", "--out", "TMP/x.webp"], "more than a .webp file holds (encoding error 5: Image size exceeds "
                                                "WebP limit of 16383 pixels)"),
        (["--n", "2000", "--out", "TMP/x.gif"], "more than a .gif file holds ("),  # its writer: OverflowError
        (["--n", "200000", "--class", "cat"], "TMP/x.png: 200000 images per class make a grid of 15,234 x 15,200 "
                                              "pixels, more than Pillow opens (178,956,970); give a smaller --n"),
        (["--out", "TMP/x.xbm"], "TMP/x.xbm: Pillow cannot write RGB images as XBM (cannot write mode RGB as XBM); "
                                 "write a .png"),
    ],
)
def test_bad_arguments_are_named(scored_run, tmp_path, capsys, monkeypatch, args, message):
    """Each is one line, before a model is loaded or an image drawn."""
    monkeypatch.setattr("results.sample.draw", lambda *a, **k: pytest.fail("drew images for a bad argument"))
    make_tree(tmp_path / "gray", size=16, mode="L")
    (tmp_path / "folder.png").mkdir()
    (tmp_path / "file").write_text("the user's")
    args, message = [a.replace("TMP", str(tmp_path)) for a in args], message.replace("TMP", str(tmp_path))
    try:
        code = main([str(scored_run), "--out", str(tmp_path / "x.png"), *args])
    except SystemExit as e:  # argparse's own checks
        code = e.code
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1


@pytest.mark.parametrize("sampler", ["prior", "gmm", "two_stage"])
def test_the_images_a_row_scored_are_drawn_again_exactly(scored_run, tmp_path, sampler):
    """Its seed and sampler give the same images: two_stage from the second VAE saved beside the weights."""
    board = pd.read_parquet(scored_run / "leaderboard.parquet")
    i = board.index[board["sampler"] == sampler][0]
    out = tmp_path / "again.png"
    assert main([str(scored_run), "--row", str(i), "--n", "3", "--seed", str(board.loc[i, "seed"]),
                 "--out", str(out)]) == 0
    assert np.array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(board.loc[i, "sample_grid"])))


def test_a_row_without_a_fitted_second_stage_says_so(scored_run_copy, tmp_path, capsys):
    board = pd.read_parquet(scored_run_copy / "leaderboard.parquet")
    fitted = RunFolder(scored_run_copy).finalist_file(board.loc[0, "checkpoint"]).parent / "two_stage.pt"
    fitted.unlink()  # the copy's: its rows still name the files where the original run wrote them
    assert main([str(scored_run_copy), "--row", "0", "--sampler", "two_stage", "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {fitted}: row 0 has no fitted two_stage sampler; the final "
                                               "stage fits one when final.samplers lists two_stage")


@pytest.mark.parametrize("damage", ["cut short", "a folder", "another kind of checkpoint", "two_stage cut short"])
def test_weights_that_do_not_read_back_are_one_line_naming_them_before_the_data_loads(scored_run_copy, tmp_path,
                                                                                         capsys, monkeypatch, damage):
    import cvae_core.data

    def load_data(*args, **kwargs):
        raise AssertionError("the data was loaded")

    monkeypatch.setattr(cvae_core.data, "load_data", load_data)
    board = pd.read_parquet(scored_run_copy / "leaderboard.parquet")
    best = RunFolder(scored_run_copy).finalist_file(board.loc[0, "checkpoint"])  # the copy's
    fitted = best.parent / "two_stage.pt"
    damaged, what = (fitted, "two_stage fit does") if damage == "two_stage cut short" else (best, "weights do")
    if damage == "a folder":
        best.unlink()
        best.mkdir()
    elif damage == "another kind of checkpoint":
        shutil.copyfile(fitted, best)
    else:
        damaged.write_bytes(damaged.read_bytes()[:1000])
    out = tmp_path / "x.png"
    assert main([str(scored_run_copy), "--n", "1", "--sampler", "two_stage", "--out", str(out)]) == 2
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith(f"error: {damaged}: row 0's {what} not read back (cut short, or not a checkpoint?): ")
    assert not out.exists()


def test_a_leaderboard_that_is_a_folder_is_one_line_naming_it(tmp_path, capsys):
    (tmp_path / "leaderboard.parquet").mkdir()  # not "no rows": pandas would read the folder as an empty table
    assert main([str(tmp_path), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path}/leaderboard.parquet: is a folder, not a table\n"
    assert not (tmp_path / "x.png").exists()


@pytest.fixture(scope="module")
def retrained(_scored_run, tmp_path_factory):
    """A copy of the scored run whose best trial is also retrained with seed 1 (a row seed that is
    not --seed's old default), and the very images the final stage scored for each of its samplers,
    taken where they are handed to the scoring."""
    run_dir = Path(shutil.copytree(_scored_run, tmp_path_factory.mktemp("retrained") / "t"))
    space = RunFolder(run_dir).space_file
    raw = yaml.safe_load(space.read_text())
    raw["final"].update(top_k=1, seeds=2)
    space.write_text(yaml.safe_dump(raw))
    score, scored = search.finalists.score, []

    def recording(images, *args, **kwargs):
        scored.append(images.clone())
        return score(images, *args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(search.finalists, "score", recording)
        final_in_process(run_dir, Path(RunFolder(run_dir).source()))
    assert len(scored) == len(SAMPLERS)  # seed 0's rows were there: only seed 1 was scored
    return run_dir, dict(zip(raw["final"]["samplers"], scored))


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_by_default_a_row_is_drawn_exactly_as_it_was_scored(retrained, tmp_path, sampler):
    """No --seed, no --n: the row's seed and images per class give the images its FID came from."""
    run_dir, scored = retrained
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    i = board.index[(board["sampler"] == sampler) & (board["seed"] == 1)][0]
    classes, per_class = board.loc[i, "classes"], 3  # the tiny final stage's samples_per_class
    assert len(scored[sampler]) == board.loc[i, "n_samples"] == len(classes) * per_class

    def drawn(*flags):
        out = tmp_path / f"drawn{len(flags)}.png"
        assert main([str(run_dir), "--row", str(i), *flags, "--out", str(out)]) == 0
        return np.asarray(Image.open(out))

    expected = tmp_path / "scored.png"
    save_sample_grid(scored[sampler], per_class, expected, classes, columns=per_class)
    assert np.array_equal(drawn(), np.asarray(Image.open(expected)))
    assert not np.array_equal(drawn("--seed", "0"), np.asarray(Image.open(expected)))  # the seed is the row's


def test_help_and_a_missing_leaderboard_answer_before_pandas_and_torch_load(tmp_path, capsys):
    import subprocess
    import sys

    code = ("import sys; from results.sample import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            f"assert main([{str(tmp_path)!r}, '--out', 'x.png']) == 2\n"
            "loaded = {'pandas', 'torch'} & set(sys.modules); assert not loaded, loaded")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0, done.stderr
    assert "usage: python -m results.sample" in done.stdout
    assert done.stderr == (f"error: {tmp_path}/leaderboard.parquet: no leaderboard; "
                           f"run python -m search.final {tmp_path}\n")
    from results.sample import main

    assert main([str(tmp_path / "tpyo"), "--out", str(tmp_path / "x.png")]) == 2
    assert capsys.readouterr().err == f"error: {tmp_path / 'tpyo'}: no run folder there\n"
