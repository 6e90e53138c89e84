import json
import shutil
from types import SimpleNamespace

import pytest

from search.settings import Objective
from search.trainable import TrialFailed, check_earlier_failure

CONFIG = {"family": "mlp", "latent": 4, "mlp_layers": 1, "mlp_width": 8, "lr": 1e-3, "batch_size": 10,
          "trial_number": 0}  # as the searcher suggests it (search.seeds)


def test_a_retry_is_refused_after_a_divergence_and_clears_any_other_failure(tmp_path):
    from results.run_folder import RunFolder

    run = RunFolder(tmp_path)
    failure = run.failure_file("t")
    failure.parent.mkdir()
    failure.write_text(json.dumps({"kind": "out_of_memory", "reason": "CUDA out of memory"}))
    check_earlier_failure(run, "t")
    assert not failure.exists()  # the retry starts clean: it may finish, or fail otherwise
    check_earlier_failure(run, "t")  # nothing recorded: nothing to do

    failure.write_text(json.dumps({"kind": "diverged", "reason": "loss diverged at epoch 3"}))
    with pytest.raises(TrialFailed, match="loss diverged at epoch 3"):
        check_earlier_failure(run, "t")
    assert failure.exists()


def _asha_stopped_trial(tmp_path, monkeypatch):
    """A trial ASHA stopped after epoch 4, brought back by a restart after a kill: its run folder,
    its folder and the results run_trial reports (training it again fails the test)."""
    import search.trainable as trainable
    from cvae_core.atomic import append_records
    from cvae_core.layout import METRICS_FILE
    from results.run_folder import RunFolder, trial_name

    run = RunFolder(tmp_path / "run")
    folder = run.trial(trial_name(CONFIG, "abc"))
    folder.mkdir(parents=True)
    append_records(folder / METRICS_FILE, [{"epoch": e, "best_val_loss": 9.0 - e, "stop": None} for e in (1, 2, 3, 4)])
    append_records(run.scores_file(folder.name), [{"score": 50.0, "fid": 50.0, "kid": 0.1, "score_epoch": 4}])
    append_records(run.asha_state, [{"stopped": 1, "trial": "abc"}])
    reports = []
    monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "abc"))
    monkeypatch.setattr(trainable.tune, "report", reports.append)
    monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n1"))
    monkeypatch.setattr(trainable, "train", lambda *a, **k: pytest.fail("an ASHA-stopped trial trained again"))
    return run, folder, reports


def _restart(tree, run):
    from cvae_core.data import load_data
    from search.trainable import run_trial

    run_trial(CONFIG, load_data(tree), str(run.path), max_t=8,
              objective=Objective(metric="fid", feature_extractor="tiny-random"), score_at=frozenset({4}))


def test_a_trial_asha_stopped_before_a_kill_ends_at_once_when_the_restart_brings_it_back(tree, tmp_path,
                                                                                      monkeypatch):
    # Tune saves its state a moment after ASHA stops a trial; a kill in between brings the trial
    # back as unfinished. It must end as it ended, with its last epoch and score, not train on.
    run, folder, reports = _asha_stopped_trial(tmp_path, monkeypatch)
    left = [folder / ".checkpoint.pt.0a1b2c.tmp", folder / "grids" / ".epoch_0004.png.3d4e5f.tmp"]
    for path in left:  # the killed attempt was saving these
        path.parent.mkdir(exist_ok=True)
        path.write_bytes(b"half")
    _restart(tree, run)
    assert not any(path.exists() for path in left)
    assert len(reports) == 1
    assert reports[0]["epoch"] == 4 and reports[0]["score"] == 50.0 and reports[0]["stop"] is None  # -> "asha"


