"""trials.parquet is read from what each trial reported (its last result) and its failure file."""

import json
from types import SimpleNamespace

import pytest

import search.trials
from results.run_folder import RunFolder
from search.space import trial_config
from search.trials import trials_table

CONFIG = {"family": "mlp", "latent": 4, "mlp_layers": 1, "mlp_width": 8, "lr": 1e-3, "batch_size": 16}


def tune_trial(trial_id, status, last=None):
    return SimpleNamespace(trial_id=trial_id, status=status, config=CONFIG, last_result=last or {}, error_file=None)


def result(epoch, score, stop=None, **extra):
    return {"epoch": epoch, "score": score, "fid": score, "kid": 0.1, "score_epoch": epoch, "objective": "fid",
            "best_val_loss": 2000.0 - epoch, "best_epoch": epoch, "params": 1234, "node_id": "n1", "stop": stop,
            **extra}


@pytest.fixture
def table(tmp_path, monkeypatch):
    run = RunFolder(tmp_path / "r")
    trials = [
        tune_trial("a", "TERMINATED", result(20, 150.0, stop="patience")),
        tune_trial("b", "TERMINATED", result(4, 140.0, stop="max_epochs")),
        tune_trial("c", "TERMINATED", result(2, 300.0)),  # ASHA stopped it: the loop never said stop
        tune_trial("d", "ERROR", result(3, 200.0)),
        tune_trial("e", "ERROR"),
        tune_trial("f", "RUNNING", result(1, 400.0)),
    ]
    for trial_id, failure in {"d": {"kind": "out_of_memory", "reason": "CUDA out of memory"},
                              "e": {"kind": "diverged", "reason": "loss diverged at epoch 1", "epoch": 1}}.items():
        run.failure_file(f"mlp_{trial_id}").parent.mkdir(parents=True)
        run.failure_file(f"mlp_{trial_id}").write_text(json.dumps(failure))
    monkeypatch.setattr(search.trials, "ExperimentAnalysis", lambda path, **_: SimpleNamespace(trials=trials))
    return trials_table(run).set_index("trial_id")


def test_every_stop_reason_comes_from_the_trials_own_record(table):
    assert table["stop_reason"].to_dict() == {"a": "patience", "b": "max_epochs", "c": "asha",
                                              "d": "out_of_memory", "e": "diverged", "f": "unfinished"}
    assert table.loc["d", "error"] == "CUDA out of memory" and table.loc["e", "epochs"] == 1


def test_rows_are_ranked_by_score_and_carry_what_the_trial_reported(table):
    # by score, the finished first: d failed after a score better than c's; trials without one last
    assert list(table.index) == ["b", "a", "c", "d", "f", "e"]
    assert table.loc["a", "params"] == 1234 and table.loc["a", "best_epoch"] == 20
    assert json.loads(table.loc["a", "config"]) == trial_config(CONFIG).to_dict()
    assert list(table.loc["a", "hidden"]) == [8] and table.loc["a", "lr"] == 1e-3 and table.loc["a", "ema"] == 0


def test_trials_parquet_is_written_with_its_declared_schema_even_with_no_trial(tmp_path, monkeypatch):
    import pandas as pd
    import pyarrow.parquet as pq

    from search.trials import SCHEMA, write_trials_table

    run = RunFolder(tmp_path / "r")
    run.path.mkdir()
    trials = [tune_trial("a", "TERMINATED", result(20, 150.0, stop="patience")), tune_trial("e", "ERROR")]
    for listed in (trials, []):
        monkeypatch.setattr(search.trials, "ExperimentAnalysis",
                            lambda path, listed=listed, **_: SimpleNamespace(trials=listed))
        write_trials_table(run, ["score"])
        assert pq.read_schema(run.trials_table).remove_metadata() == SCHEMA
        assert list(pd.read_parquet(run.trials_table).columns) == SCHEMA.names
    assert pd.read_parquet(run.trials_table).empty


def test_a_trials_row_has_every_column_of_the_schema_but_pareto(tmp_path):
    from search.trials import SCHEMA, trial_row

    row = trial_row(RunFolder(tmp_path / "r"), tune_trial("a", "TERMINATED", result(20, 150.0)))
    assert list(row) == [name for name in SCHEMA.names if name != "pareto"]
