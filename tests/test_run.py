"""`python -m search.run`: its checks in-process, then end to end in subprocesses as a user runs it
(real Ray, real Optuna)."""

from __future__ import annotations

import json
import re
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli import command, epochs_done, in_process, kill, output, records, run, start, tiny_space, wait_for
from conftest import DIVERGING_LR, make_tree

from cvae_core.atomic import read_records
from results.run_folder import RunFolder
from search.run import main


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_tree(tmp_path_factory.mktemp("data") / "tree", per_class=8)


def trials(run_dir: Path) -> pd.DataFrame:
    return pd.read_parquet(run_dir / "trials.parquet")


def converged(df: pd.DataFrame) -> pd.DataFrame:
    """The trials that did not diverge."""
    return df[df["lr"] != DIVERGING_LR]


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
def test_a_trial_larger_than_every_node_is_refused_with_nothing_written(tmp_path, data_dir, ray_session):
    space = tiny_space(tmp_path, resources={"cpu": 64})
    proc = in_process(command(space, data_dir, tmp_path / "runs"))
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert f"error: {space}: search.resources: a trial needs 64 CPU + 0 GPU and no node" in proc.stderr
    assert not (tmp_path / "runs").exists()


MILESTONES = {2, 4, 8}


@pytest.mark.slow
def test_a_search_writes_each_trials_record_into_the_run_folder(searched):
    run_dir, df = searched.run_dir, converged(trials(searched.run_dir))
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}
    assert set(df["likelihood"]) == {"bernoulli", "gaussian_learned"}
    assert set(df["stop_reason"]) <= {"patience", "max_epochs", "asha"}
    assert yaml.safe_load((run_dir / "space.yaml").read_text()) == yaml.safe_load(searched.space.read_text())
    for row in df.itertuples():
        assert row.trial_dir.startswith(str(run_dir / "mlp_"))
        epochs = records(row.trial_dir)
        assert [e["epoch"] for e in epochs] == list(range(1, row.epochs + 1))
        assert (epochs[-1]["stop"] is not None) == (row.stop_reason != "asha")  # the loop says why it stopped
        assert (Path(row.trial_dir) / "checkpoint.pt").exists() and list((Path(row.trial_dir) / "grids").glob("*"))
        assert list(Path(row.trial_dir).glob("events.out.tfevents.*"))  # TensorBoard
        assert row.params > 0 and json.loads(row.config)["likelihood"] == row.likelihood
    # The final stage ran on the best trials (its own tests are in test_final.py), saying so.
    board = pd.read_parquet(run_dir / "leaderboard.parquet")
    assert set(board["trial_id"]) == set(df["trial_id"].iloc[:2]) and len(board) == 8
    assert set(board["search_score"]) == set(df["score"].iloc[:2]) and set(board["search_objective"]) == {"fid"}
    out = searched.proc.stdout
    assert "final stage: retraining 2 trial(s) x 2 seed(s), scoring with tiny-random" in out
    assert re.search(r"mlp_\w+_s0: epoch +1 +train ", out) and "gmm sampler: FID " in out
    extractors = json.loads((run_dir / "feature_extractor.json").read_text())
    assert extractors == {"search": "tiny-random", "final": "tiny-random"}


@pytest.mark.slow
def test_asha_the_table_and_the_finalists_follow_each_trials_score(searched):
    """A real search hands them the score (that they follow it where the validation loss
    disagrees: test_schedulers.py, test_final.py)."""
    run_dir, df = searched.run_dir, converged(trials(searched.run_dir))
    assert df["score"].notna().all() and df["score"].is_monotonic_increasing
    assert set(df["objective"]) == {"fid"} and (df["score"] == df["fid"]).all() and df["kid"].notna().all()
    rungs = {}  # (milestone, trial) -> what ASHA recorded, from its append-only file
    for record in read_records(run_dir / "asha_state.jsonl"):
        if "milestone" in record:  # a rung record, not a stop
            rungs[record["milestone"], record["trial"]] = record["value"]
    assert rungs, "ASHA recorded something"
    for row in df.itertuples():
        scores = records(row.trial_dir, "scores.jsonl")
        # scored at the milestones it reached and at its last epoch, nowhere else, each once
        assert [s["score_epoch"] for s in scores] == sorted({m for m in MILESTONES if m <= row.epochs} | {row.epochs})
        assert all(s["score"] == s["fid"] for s in scores)
        assert row.score == scores[-1]["score"] and row.score_epoch == row.epochs
        for s in scores:  # ASHA compared these scores (negated: it maximises), not validation losses
            if (s["score_epoch"], row.trial_id) in rungs:
                assert rungs[s["score_epoch"], row.trial_id] == pytest.approx(-s["score"])