def test_a_worker_waits_for_its_last_trials_uploads_before_tune_hands_it_the_next(tree, tmp_path, monkeypatch):
    # Tune fails the next trial of a reused worker whose last trial's function has not returned
    # within TUNE_FUNCTION_THREAD_TIMEOUT_S (2 s by default, read in the worker); a trial's last
    # upload to a bucket may take longer. A user's own setting wins.
    import os

    monkeypatch.delenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", raising=False)
    run, _, _ = _asha_stopped_trial(tmp_path, monkeypatch)
    _restart(tree, run)
    assert int(os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"]) >= 60
    monkeypatch.setenv("TUNE_FUNCTION_THREAD_TIMEOUT_S", "5")
    _restart(tree, run)
    assert os.environ["TUNE_FUNCTION_THREAD_TIMEOUT_S"] == "5"


def test_a_restart_removes_the_empty_event_file_of_a_killed_attempt_and_keeps_the_curves(tree, tmp_path,
                                                                                       monkeypatch):
    from tensorboardX import SummaryWriter

    run, folder, _ = _asha_stopped_trial(tmp_path, monkeypatch)
    earlier = SummaryWriter(str(folder), filename_suffix=".earlier")  # an attempt that ended normally
    earlier.add_scalar("val_loss", 5.0, 1)
    earlier.close()
    killed = SummaryWriter(str(folder), filename_suffix=".killed")  # killed before its first flush
    killed.add_scalar("val_loss", 4.0, 2)
    empty = [p for p in folder.glob("events.out.tfevents.*") if p.stat().st_size == 0]
    assert [p.suffix for p in empty] == [".killed"]
    (folder / "notes.txt").touch()  # an empty file that is not TensorBoard's stays too

    _restart(tree, run)
    assert [p.suffix for p in folder.glob("events.out.tfevents.*")] == [".earlier"]
    assert (folder / "notes.txt").exists()
    killed.close()


def _val_loss_trial(tree, run, **kwargs):
    from cvae_core.data import load_data
    from search.trainable import run_trial

    run_trial(CONFIG, load_data(tree), str(run.path), max_t=3, objective=Objective(metric="val_loss"), **kwargs)


def test_a_val_loss_trial_is_scored_at_every_epoch_so_the_searcher_sees_its_curve(tree, tmp_path, monkeypatch):
    import torch

    import search.trainable as trainable
    from results.run_folder import RunFolder

    reports = []
    monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "abc"))
    monkeypatch.setattr(trainable.tune, "report", reports.append)
    monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n1"))
    monkeypatch.setattr(trainable, "claim_device", lambda *_: torch.device("cpu"))
    _val_loss_trial(tree, RunFolder(tmp_path / "run"))
    assert [r["epoch"] for r in reports] == [1, 2, 3]
    # the searcher takes a score as the trial's value at an epoch where score_epoch is that epoch
    assert all(r["score"] == r["best_val_loss"] and r["score_epoch"] == r["epoch"] for r in reports)


def test_a_val_loss_trial_asha_stopped_before_a_kill_keeps_its_score(tree, tmp_path, monkeypatch):
    run, _, reports = _asha_stopped_trial(tmp_path, monkeypatch)
    _val_loss_trial(tree, run)
    assert len(reports) == 1 and reports[0]["epoch"] == 4
    assert reports[0]["score"] == reports[0]["best_val_loss"] == 5.0 and reports[0]["score_epoch"] == 4


@pytest.mark.parametrize("objective", [Objective(metric="fid", feature_extractor="tiny-random", samples_per_class=2),
                                       Objective(metric="val_loss")], ids=["fid", "val_loss"])
