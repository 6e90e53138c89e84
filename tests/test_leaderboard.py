import json
import os
import stat
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest

from cvae_core import ModelConfig, Recipe, TrialConfig
from results.leaderboard import SCHEMA, make_row, missing_columns, read_leaderboard, write_leaderboard
from results.metrics import Score
from results.run_folder import LEADERBOARD_FILE


def row(trial: str, sampler: str, fid: float, seed: int = 0, **extra) -> dict:
    """A row as the final stage makes it (make_row), with `extra` columns changed."""
    score = Score(fid=fid, fid_per_class=[fid + 50] * 10, intra_fid=fid + 50, class_accuracy=0.5,
                  class_accuracy_per_class=[0.5] * 10, probe_accuracy_real=0.9, kid_mean=0.1, kid_std=0.01,
                  precision=0.3, recall=0.6, is_mean=None, is_std=None, is_missing_reason="no logits",
                  feature_extractor="tiny-random", reference="x:train[300]", n_samples=200, score_seconds=4.0)
    made = make_row(
        run="r", trial_id=trial, seed=seed, sampler=sampler, search_objective="fid", search_score=fid + 20,
        preset=None, trial=TrialConfig(ModelConfig(family="cnn", latent=8, conv=((8, 4, 2, 1), (16, 4, 2, 1)), h=32),
                                       Recipe(lr=1e-3, batch_size=64)), params=1234,
        training={"epochs_trained": 7, "best_epoch": 5, "best_val_loss": 1900.5, "train_seconds": 12.5,
                  "device": "cpu"},
        score=score, classes=tuple(f"c{i}" for i in range(10)), checkpoint=Path("/c/best.pt"),
        sample_grid=Path("/c/s.png"), data_source="/d/x.zip", train_on="train", gmm_components=10)
    return {**made, **extra}


def put(run_dir, r: dict) -> None:
    d = run_dir / "final" / f"cnn_{r['trial_id']}_s{r['seed']}" / "rows"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{r['sampler']}.json").write_text(json.dumps(r))


def test_missing_columns_names_what_an_older_row_file_lacks_but_not_what_may_be_null():
    """A row file written before a column existed is rescored (search.final --rescore); one whose
    optional columns are null by design (no IS, no preset) is complete."""
    complete = row("a", "prior", 1.0)
    assert missing_columns(complete) == []
    assert missing_columns({k: v for k, v in complete.items() if k not in ("precision", "recall")}) == [
        "precision", "recall"]
    assert missing_columns({**complete, "intra_fid": None}) == ["intra_fid"]
    assert missing_columns({**complete, "is_mean": None, "is_std": None, "preset": None}) == []


def test_leaderboard_has_the_documented_schema_and_is_sorted_by_fid(tmp_path):
    put(tmp_path, row("a", "prior", 300.0))
    put(tmp_path, row("a", "gmm", 250.0, is_mean=2.5, is_std=0.1, is_missing_reason=None))
    put(tmp_path, row("b", "prior", 280.0, family="mlp", hidden=[64, 32], conv=[]))
    board = write_leaderboard(tmp_path)
    assert pq.read_schema(tmp_path / LEADERBOARD_FILE).remove_metadata() == SCHEMA
    assert board["fid"].tolist() == [250.0, 280.0, 300.0]
    assert board.loc[0, "is_mean"] == 2.5 and pd.isna(board.loc[1, "is_mean"])
    assert list(board.loc[1, "hidden"]) == [64, 32] and [list(c) for c in board.loc[0, "conv"]][1] == [16, 4, 2, 1]
    assert board["created_at"].dt.tz is not None


@pytest.mark.filterwarnings("error::UserWarning")  # matplotlib's, for a legend over nothing plotted
def test_a_leaderboard_an_earlier_version_wrote_reads_with_every_column(tmp_path, capsys):
    """Written before intra_fid, class accuracy and precision/recall existed: results.show still
    shows it, the new columns null (its figures say what they lack)."""
    from results.show import main as show

    put(tmp_path, row("a", "prior", 300.0))
    write_leaderboard(tmp_path)
    older = ["intra_fid", "fid_per_class", "class_accuracy", "class_accuracy_per_class", "classes",
             "probe_accuracy_real", "precision", "recall", "image_size", "channels", "num_classes"]
    pd.read_parquet(tmp_path / LEADERBOARD_FILE).drop(columns=older).to_parquet(tmp_path / LEADERBOARD_FILE)
    board = read_leaderboard(tmp_path)
    assert list(board.columns[:len(SCHEMA.names) - len(older)]) == [c for c in SCHEMA.names if c not in older]
    assert set(SCHEMA.names) <= set(board) and board["intra_fid"].isna().all() and board.loc[0, "fid"] == 300.0
    # before models took the data's shape they were CIFAR-10's, as ModelConfig's defaults say
    assert (board.loc[0, "image_size"], board.loc[0, "channels"], board.loc[0, "num_classes"]) == (32, 3, 10)
    assert show([str(tmp_path)]) == 0 and "300" in capsys.readouterr().out