@pytest.mark.slow
def test_the_same_command_resumes_and_a_changed_one_is_refused(searched, tmp_path, ray_session):
    run_dir, space, storage, data = searched.run_dir, searched.space, searched.storage, searched.data
    before = {d: (Path(d) / "metrics.jsonl").read_text() for d in trials(run_dir)["trial_dir"]}
    rows = sorted(run_dir.glob("final/*/rows/*.json"))
    gone, kept = rows[0], {p: p.read_text() for p in rows[1:]}
    trained = {p: p.stat().st_mtime_ns for p in run_dir.glob("final/*/train.json")}
    gone.unlink()
    again = in_process(command(space, data, storage))  # no second experiment: only the missing row is redone
    assert again.returncode == 0 and "resuming" in again.stdout, again.stdout[-2000:] + again.stderr[-2000:]
    # A retried trial that diverged is not trained again (resume_errored retries errored trials).
    assert {d: (Path(d) / "metrics.jsonl").read_text() for d in trials(run_dir)["trial_dir"]} == before
    df = trials(run_dir)
    assert set(df[df["lr"] == DIVERGING_LR]["stop_reason"]) == {"diverged"}
    assert gone.exists() and {p: p.read_text() for p in rows[1:]} == kept
    assert {p: p.stat().st_mtime_ns for p in run_dir.glob("final/*/train.json")} == trained  # no retraining
    assert len(pd.read_parquet(run_dir / "leaderboard.parquet")) == 8

    other = in_process(command(space, make_tree(tmp_path / "other", per_class=8), storage))
    assert other.returncode == 2 and "this run started with" in other.stderr
    changed = tmp_path / "changed.yaml"
    changed.write_text(space.read_text().replace("latent: 4", "latent: 5"))
    refused = in_process(command(changed, data, storage, "--name", "t"))
    assert refused.returncode == 2 and "differs from" in refused.stderr

    # --fresh deletes the run and starts over (stopped here once the old trials are gone), on a copy.
    copy = Path(shutil.copytree(run_dir, tmp_path / "runs" / "t"))
    old = [copy / Path(d).name for d in before]
    proc = start(command(changed, data, tmp_path / "runs", "--name", "t", "--fresh"))
    try:  # the new space file is written once the old run is deleted
        wait_for(lambda: (copy / "space.yaml").exists() and "latent: 5" in (copy / "space.yaml").read_text(), proc)
    finally:
        kill(proc)
    assert not any(d.exists() for d in old)


@pytest.mark.slow
def test_a_diverging_trial_fails_with_its_reason_and_the_search_finishes(searched):
    df = trials(searched.run_dir)
    bad, good = df[df["lr"] == DIVERGING_LR], converged(df)
    assert len(bad) == 1 and len(good) == 3
    assert set(bad["status"]) == {"ERROR"} and set(bad["stop_reason"]) == {"diverged"}
    assert all("diverged at epoch" in e for e in bad["error"])
    for d in bad["trial_dir"]:  # Ray's own record of the error is the divergence too, not a pickling error
        assert "loss diverged at epoch" in (Path(d) / "error.txt").read_text()
    assert set(good["status"]) == {"TERMINATED"}
    assert good["best_val_loss"].notna().all() and (bad["epochs"] >= 1).all()


@pytest.fixture(scope="module")
def slower_data_dir(tmp_path_factory):
    """Enough images that an epoch lasts a fraction of a second: room to kill mid-trial."""
    return make_tree(tmp_path_factory.mktemp("data") / "tree", per_class=40)


def finished(run_dir: Path) -> dict[str, str]:
    """The trials that are done (their checkpoint holds their last epoch), with their epoch records."""
    import torch

    done = {}
    for d in run_dir.glob("cnn_*"):
        last = records(d)[-1:]
        if last and last[0]["stop"] is not None and (d / "checkpoint.pt").exists():
            if torch.load(d / "checkpoint.pt", weights_only=True)["epoch"] == last[0]["epoch"]:
                done[d.name] = (d / "metrics.jsonl").read_text()
    return done