def test_a_kill_between_a_milestones_checkpoint_and_its_report_loses_no_score(tree, tmp_path, monkeypatch, objective):
    # The checkpoint is saved before the report (Tune may stop the trial on it): a kill between
    # them restarts the trial after the milestone, whose score ASHA and the study must still get.
    import torch

    import search.trainable as trainable
    from cvae_core.data import load_data
    from results.run_folder import RunFolder
    from search.trainable import run_trial

    class Killed(BaseException):
        pass

    def killed_at_epoch_2(result):
        if result["epoch"] == 2:
            raise Killed
        reports.append(result)

    reports, run = [], RunFolder(tmp_path / "run")
    monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "abc"))
    monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n1"))
    monkeypatch.setattr(trainable, "claim_device", lambda *_: torch.device("cpu"))
    args = dict(max_t=5, checkpoint_every=2, score_at=frozenset({2, 4}), objective=objective)
    monkeypatch.setattr(trainable.tune, "report", killed_at_epoch_2)
    with pytest.raises(Killed):
        run_trial(CONFIG, load_data(tree), str(run.path), **args)
    monkeypatch.setattr(trainable.tune, "report", reports.append)
    run_trial(CONFIG, load_data(tree), str(run.path), **args)
    # epoch 1 before the kill; after it, epoch 2 again with its own score, as the searcher takes it
    if objective.scores_samples:
        assert [(r["epoch"], r.get("score_epoch")) for r in reports] == [(1, None), (2, 2), (3, 2), (4, 4), (5, 5)]
    else:  # val_loss: scored every epoch, by the best validation loss so far
        assert [(r["epoch"], r.get("score_epoch")) for r in reports] == [(1, 1), (2, 2), (3, 3), (4, 4), (5, 5)]
        assert reports[1]["score"] == reports[1]["best_val_loss"]


def test_a_resumed_trial_forgets_the_scores_and_grids_a_killed_attempt_made_past_its_checkpoint(tree, bucket,
                                                                                               monkeypatch):
    # The killed attempt scored epoch 4 and uploaded its folder there (a milestone), but its last
    # checkpoint is epoch 3. The next attempt stops sooner (max_t lowered here, as patience may):
    # epoch 4's score and grid must not read as its own, in the bucket either.
    import torch

    import search.trainable as trainable
    from cvae_core.data import load_data
    from results.run_folder import RunFolder, trial_name
    from search.trainable import run_trial

    class Killed(BaseException):
        pass

    def killed_at_epoch_4(result):
        if result["epoch"] == 4:
            raise Killed

    location = f"{bucket.uri}/runs/r"
    monkeypatch.setattr(trainable.tune, "get_context", lambda: SimpleNamespace(get_trial_id=lambda: "abc"))
    monkeypatch.setattr(trainable.ray, "get_runtime_context", lambda: SimpleNamespace(get_node_id=lambda: "n1"))
    monkeypatch.setattr(trainable, "claim_device", lambda *_: torch.device("cpu"))
    args = dict(checkpoint_every=3, grid_every=1, score_at=frozenset({2, 4}),
                objective=Objective(metric="fid", feature_extractor="tiny-random", samples_per_class=2))
    monkeypatch.setattr(trainable.tune, "report", killed_at_epoch_4)
    with pytest.raises(Killed):
        run_trial(CONFIG, load_data(tree), location, max_t=5, **args)
    name = trial_name(CONFIG, "abc")
    assert any("epoch0004_" in key for key in bucket.keys(f"runs/r/{name}"))

    run = RunFolder.at(location)
    shutil.rmtree(run.path)  # resumed on another machine: all it has is the bucket
    monkeypatch.setattr(trainable.tune, "report", lambda result: None)
    run_trial(CONFIG, load_data(tree), location, max_t=3, **args)
    assert [json.loads(line)["score_epoch"] for line in bucket.read(f"runs/r/{name}/scores.jsonl").splitlines()] == [2]
    assert not [key for key in bucket.keys(f"runs/r/{name}") if "epoch0004_" in key]


def test_a_failed_background_upload_still_lets_the_trials_failure_record_reach_the_bucket(tmp_path, monkeypatch):
    """A retry elsewhere reads it: without it, a diverged trial would be trained again. The last
    push uploads what the failed one missed, so the trial does not fail for it."""
    from results.run_folder import RunFolder
    from search.trainable import _Reporter

    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "node"))
    run = RunFolder.at(f"file://{tmp_path}/bucket/runs/r")
    run.trial("t").mkdir(parents=True)
    report = _Reporter(run, "t", None, frozenset(), 5, {}, None)

    def fails():
        raise OSError("the bucket stopped answering")

    report.uploads.later(fails)
    run.failure_file("t").write_text(json.dumps({"kind": "diverged", "reason": "loss diverged at epoch 3"}))
    report.close()
    assert (tmp_path / "bucket/runs/r/t" / run.failure_file("t").name).exists()
