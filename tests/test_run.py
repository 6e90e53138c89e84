"""`python -m search.run`: its checks in-process, then end to end in subprocesses as a user runs it
(real Ray, real Optuna)."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli import ROOT, command, epochs_done, run, start, tiny_space, wait_for
from conftest import make_tree

from results.run_folder import RunFolder
from search.run import main


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
    RunFolder(run_dir).record_source("/somewhere/else.zip")
    assert main(command(space, data_dir, tmp_path / "runs")[3:]) == 2
    assert f"--data {data_dir}: this run started with /somewhere/else.zip" in capsys.readouterr().err


def test_fresh_deletes_only_a_run_folder(tmp_path, data_dir, capsys):
    precious = tmp_path / "runs" / "precious"
    precious.mkdir(parents=True)
    (precious / "thesis.tex").write_text("years of work")
    args = command(tiny_space(tmp_path), data_dir, tmp_path / "runs", "--name", "precious", "--fresh")[3:]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"{precious}: exists and is not a search run (no space.yaml); nothing was deleted" in err
    assert (precious / "thesis.tex").read_text() == "years of work"


@pytest.mark.parametrize("name", ["..", ".", "a/b", ""])
def test_name_must_be_a_plain_folder_name(tmp_path, data_dir, capsys, name):
    (tmp_path / "runs").mkdir()
    (tmp_path / "keep.txt").write_text("x")
    assert main(command(tiny_space(tmp_path), data_dir, tmp_path / "runs", "--name", name, "--fresh")[3:]) == 2
    assert capsys.readouterr().err.startswith(f"error: --name: {name!r} must be")
    assert (tmp_path / "keep.txt").exists() and not any((tmp_path / "runs").iterdir())


def test_storage_that_is_a_file_or_under_a_file_is_refused_before_ray(tmp_path, data_dir, capsys):
    afile = tmp_path / "afile"
    afile.write_text("x")
    space = tiny_space(tmp_path)
    assert main(command(space, data_dir, afile)[3:]) == 2
    assert capsys.readouterr().err.strip() == f"error: --storage {afile}: is a file, not a folder"
    assert main(command(space, data_dir, afile / "runs")[3:]) == 2
    assert f"error: --storage {afile / 'runs'}: cannot be created ({afile} is not a folder" in capsys.readouterr().err


def test_a_flag_that_is_wrong_is_named(tmp_path, data_dir, capsys):
    space = tiny_space(tmp_path)
    assert main(command(space, data_dir, tmp_path / "runs", "--num-samples", "0")[3:]) == 2
    assert capsys.readouterr().err.strip() == "error: --num-samples 0: must be >= 1"
    with pytest.raises(SystemExit) as exit_:
        main(command(space, data_dir, tmp_path / "runs", "--num-samples", "many")[3:])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip() == "error: argument --num-samples: invalid int value: 'many'"
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("address, message", [
    ("not-a-host", "--address not-a-host: expected 'auto' or HOST:PORT"),
    ("127.0.0.1:1", "--address 127.0.0.1:1: cannot reach 127.0.0.1:1 (Connection refused)"),
    ("no-such-host.invalid:6379", "--address no-such-host.invalid:6379: unknown host 'no-such-host.invalid'"),
])
def test_an_unreachable_cluster_is_one_line_at_once(tmp_path, data_dir, capsys, address, message):
    t0 = time.monotonic()
    assert main(command(tiny_space(tmp_path), data_dir, tmp_path / "runs", "--address", address)[3:]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: {message}") and err.count("\n") == 1
    assert time.monotonic() - t0 < 30 and not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_a_trial_larger_than_every_node_is_refused_with_nothing_written(tmp_path, data_dir):
    space = tiny_space(tmp_path, resources={"cpu": 64})
    proc = run(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"error: {space}: search.resources: a trial needs 64 CPU + 0 GPU and no node" in proc.stderr
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_an_address_that_answers_but_not_as_ray_ends_in_one_line(tmp_path, data_dir):
    with socket.socket() as listener:  # accepts connections, says nothing
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        t0 = time.monotonic()
        proc = run(command(tiny_space(tmp_path), data_dir, tmp_path / "runs", "--address", address), timeout=120)
        waited = time.monotonic() - t0
    assert proc.returncode == 2 and waited < 45, (waited, proc.stderr[-2000:])
    assert proc.stderr.strip().splitlines() == [
        f"error: --address {address}: no Ray cluster answered within 20 s; check that it is the head node's GCS "
        "port and, for a cluster with token authentication, RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN "
        "(README: More nodes)"]


@pytest.mark.slow
def test_a_cluster_that_refuses_the_token_ends_in_one_line_naming_the_settings(tmp_path, data_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "a" * 32}
    ray_tmp = tempfile.mkdtemp(prefix="ray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = subprocess.Popen(["ray", "start", "--head", f"--port={port}", "--num-cpus=1", "--include-dashboard=false",
                             "--block", f"--temp-dir={ray_tmp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        t0 = time.monotonic()
        while time.monotonic() - t0 < 60:
            with socket.socket() as probe:
                if probe.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.5)
        cmd = command(tiny_space(tmp_path), data_dir, tmp_path / "runs", "--address", f"127.0.0.1:{port}")
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=120,
                              env={**env, "RAY_AUTH_TOKEN": "b" * 32})
    finally:
        os.killpg(head.pid, signal.SIGKILL)
        head.wait()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip().splitlines()[-1] == (
        f"error: --address 127.0.0.1:{port}: the cluster refused this driver's authentication token; "
        "set RAY_AUTH_MODE=token and the cluster's RAY_AUTH_TOKEN (README: More nodes)")
    assert not (tmp_path / "runs").exists()


@pytest.mark.slow
def test_search_runs_and_writes_the_run_folder(tmp_path, data_dir):
    space = tiny_space(tmp_path)
    proc = run(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"
    df = trials(run_dir)
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}
    assert set(df["stop_reason"]) == {"max_epochs"} and set(df["epochs"]) == {4}
    assert df["score"].is_monotonic_increasing and df["score"].notna().all()  # sorted best first
    assert set(df["objective"]) == {"fid"} and (df["score"] == df["fid"]).all() and df["kid"].notna().all()
    assert set(df["score_epoch"]) == {4}  # the one milestone, also the last epoch
    assert yaml.safe_load((run_dir / "space.yaml").read_text()) == yaml.safe_load(space.read_text())
    for d in df["trial_dir"]:
        assert d.startswith(str(run_dir / "mlp_"))
        lines = (Path(d) / "metrics.jsonl").read_text().splitlines()
        assert [json.loads(x)["epoch"] for x in lines] == [1, 2, 3, 4]
        assert list(Path(d).glob("checkpoint_*")), "checkpoints reach the run folder"
        assert list((Path(d) / "grids").glob("*.png"))
    # ... and the final stage ran on the best trial (its own tests are in test_final.py), saying so
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["trial_id"]) == {df["trial_id"].iloc[0]} and len(board) == 2
    assert set(board["search_score"]) == {df["score"].iloc[0]} and set(board["search_objective"]) == {"fid"}
    assert "final stage: retraining 1 trial(s) x 1 seed(s), scoring with tiny-random" in proc.stdout
    assert re.search(r"mlp_\w+_s0: epoch +1 +train ", proc.stdout) and "gmm sampler: FID " in proc.stdout
    extractors = json.loads((run_dir / "feature_extractor.json").read_text())
    assert extractors == {"search": "tiny-random", "final": "tiny-random"}

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


def results_of(trial_dir) -> list[dict]:
    """Every result Tune recorded for a trial, in order."""
    return [json.loads(line) for line in (Path(trial_dir) / "result.json").read_text().splitlines() if line]


@pytest.mark.slow
def test_asha_the_table_and_the_finalists_follow_the_score_in_a_search_over_two_likelihoods(tmp_path, data_dir):
    """(That they follow the score where it and the validation loss disagree: test_schedulers.py,
    test_final.py; here, that a real search hands them the score.)"""
    space = tiny_space(tmp_path, num_samples=4, seed=0, sampler={"n_startup_trials": 4}, patience=3,
                       asha={"max_t": 8, "grace_period": 2, "reduction_factor": 2})
    raw = yaml.safe_load(space.read_text())
    raw["space"]["likelihood"] = {"choice": ["bernoulli", "gaussian_learned"]}
    space.write_text(yaml.safe_dump(raw))
    proc = run(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    run_dir = tmp_path / "runs" / "t"
    df = trials(run_dir)
    done = df[df["status"] == "TERMINATED"]
    assert len(done) == 4 and set(done["likelihood"]) == {"bernoulli", "gaussian_learned"}
    assert done["score"].notna().all() and df["score"].is_monotonic_increasing

    milestones = {2, 4, 8}
    asha = json.loads((run_dir / "asha_state.json").read_text())
    rungs = dict(zip(asha["milestones"][0], asha["rungs"][0]))
    for row in done.itertuples():
        results = results_of(row.trial_dir)
        last = results[-1]["epoch"]
        # scored at the milestones it reached and at its last epoch, nowhere else, each score once
        assert {r["score_epoch"] for r in results if "score" in r} == {m for m in milestones if m <= last} | {last}
        assert all("score" not in r for r in results if r["epoch"] < 2)
        for r in results:
            if "score" in r:
                assert r["score"] == r["fid"] and r["objective"] == "fid"
        # ASHA compared the scores at its milestones, not the validation loss
        by_epoch = {r["epoch"]: r for r in results}
        for milestone, recorded in rungs.items():
            if row.trial_id in recorded:
                assert recorded[row.trial_id] == pytest.approx(-by_epoch[int(milestone)]["score"])
        assert row.score == results[-1]["score"] and row.score_epoch == last
    assert any(rungs.values()), "ASHA recorded something"

    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["trial_id"]) == {df["trial_id"].iloc[0]}  # the finalist is the best score


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
    for d in bad["trial_dir"]:  # Ray's own record of the error is the divergence too, not a pickling error
        assert "loss diverged at epoch" in (Path(d) / "error.txt").read_text()
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
        scored_before = {p.parent.name: results_of(p.parent)[-1]["score"] for p in run_dir.glob("*/result.json")
                         if any(r.get("score_epoch") == 6 for r in results_of(p.parent))}
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
    for name, score in scored_before.items():  # ... nor rescored
        assert df.set_index("trial_dir").loc[str(run_dir / name), "score"] == score
    assert df["score"].notna().all() and set(df["score_epoch"]) == {6}
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
