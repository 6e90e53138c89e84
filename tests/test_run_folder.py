import json
from pathlib import Path
from types import SimpleNamespace

import pytest

import results.run_folder
from cvae_core.sources import DataError
from results.run_folder import RunFolder, open_run


def test_auto_is_resolved_once_and_the_run_keeps_that_extractor(tmp_path, monkeypatch):
    def resolving_auto_to(network):
        return lambda name, weights: network if name == "auto" else name

    run = RunFolder(tmp_path)
    monkeypatch.setattr(results.run_folder, "resolve_extractor", resolving_auto_to("inception-v3-nvidia-offline"))
    assert run.extractor("final", "auto", None) == "inception-v3-nvidia-offline"
    assert json.loads((tmp_path / "feature_extractor.json").read_text()) == {"final": "inception-v3-nvidia-offline"}

    # Later, on a node where auto would pick another network, the run still scores with the first.
    monkeypatch.setattr(results.run_folder, "resolve_extractor", resolving_auto_to("inception-v3-compat"))
    assert run.extractor("final", "auto", "/w.pth") == "inception-v3-nvidia-offline"
    # An explicitly different one is refused, naming both.
    with pytest.raises(ValueError, match="final.feature_extractor: tiny-random differs from inception-v3-nvidia-off"):
        run.extractor("final", "tiny-random", None)
    # Each stage keeps its own.
    assert run.extractor("search", "tiny-random", None) == "tiny-random"
    assert json.loads((tmp_path / "feature_extractor.json").read_text()) == {
        "final": "inception-v3-nvidia-offline", "search": "tiny-random"}


def test_the_data_source_is_recorded_once_and_resuming_on_other_data_is_refused(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "r")
    monkeypatch.setenv("CVAE_DATA", "cifar10:/somewhere")
    assert run.source() == "cifar10:/somewhere"  # nothing recorded: the default
    shape = SimpleNamespace(image_size=28, channels=1, classes=("a", "b"))  # as ImageData gives it
    run.record_data("/data/a.zip", shape)
    run.record_data("/data/b.zip", shape)  # the first record stays
    assert run.source() == "/data/a.zip" and run.source("rel.zip") == str((tmp_path.cwd() / "rel.zip").resolve())
    run.check_source("/data/a.zip")
    with pytest.raises(DataError, match="--data /data/b.zip: this run started with /data/a.zip"):
        run.check_source("/data/b.zip")


def test_a_folder_is_a_run_once_marked_or_holding_an_earlier_versions_space_file_and_data_record(tmp_path):
    run = RunFolder(tmp_path / "r")
    assert not run.is_run()
    run.path.mkdir()
    (run.path / "thesis.tex").write_text("x")
    assert not run.is_run()
    run.space_file.write_text("space: {}")
    assert not run.is_run()  # a folder of the user's may hold a space.yaml
    run.record_data("/data.zip", SimpleNamespace(image_size=32, channels=3, classes=("a", "b")))
    assert run.is_run()  # as an earlier version left a run
    fresh = RunFolder(tmp_path / "s")
    fresh.path.mkdir()
    fresh.mark()
    assert fresh.is_run() and fresh.holds_run({".cvae-search-run"}) and run.holds_run({"space.yaml", "data.json"})
    assert not run.holds_run({"space.yaml", "thesis.tex"})
    finalist = run.finalist("mlp_ab12", 1)
    assert finalist.path == run.path / "final" / "mlp_ab12_s1" and finalist.row("gmm").name == "gmm.json"


def test_a_finalists_file_is_found_in_the_run_folder_wherever_it_has_moved(tmp_path):
    """A leaderboard row holds the path its files were written at; a run folder copied to another
    disk or machine (or renamed) finds them in itself."""
    moved = RunFolder(tmp_path / "elsewhere" / "renamed")
    written = "/home/someone/runs/cnn/final/cnn_1a2b3c4d_s0/best.pt"
    assert moved.finalist_file(written) == moved.path / "final" / "cnn_1a2b3c4d_s0" / "best.pt"
    assert moved.finalist_file("/data/final/runs/x/final/mlp_1_s1/samples_gmm.png") == (
        moved.path / "final" / "mlp_1_s1" / "samples_gmm.png")  # the run folder's own final/, the last one
    assert moved.finalist_file("/somewhere/best.pt") == Path("/somewhere/best.pt")  # not a finalist's: as recorded


def test_a_run_folder_given_as_a_home_path_is_found_wherever_the_command_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    assert open_run("~/runs/cnn").path == RunFolder.at("~/runs/cnn").path == tmp_path / "home" / "runs" / "cnn"


def test_a_delete_cut_short_leaves_a_folder_still_known_as_a_run(tmp_path, monkeypatch):
    """--fresh deletes a run's markers last: a kill part way leaves a folder --fresh deletes again,
    not one every command refuses as not a run."""
    import shutil

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    run.mark()
    run.space_file.write_text("space: {}")
    run.record_data("/data.zip", SimpleNamespace(image_size=32, channels=3, classes=("a", "b")))
    for name in ("aaa", "zzz"):
        (run.trial(name) / "grids").mkdir(parents=True)
    real = shutil.rmtree

    def killed(path, *args, **kwargs):
        real(path, *args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(shutil, "rmtree", killed)
    with pytest.raises(KeyboardInterrupt):
        run.delete()
    assert run.is_run()
    monkeypatch.setattr(shutil, "rmtree", real)
    run.delete()
    assert not run.path.exists() and tmp_path.exists()


@pytest.mark.parametrize("damage", ["cut short", "damaged inside"])
def test_a_table_that_does_not_read_back_is_one_error_naming_it(tmp_path, damage):
    import pandas as pd

    from results.run_folder import RunFileError, read_table

    path = tmp_path / "trials.parquet"
    pd.DataFrame({"trial_id": [f"t{i}" for i in range(50)], "score": range(50)}).to_parquet(path)
    data = bytearray(path.read_bytes())
    data = data[: len(data) // 2] if damage == "cut short" else data[:4] + bytes(40) + data[44:]  # pyarrow: OSError
    path.write_bytes(bytes(data))
    with pytest.raises(RunFileError, match=f"^{path}: does not read back as a table"):
        read_table(path)


@pytest.mark.parametrize("table", ["trials.parquet", "leaderboard.parquet"])
def test_a_table_that_is_a_folder_is_one_error_naming_it(tmp_path, table):
    from results.run_folder import RunFileError

    (tmp_path / table).mkdir()  # pandas reads a folder as an empty dataset
    with pytest.raises(RunFileError, match=f"^{tmp_path / table}: is a folder, not a table$"):
        RunFolder(tmp_path).check_tables()
