"""Interrupted at any moment, `python -m search.run` run again loses nothing finished: kills of the
command in a subprocess, as a user's Ctrl-C, a preempted node or an out-of-memory kill would
strike it, from its start to its final stage. (The longest test: a file of its own, so that run in
parallel it has a worker to itself; the final stage's own kill test is in test_final.py.)"""

from __future__ import annotations

import contextlib
import functools
import signal
from pathlib import Path

import pandas as pd
import pytest
import yaml
from cli import (
    assert_study_matches_trials,
    command,
    epochs_done,
    in_process,
    kill,
    output,
    records,
    start,
    tiny_space,
    wait_for,
)
from conftest import make_tree

from cvae_core.atomic import read_records
from cvae_core.layout import CHECKPOINT_FILE, METRICS_FILE
from results.run_folder import RunFolder
from results.study import FITTED_ON, load_study


@pytest.fixture(scope="module")
def slower_data_dir(tmp_path_factory):
    """Enough images that an epoch lasts a fraction of a second: room to kill mid-trial."""
    return make_tree(tmp_path_factory.mktemp("data") / "tree", per_class=40)


@functools.cache
def checkpoint_epoch(path: Path, version: tuple[int, int]) -> int:
    """The epoch a checkpoint file holds, loaded once per version (inode, mtime) of the file: the
    kill points are polled 20 times a second."""
    import torch

    return torch.load(path, weights_only=True)["epoch"]


def finished(run_dir: Path) -> dict[str, str]:
    """The trials that are done (their checkpoint holds their last epoch), with their epoch records."""
    done = {}
    for d in run_dir.glob("cnn_*"):
        last = records(d)[-1:]
        with contextlib.suppress(FileNotFoundError):
            if last and last[0]["stop"] is not None:
                checkpoint = d / CHECKPOINT_FILE
                version = checkpoint.stat()
                if checkpoint_epoch(checkpoint, (version.st_ino, version.st_mtime_ns)) == last[0]["epoch"]:
                    done[d.name] = (d / METRICS_FILE).read_text()
    return done


# n_startup_trials 2: the third trial is sampled by the searcher from the first two's scores: TPE
# fitted on their epoch-8 scores (the default), or spaces/cnn.yaml's GP told their last ones, with
# ASHA keeping the final scores its milestones are judged on (asha.min_agreement).
SEARCHERS = {"tpe-milestone": ({"n_startup_trials": 2}, {}, [8, None, None]),
             "gp-last": ({"model": "gp", "n_startup_trials": 2, "fit_on": "last"},
                         {"min_agreement": 0.5, "min_finished": 3}, [None, None, "last"])}


@pytest.mark.slow
@pytest.mark.parametrize("searcher", sorted(SEARCHERS))
def test_interrupted_at_any_moment_a_search_resumes_losing_nothing(tmp_path, slower_data_dir, ray_session, searcher):
    """SIGKILL right after Ray starts, SIGTERM (a preempted node) mid-trial, SIGKILL mid-trial
    after a checkpoint, SIGKILL right after a trial finished (before any periodic save), SIGTERM in
    the last trial and SIGTERM in the final stage: after each the same command resumes; in the end
    no trial or finalist is forgotten, rerun or restarted."""
    settings, agreement, fitted_on = SEARCHERS[searcher]
    space = tiny_space(tmp_path, num_samples=3, searcher=settings,
                       asha={"max_t": 8, "grace_period": 8, "reduction_factor": 2, **agreement})
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
                assert proc.wait(timeout=120) == 130
                # one instruction to resume, the command's own (Tune's points to Tuner.restore)
                said = output(proc)
                assert said.count("interrupted: run the same command") == 1 and "Tuner.restore" not in said, said
        finally:
            kill(proc)

    interrupt("startup", lambda: (run_dir / "space.yaml").exists() and any(run_dir.glob("experiment_state*")))
    interrupt("a trial done", lambda: finished(run_dir))  # at once after the first trial is done
    interrupt("preempted mid-trial", trains_at(2, 8), signal.SIGTERM)
    interrupt("mid-trial", trains_at(3, 7))  # after a checkpoint
    # Tune marks the trials it stops on a SIGTERM TERMINATED: in the last trial that is no finished search
    last_trial = trains_at(2, 8)
    interrupt("preempted in the last trial", lambda: len(list(run_dir.glob("cnn_*"))) == 3 and last_trial(),
              signal.SIGTERM)
    # Tune's Ctrl-C handler outlives the search; it must not swallow this one.
    interrupt("preempted in the final stage", lambda: any(len(e) >= 2 for e in epochs_done(run_dir / "final").values()),
              signal.SIGTERM)

    resumed = in_process(cmd)
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    df = pd.read_parquet(run_dir / "trials.parquet")
    assert len(df) == 3 and set(df["status"]) == {"TERMINATED"}, df[["trial_id", "status", "error"]]
    assert done_before_kill, "some trial finished before a kill"
    for name, text in done_before_kill.items():  # finished trials are neither rerun nor rescored
        assert (run_dir / name / METRICS_FILE).read_text() == text
        assert [s["score_epoch"] for s in records(run_dir / name, "scores.jsonl")] == [8]
    for name, epochs in epochs_done(run_dir).items():  # the others continued from their checkpoints
        assert sorted(set(epochs)) == list(range(1, 9)), (name, epochs)
        assert len(epochs) - len(set(epochs)) <= 3, (name, epochs)  # at most the epoch under way, per kill
    assert set(df["score_epoch"]) == {8} and df["score"].notna().all()
    assert_study_matches_trials(run_dir)  # the Optuna study went through the kills with the search
    fitted = [t.user_attrs.get(FITTED_ON) for t in load_study(run_dir).trials]
    assert sorted(fitted, key=str) == fitted_on, fitted  # ... and the searcher was fitted on it
    if agreement:  # ASHA's final scores, each recorded once through the kills, are the trials'
        finals = [r for r in read_records(RunFolder(run_dir).asha_state) if "final" in r]
        assert sorted((r["trial"], r["final"]) for r in finals) == sorted(zip(df["trial_id"], df["score"]))
    [finalist] = epochs_done(run_dir / "final").values()  # the finalist continued from its checkpoint
    assert sorted(set(finalist)) == list(range(1, len(set(finalist)) + 1)) and finalist.count(1) == 1, finalist
