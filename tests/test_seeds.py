"""search.seeds: every seed from search.seed and the trial's place, so a search reruns."""

from __future__ import annotations

import zlib

import pandas as pd
import pytest
import yaml
from cli import command, in_process, run, tiny_space
from conftest import make_tree

from search.seeds import TRIAL_NUMBER, retraining_seed, trial_seed


def test_each_trial_and_retraining_has_its_own_seed_fixed_by_the_search_seed():
    seeds = {trial_seed(s, {TRIAL_NUMBER: n}, f"t{n}") for s in (0, 1) for n in range(50)}
    assert len(seeds) == 100
    assert trial_seed(3, {TRIAL_NUMBER: 7, "family": "cnn"}, "a") == trial_seed(3, {TRIAL_NUMBER: 7}, "b")
    assert trial_seed(0, {"preset": "cnn-arch3-M3"}, "a") != trial_seed(0, {"preset": "cnn-arch3-M4"}, "a")
    own = trial_seed(0, {TRIAL_NUMBER: 0}, "a")
    assert len({own, *(retraining_seed(own, k) for k in range(3))}) == 4


def test_a_run_of_a_version_without_derived_seeds_goes_on_with_the_seeds_it_had():
    """Its trials trained with crc32 of their Tune id and its finalists with their index; a
    resumed search and its final stage keep to them instead of failing."""
    assert trial_seed(0, {"family": "mlp", "lr": 1e-3}, "5e6f7a8b") == zlib.crc32(b"5e6f7a8b")
    unrecorded = [retraining_seed(None, k) for k in range(2)]
    assert unrecorded == [retraining_seed(float("nan"), k) for k in range(2)] == [0, 1]


@pytest.mark.slow
def test_the_same_space_seed_and_data_give_the_same_search_bit_for_bit(tmp_path, ray_session):
    """One trial at a time: the same configurations, seeds, ASHA cuts and scores, and the same
    final-stage retrainings and FIDs, although Tune's trial ids differ. The second run is a process
    of its own, as a rerun is: its hash seed differs, so nothing may follow a set's order."""
    data = make_tree(tmp_path / "tree", per_class=8)
    space = tiny_space(tmp_path, num_samples=4, searcher={"n_startup_trials": 2}, seed=3,
                       asha={"max_t": 6, "grace_period": 2, "reduction_factor": 2}, final={"seeds": 2})
    raw = yaml.safe_load(space.read_text())
    raw["space"].update(ema={"choice": [0.0, 0.9]}, beta={"uniform": [0.5, 1.0]})  # several keys sampled, in order
    space.write_text(yaml.safe_dump(raw))
    columns = ["seed", "config", "status", "stop_reason", "epochs", "score", "score_epoch", "best_val_loss"]
    runs = []
    for storage, runner in (("a", in_process), ("b", run)):
        proc = runner(command(space, data, tmp_path / storage))
        assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
        trials = pd.read_parquet(tmp_path / storage / "t" / "trials.parquet").sort_values("seed")
        board = pd.read_parquet(tmp_path / storage / "t" / "leaderboard.parquet").sort_values(["search_score", "seed"])
        runs.append((trials, board))
    (a, board_a), (b, board_b) = runs
    assert set(a["trial_id"]).isdisjoint(b["trial_id"])
    assert a["config"].nunique() == 4 and a["seed"].nunique() == 4
    pd.testing.assert_frame_equal(a[columns].reset_index(drop=True), b[columns].reset_index(drop=True))
    assert len(board_a) == 4  # the best trial, retrained twice, with two samplers
    for column in ("seed", "sampler", "search_score", "best_val_loss", "fid"):
        assert board_a[column].tolist() == board_b[column].tolist(), column
    assert board_a.drop_duplicates("seed")["best_val_loss"].nunique() == 2  # the retrainings' seeds differ