@pytest.mark.slow
def test_interrupted_at_any_moment_a_search_resumes_losing_nothing(tmp_path, slower_data_dir, ray_session):
    """SIGKILL right after Ray starts, SIGTERM (a preempted node) mid-trial, SIGKILL mid-trial
    after a checkpoint, SIGKILL right after a trial finished (before any periodic save) and SIGTERM
    in the final stage: after each the same command resumes; in the end no trial or finalist is
    forgotten, rerun or restarted."""
    space = tiny_space(tmp_path, num_samples=3, asha={"max_t": 8, "grace_period": 8, "reduction_factor": 2})
    raw = yaml.safe_load(space.read_text())
    raw["space"] = {"family": "cnn", "conv": {"layers": 2, "channels": 16, "kernel_size": 4, "stride": 2,
                    "padding": 1}, "h": 64, "latent": 8, "lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": 20}
    raw["final"].update(max_epochs=10, patience=10)  # long enough to be stopped in the middle
    space.write_text(yaml.safe_dump(raw))
    run_dir = tmp_path / "runs" / "t"
    cmd = command(space, slower_data_dir, tmp_path / "runs")
    done_before_kill = {}

    def trains_at(lo, hi):
        """The moment an unfinished trial has between lo and hi epochs, one of them trained by this
        command (not left over from the last one, which would be a kill at startup)."""
        before = epochs_done(run_dir)

        def moment():
            done = finished(run_dir)
            return any(lo <= len(v) < hi and len(v) > len(before.get(name, [])) for name, v in
                       epochs_done(run_dir).items() if name not in done)
        return moment

    def interrupt(what, moment, sig=signal.SIGKILL):
        proc = start(cmd)
        try:
            wait_for(moment, proc, what=what)
            done_before_kill.update(finished(run_dir))
            if sig == signal.SIGTERM:
                proc.send_signal(sig)  # the driver only, as a preempting scheduler would
                assert proc.wait(timeout=120) == 130 and "interrupted: run the same command" in output(proc)
        finally:
            kill(proc)

    interrupt("startup", lambda: (run_dir / "space.yaml").exists() and any(run_dir.glob("experiment_state*")))
    interrupt("a trial done", lambda: finished(run_dir))  # at once after the first trial is done
    interrupt("preempted mid-trial", trains_at(2, 8), signal.SIGTERM)
    interrupt("mid-trial", trains_at(3, 7))  # after a checkpoint
    # Tune's Ctrl-C handler outlives the search; it must not swallow this one.
    interrupt("preempted in the final stage", lambda: any(len(e) >= 2 for e in epochs_done(run_dir / "final").values()),
              signal.SIGTERM)

    resumed = in_process(cmd)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = trials(run_dir)
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}, df[["trial_id", "status", "error"]]
    assert done_before_kill, "some trial finished before a kill"
    for name, text in done_before_kill.items():  # finished trials are neither rerun nor rescored
        assert (run_dir / name / "metrics.jsonl").read_text() == text
        assert [s["score_epoch"] for s in records(run_dir / name, "scores.jsonl")] == [8]
    for name, epochs in epochs_done(run_dir).items():  # the others continued from their checkpoints
        assert sorted(set(epochs)) == list(range(1, 9)), (name, epochs)
        assert len(epochs) - len(set(epochs)) <= 3, (name, epochs)  # at most the epoch under way, per kill
    assert set(df["score_epoch"]) == {8} and df["score"].notna().all()
    [finalist] = epochs_done(run_dir / "final").values()  # the finalist continued from its checkpoint
    assert sorted(set(finalist)) == list(range(1, len(set(finalist)) + 1)) and finalist.count(1) == 1, finalist


@pytest.mark.slow
def test_two_node_cluster_runs_trials_on_both_nodes(tmp_path, data_dir):
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        space = tiny_space(tmp_path, num_samples=4, max_concurrent=2,
                           asha={"max_t": 4, "grace_period": 4, "reduction_factor": 2})
        proc = run(command(space, data_dir, tmp_path / "runs", "--address", cluster.address))
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        df = trials(tmp_path / "runs" / "t")
        assert len(df) == 4 and set(df["status"]) == {"TERMINATED"}
        assert set(df["node_id"]) == {cluster.head_node.node_id, worker.node_id}
    finally:
        cluster.shutdown()