def test_a_rerun_merges_instead_of_clobbering(tmp_path):
    put(tmp_path, row("a", "prior", 300.0))
    write_leaderboard(tmp_path)
    # The row files of trial a are gone (e.g. another machine's folder); a new row arrives.
    import shutil

    shutil.rmtree(tmp_path / "final")
    put(tmp_path, row("b", "prior", 200.0))
    board = write_leaderboard(tmp_path)
    assert board["trial_id"].tolist() == ["b", "a"]
    # A row file wins over the leaderboard's older row with the same key.
    put(tmp_path, row("b", "prior", 100.0))
    board = write_leaderboard(tmp_path)
    assert board["fid"].tolist() == [100.0, 300.0]
    # ... also when the run folder was renamed and the row scored again under its new name
    put(tmp_path, row("b", "prior", 90.0, run="r-renamed"))
    board = write_leaderboard(tmp_path)
    assert board["fid"].tolist() == [90.0, 300.0] and board["run"].tolist() == ["r-renamed", "r"]


def test_no_temp_files_are_left_behind(tmp_path):
    put(tmp_path, row("a", "prior", 1.0))
    write_leaderboard(tmp_path)
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == [LEADERBOARD_FILE]


def test_rows_from_another_feature_extractor_are_refused(tmp_path):
    put(tmp_path, row("a", "prior", 300.0))
    write_leaderboard(tmp_path)
    put(tmp_path, row("b", "prior", 20.0, feature_extractor="inception-v3-compat"))
    with pytest.raises(ValueError, match=r"rows scored with \['inception-v3-compat', 'tiny-random'\] cannot share"):
        write_leaderboard(tmp_path)
    assert pd.read_parquet(tmp_path / LEADERBOARD_FILE)["trial_id"].tolist() == ["a"]  # unchanged


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_the_leaderboard_gets_the_permissions_of_a_plain_write(tmp_path, umask, mode):
    """Colleagues on a shared run folder read it as they read any file the user writes."""
    put(tmp_path, row("a", "prior", 1.0))
    old = os.umask(umask)
    try:
        write_leaderboard(tmp_path)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / LEADERBOARD_FILE).stat().st_mode) == mode


def test_rows_scored_before_a_column_existed_merge_with_nulls(tmp_path):
    """An old run folder's leaderboard (fewer columns) merges with new rows instead of failing: a
    measure it lacks is null, a configuration field its default (what results.sample rebuilds)."""
    put(tmp_path, row("a", "prior", 300.0))
    old_columns = [n for n in SCHEMA.names if n not in ("intra_fid", "fid_per_class", "class_accuracy",
                                                           "class_accuracy_per_class", "precision", "recall", "pareto",
                                                           "channels", "grad_clip")]
    old = pd.DataFrame([row("old", "prior", 250.0)])[old_columns]
    old["created_at"] = pd.to_datetime(old["created_at"], unit="s", utc=True).dt.floor("ms")
    old.to_parquet(tmp_path / LEADERBOARD_FILE)
    board = write_leaderboard(tmp_path)
    assert pq.read_schema(tmp_path / LEADERBOARD_FILE).remove_metadata() == SCHEMA
    assert board["trial_id"].tolist() == ["old", "a"]
    assert pd.isna(board.loc[0, "intra_fid"]) and board.loc[0, "fid_per_class"] is None
    assert board.loc[0, "channels"] == 3 and board.loc[0, "grad_clip"] == 0.0
    assert board.loc[1, "intra_fid"] == 350.0 and list(board.loc[1, "fid_per_class"]) == [350.0] * 10


def test_pareto_marks_each_samplers_rows_that_no_smaller_row_beats(tmp_path):
    for trial, params, fids in (("small", 1_000, (300.0, 280.0)), ("mid", 5_000, (250.0, 290.0)),
                                ("big", 9_000, (260.0, 200.0))):
        for sampler, fid in zip(("prior", "gmm"), fids):
            put(tmp_path, row(trial, sampler, fid, params=params))
    board = write_leaderboard(tmp_path).set_index(["sampler", "trial_id"])["pareto"]
    # prior: big (260) is larger and worse than mid (250); gmm: mid (290) is larger and worse than small (280)
    assert board["prior"].to_dict() == {"small": True, "mid": True, "big": False}
    assert board["gmm"].to_dict() == {"small": True, "mid": False, "big": True}


def test_a_row_written_before_a_configuration_field_existed_reads_its_default(tmp_path):
    """No rescoring to fill a new setting's column: the row was trained with its default."""
    from cvae_core.config import column_defaults

    old = {k: v for k, v in row("a", "prior", 1.0).items() if k not in ("grad_clip", "lr_schedule", "image_size")}
    assert missing_columns(old) == []
    put(tmp_path, old)
    board = write_leaderboard(tmp_path)
    assert board.loc[0, "grad_clip"] == 0.0 and board.loc[0, "lr_schedule"] == "constant"
    assert board.loc[0, "image_size"] == column_defaults()["image_size"] == 32
