"""`python -m search.run`: its checks in-process, then end to end in subprocesses as a user runs it
(real Ray, real Optuna)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml

from search.record import record
from search.run import main

from cli import command, epochs_done, run, start, tiny_space, wait_for
from conftest import make_tree



@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree", per_class=8)


def trials(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "trials.parquet")


def test_a_batch_larger_than_the_training_set_is_refused_before_anything_starts(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    space.write_text(space.read_text().replace("batch_size: 40", "batch_size: {choice: [40, 100]}"))
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    assert "space.batch_size: 100 is more than the 80 training images" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_a_run_is_not_resumed_on_other_data(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    run_dir = tmp_path / "runs" / "t"
    run_dir.mkdir(parents=True)
    (run_dir / "space.yaml").write_text(space.read_text())
    record(run_dir, "/somewhere/else.zip")
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    assert f"--data {data_dir}: this run started with /somewhere/else.zip" in capsys.readouterr().err


@pytest.mark.slow
def test_search_runs_and_writes_the_run_folder(tmp_path, data_dir):
    space = tiny_space(tmp_path)
    proc = run(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"
    df = trials(run_dir)
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}
    assert set(df["stop_reason"]) == {"max_t"} and set(df["epochs"]) == {4}
    assert df["best_val_loss"].is_monotonic_increasing  # sorted best first
    assert yaml.safe_load((run_dir / "space.yaml").read_text()) == yaml.safe_load(space.read_text())
    for d in df["trial_dir"]:
        assert d.startswith(str(run_dir / "mlp_"))
        lines = (Path(d) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
        assert list(Path(d).glob("checkpoint_*")), "checkpoints reach the run folder"
        assert list((Path(d) / "grids").glob("*.png"))
    # ... and the final stage ran on the best trial (its own tests are in test_final.py)
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["trial_id"]) == {df["trial_id"].iloc[0]} and len(board) == 2

    # The same command again does not start a second experiment: it finds nothing left to do.
    again = run(command(space, data_dir, tmp_path / "runs"))
    assert again.returncode == 0 and "resuming" in again.stdout
    assert len(trials(run_dir)) == 3

    # ... nor resumes it on other data.
    other = run(command(space, make_tree(tmp_path / "other", per_class=8), tmp_path / "runs"))
    assert other.returncode == 2 and "this run started with" in other.stderr

    # A changed space file is refused instead of mixing two searches in one folder.
    space.write_text(space.read_text().replace("latent: 4", "latent: 5"))
    changed = run(command(space, data_dir, tmp_path / "runs"))
    assert changed.returncode == 2 and "differs from" in changed.stderr
    assert run(command(space, data_dir, tmp_path / "runs", "--fresh")).returncode == 0


@pytest.mark.slow
def test_diverging_trials_fail_with_their_reason_and_the_search_finishes(tmp_path, data_dir):
    space = tiny_space(tmp_path, num_samples=4, seed=0, sampler={"n_startup_trials": 4})
    raw = yaml.safe_load(space.read_text())
    raw["space"]["lr"] = {"choice": [1e-3, 1e6]}
    raw["space"]["likelihood"] = "gaussian_learned"
    space.write_text(yaml.safe_dump(raw))
    proc = run(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    df = trials(tmp_path / "runs" / "t")
    assert len(df) == 4
    bad, good = df[df["lr"] == 1e6], df[df["lr"] == 1e-3]
    assert len(bad) and len(good), "seed 0 samples both learning rates"
    assert set(bad["status"]) == {"ERROR"} and set(bad["stop_reason"]) == {"diverged"}
    assert all("diverged at epoch" in e for e in bad["error"])
    assert set(good["status"]) == {"TERMINATED"}
    assert good["best_val_loss"].notna().all() and (bad["epochs"] >= 1).all()

    # Resuming retries errored trials (resume_errored), but a divergence is not recomputed.
    before = {d: (Path(d) / "metrics.jsonl").read_text() for d in bad["trial_dir"]}
    again = run(command(space, data_dir, tmp_path / "runs"))
    assert again.returncode == 0 and "resuming" in again.stdout
    df2 = trials(tmp_path / "runs" / "t")
    assert set(df2[df2["lr"] == 1e6]["stop_reason"]) == {"diverged"}
    assert {d: (Path(d) / "metrics.jsonl").read_text() for d in bad["trial_dir"]} == before


KILL_POINTS = {
    # right after Ray starts, before any trial reported
    "startup": lambda run_dir: (run_dir / "space.yaml").exists() and any(run_dir.glob("experiment_state*")),
    # one trial finished, the next one in the middle of its epochs
    "mid_second_trial": lambda run_dir: any(len(v) == 6 for v in epochs_done(run_dir).values())
    and any(3 <= len(v) < 6 for v in epochs_done(run_dir).values()),
    # in the middle of the first trial, after its first checkpoint
    "mid_first_trial": lambda run_dir: any(len(v) >= 3 for v in epochs_done(run_dir).values()),
}


@pytest.fixture(scope="module")
def slower_data_dir(tmp_path_factory):
    """Enough images that an epoch lasts a fraction of a second: room to kill mid-trial."""
    return make_tree(tmp_path_factory.mktemp("data") / "tree", per_class=60)


@pytest.mark.slow
@pytest.mark.parametrize("moment", list(KILL_POINTS))
def test_sigkill_then_resume_loses_nothing(tmp_path, slower_data_dir, moment):
    data_dir = slower_data_dir
    space = tiny_space(tmp_path, num_samples=3, asha={"max_t": 6, "grace_period": 6, "reduction_factor": 2})
    raw = yaml.safe_load(space.read_text())
    raw["space"] = {"family": "cnn", "conv": {"layers": 2, "channels": 32, "kernel_size": 4, "stride": 2,
                    "padding": 1}, "h": 128, "latent": 8, "lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": 30}
    space.write_text(yaml.safe_dump(raw))
    storage, run_dir = tmp_path / "runs", tmp_path / "runs" / "t"
    cmd = command(space, data_dir, storage)
    proc = start(cmd)
    try:
        wait_for(lambda: KILL_POINTS[moment](run_dir), proc)
        finished_before = {k: v for k, v in epochs_done(run_dir).items() if len(v) == 6}
        results_before = {k: (run_dir / k / "metrics.jsonl").read_text() for k in finished_before}
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and every Ray process it started
        proc.wait()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)

    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = trials(run_dir)
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}, df[["trial_id", "status", "error"]]
    done = epochs_done(run_dir)
    for name, text in results_before.items():  # finished trials are not touched again
        assert (run_dir / name / "metrics.jsonl").read_text() == text
    for name, epochs in done.items():  # unfinished ones continued from a checkpoint, not from zero
        assert sorted(set(epochs)) == [1, 2, 3, 4, 5, 6], (name, epochs)
        assert epochs.count(1) == 1 or moment == "startup", (name, epochs)


@pytest.mark.slow
def test_sigterm_saves_state_like_ctrl_c(tmp_path, slower_data_dir):
    space = tiny_space(tmp_path, num_samples=2, asha={"max_t": 8, "grace_period": 8, "reduction_factor": 2})
    run_dir = tmp_path / "runs" / "t"
    cmd = command(space, slower_data_dir, tmp_path / "runs")
    proc = start(cmd)
    try:
        wait_for(lambda: any(len(v) >= 2 for v in epochs_done(run_dir).values()), proc)
        proc.send_signal(signal.SIGTERM)  # to the driver only, as a preempting scheduler would
        out, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 130 and "run the same command to resume" in out, out[-3000:]
    assert (run_dir / "trials.parquet").exists()
    resumed = run(cmd)
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    df = trials(run_dir)
    assert len(df) == 2 and set(df["epochs"]) == {8}


@pytest.mark.slow
def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, data_dir):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        space = tiny_space(tmp_path, num_samples=4, max_concurrent=2,
                           asha={"max_t": 6, "grace_period": 6, "reduction_factor": 2})
        proc = run(command(space, data_dir, tmp_path / "runs", "--address", cluster.address))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        df = trials(tmp_path / "runs" / "t")
        assert len(df) == 4 and set(df["status"]) == {"TERMINATED"}
        assert set(df["node_id"]) == {cluster.head_node.node_id, worker.node_id}
    finally:
        cluster.shutdown()
