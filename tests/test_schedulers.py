import pickle
import shutil
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from cvae_core.atomic import read_records
from results.run_folder import RunFolder
from search.private_api import asha_rungs
from search.schedulers import PersistentASHA, stopped_by_asha


def _asha(run_dir):
    return PersistentASHA(str(run_dir), time_attr="epoch", metric="best_val_loss", mode="min",
                          max_t=8, grace_period=1, reduction_factor=2)


def _feed(sched, trial_id, epoch, loss):
    """A new trial's first result: the scheduler's decision."""
    trial = _trial(trial_id)
    sched.on_trial_add(None, trial)
    return sched.on_trial_result(None, trial, {"epoch": epoch, "best_val_loss": loss})


def test_rungs_survive_a_restore_and_give_the_same_decisions(tmp_path):
    state = RunFolder(tmp_path).asha_state
    sched = _asha(tmp_path)
    pickled = pickle.dumps(sched)  # as the Tuner pickles it at the start, rungs empty
    for i, loss in enumerate([10.0, 9.0, 8.0, 7.0]):
        _feed(sched, f"t{i}", 1, loss)
    assert state.exists()

    (tmp_path / "elsewhere").mkdir()
    fresh_ray_restore = _asha(tmp_path / "elsewhere")  # what Ray alone gives: empty rungs
    assert _feed(fresh_ray_restore, "late", 1, 11.0) == TrialScheduler.CONTINUE

    restored = pickle.loads(pickled)
    # A bad newcomer is compared with the rungs recorded before the restart...
    assert _feed(restored, "late", 1, 11.0) == TrialScheduler.STOP
    # ...exactly as the uninterrupted scheduler decides.
    assert _feed(sched, "late", 1, 11.0) == TrialScheduler.STOP


def test_a_resume_forgets_the_records_of_trials_the_restored_tune_does_not_hold(tmp_path):
    """A kill left Tune's state from a save before 'x' reached its milestone: the trial that takes up
    x's settings is recorded there anew, not beside x's old score as if a second configuration."""
    sched = _asha(tmp_path)
    pickled = pickle.dumps(sched)
    for trial_id, loss in [("a", 10.0), ("b", 9.0), ("x", 20.0)]:
        _feed(sched, trial_id, 1, loss)
    (tmp_path / "copy").mkdir()
    shutil.copy(RunFolder(tmp_path).asha_state, RunFolder(tmp_path / "copy").asha_state)
    assert _feed(_asha(tmp_path / "copy"), "y", 1, 9.8) == TrialScheduler.CONTINUE  # x's 20.0 lowers the bar
    restored = pickle.loads(pickled)
    restored.keep_only(["a", "b"])
    assert _feed(restored, "y", 1, 9.8) == TrialScheduler.STOP
    again = pickle.loads(pickled)  # a second resume reads the same
    assert {m: set(values) for rungs in asha_rungs(again) for m, values in rungs}[1] == {"a", "b", "y"}
    _feed(again, "x", 1, 20.0)  # an id met again is recorded again (a grid of presets makes its trials so)
    assert {m: set(values) for rungs in asha_rungs(pickle.loads(pickled)) for m, values in rungs}[1] == {
        "a", "b", "y", "x"}


def test_asha_follows_the_score_where_the_validation_loss_disagrees(tmp_path):
    """Two trials: 'gauss' has the far better validation loss (a Gaussian density's nats),
    'bern' the better samples. The scheduler ranks by the score (the searcher: test_searcher.py)."""
    from search.objective import METRIC, MODE

    sched = PersistentASHA(str(tmp_path), time_attr="epoch", metric=METRIC, mode=MODE, max_t=8,
                           grace_period=1, reduction_factor=2)
    results = {"bern": {"epoch": 1, "score": 150.0, "best_val_loss": 1900.0},
               "gauss": {"epoch": 1, "score": 300.0, "best_val_loss": -1500.0}}
    for trial_id in ("bern", "gauss"):
        sched.on_trial_add(None, _trial(trial_id))
    assert sched.on_trial_result(None, SimpleNamespace(trial_id="bern"), results["bern"]) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, SimpleNamespace(trial_id="gauss"), results["gauss"]) == TrialScheduler.STOP


def test_a_stop_is_recorded_with_its_trial(tmp_path):
    state = RunFolder(tmp_path).asha_state
    sched = _asha(tmp_path)
    for i, loss in enumerate([10.0, 9.0, 8.0, 7.0]):
        _feed(sched, f"t{i}", 1, loss)
    assert _feed(sched, "late", 1, 11.0) == TrialScheduler.STOP
    assert stopped_by_asha(state) == {"late"}  # what a restarted "late" reads to end at once
    # on what, as results.show reports it: the loss against the best half of the four before it
    [stop] = [r for r in read_records(state) if "stopped" in r]
    assert {k: stop[k] for k in ("milestone", "score", "cutoff", "compared")} == {
        "milestone": 1, "score": 11.0, "cutoff": 8.5, "compared": 4}
    assert "num_stopped=1" in pickle.loads(pickle.dumps(sched)).debug_string()  # Tune's status line


def test_the_state_is_saved_after_each_event_within_its_share_of_the_drivers_time(monkeypatch):
    """SavesOnEvents: a trial added, completed, failed or removed asks for a save at Tune's next
    step; a save waits while the saves done, it and Tune's last (each as long as the last save, the
    last with the wait for its upload) would take more than SAVE_BUDGET of the time since the start."""
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
    from ray.tune.schedulers import FIFOScheduler

    from search import schedulers

    clock, saves = [100.0], []

    def checkpoint(self, force=False, wait=False):  # a save that takes 1 s of the driver's time
        saves.append(clock[0])
        clock[0] += 1.0

    uploading, upload_seconds = [False], [0.0]  # Tune's upload of its last save: still running, its length
    monkeypatch.setattr(schedulers, "state_upload_running", lambda controller: uploading[0])
    monkeypatch.setattr(schedulers, "last_state_upload_seconds", lambda: upload_seconds[0])
    monkeypatch.setattr(schedulers.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(TuneController, "checkpoint", checkpoint)
    monkeypatch.setattr(TuneController, "get_trials", lambda self: [])
    controller = TrialRunnerWrapper(TuneController.__new__(TuneController), trial_executor=None,
                                    runner_whitelist_attr={"get_trials"})
    scheduler = type("Saving", (schedulers.SavesOnEvents, FIFOScheduler), {})()

    def step(at: float) -> None:
        clock[0] = at
        scheduler.choose_trial_to_run(controller)

    step(100.0)  # the clock starts; nothing happened, nothing is saved
    scheduler.on_trial_add(controller, _trial("a"))
    step(100.0)
    step(100.5)  # saved once per event, not per step
    assert saves == [100.0]
    scheduler.on_trial_complete(controller, SimpleNamespace(trial_id="a"), {})
    step(110.0)  # 1 s of saves and 2 s more in 10 s: over 2%, so it waits ...
    step(249.0)
    assert saves == [100.0]
    step(250.0)  # ... until 3 s are at most 2% of the time since the start
    assert saves == [100.0, 250.0]
    upload_seconds[0] = 0.5  # the search's last save waits for its upload: counted ahead too
    scheduler.on_trial_complete(controller, _trial("b"), {})
    step(324.0)
    assert saves == [100.0, 250.0]
    step(325.5)  # 2 s of saves, 2 s more and 0.5 s: 2% of 225 s
    assert saves == [100.0, 250.0, 325.5]
    for event in (scheduler.on_trial_error, scheduler.on_trial_remove):
        event(controller, _trial("b"))
        step(clock[0] + 1000.0)
    assert len(saves) == 5
    scheduler.on_trial_add(controller, _trial("c"))
    uploading[0] = True
    step(clock[0] + 1000.0)  # the save would wait for the upload: it comes at a later step
    assert len(saves) == 5
    uploading[0] = False
    step(clock[0] + 1.0)
    assert len(saves) == 6


def _trial(trial_id: str):
    """What SavesOnEvents reads of a Tune trial: its id and its runtime metadata."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    return SimpleNamespace(trial_id=trial_id, run_metadata=_TrainingRunMetadata())


def test_tune_keeps_no_running_averages_of_a_trials_numbers(monkeypatch):
    """They cost most of a save of the trial's state, and nothing reads them."""
    from ray.tune.schedulers import FIFOScheduler

    from search import schedulers

    trial = _trial("a")
    type("Saving", (schedulers.SavesOnEvents, FIFOScheduler), {})().on_trial_add(None, trial)
    for step, score in enumerate([3.0, 2.0, 1.0], 1):
        trial.run_metadata.update_metric("score", score, step=step)  # as Tune does with each result
    assert trial.run_metadata.metric_analysis["score"] == {"max": 3.0, "min": 1.0, "avg": 2.0, "last": 1.0}
    assert trial.run_metadata.metric_n_steps == {"score": {}}


def test_a_trial_that_ends_by_itself_at_a_milestone_it_would_be_cut_at_is_not_asha_stopped(tmp_path):
    # Patience (or max_t) ended it there: the report must not list it among ASHA's stops.
    state = RunFolder(tmp_path).asha_state
    sched = _asha(tmp_path)
    for i, loss in enumerate([10.0, 9.0, 8.0, 7.0]):
        _feed(sched, f"t{i}", 1, loss)
    late = _trial("late")
    sched.on_trial_add(None, late)
    sched.on_trial_result(None, late, {"epoch": 1, "best_val_loss": 11.0, "stop": "patience"})
    assert stopped_by_asha(state) == set() and "num_stopped=0" in sched.debug_string()
    assert _run(sched, "whole", [1.0] * 8) == 8 and stopped_by_asha(state) == set()  # max_t: its own end too


def _agreeing_asha(run_dir):
    """ASHA that cuts at a milestone only once 3 finished trials show it ranks as their ends do."""
    return PersistentASHA(str(run_dir), time_attr="epoch", metric="best_val_loss", mode="min", max_t=8,
                          grace_period=1, reduction_factor=2, min_agreement=0.5, min_finished=3)


def _run(sched, trial_id, curve):
    """A trial reporting `curve` (its loss each epoch, ending by itself at the last): the epoch
    the scheduler stopped it at, or its last."""
    trial = _trial(trial_id)
    sched.on_trial_add(None, trial)
    for epoch, loss in enumerate(curve, 1):
        stop = "max_epochs" if epoch == len(curve) else None
        if sched.on_trial_result(None, trial, {"epoch": epoch, "best_val_loss": loss, "stop": stop}) == \
                TrialScheduler.STOP and stop is None:
            return epoch
    return len(curve)


def _cuts(run_dir) -> dict[str, int]:
    """The trials ASHA cut at a milestone, and where."""
    return {r["trial"]: r["milestone"] for r in read_records(RunFolder(run_dir).asha_state)
            if "stopped" in r and "milestone" in r}


SLOW_BEST = [10.0, 6.0, 3.0, 2.0, 1.5, 1.2, 1.1, 1.0]  # worst at every milestone, best at the end
STEADY = [5.0] * 8
FAST_WORST = [1.0, 2.0, 4.0, 6.0, 8.0, 9.0, 9.0, 9.0]  # best at the first milestone, worst at the end


def test_where_early_scores_rank_finished_trials_backwards_a_slow_starter_is_kept(tmp_path):
    sched = _agreeing_asha(tmp_path)
    # Until 3 trials have ended, no milestone is trusted: plain ASHA would cut the slow starter at epoch 1.
    assert [_run(sched, t, c) for t, c in [("fast", FAST_WORST), ("steady", STEADY), ("slow", SLOW_BEST)]] == [8, 8, 8]
    assert [sched.agreement(m) for m in (1, 2, 4)] == [(-1.0, 3), (-1.0, 3), (1.0, 3)]
    # Epochs 1 and 2 rank them backwards: a newcomer that is worst of all is let on past them, as
    # the slow starter that ended best was, each decision recorded with why; epoch 4 ranks them as
    # their ends do, and cuts it.
    late, quiet = _trial("late"), _trial("quiet")
    for trial in (late, quiet):
        sched.on_trial_add(None, trial)
    assert [sched.on_trial_result(None, late, {"epoch": e, "best_val_loss": 20.0, "stop": None})
            for e in (1, 2)] == [TrialScheduler.CONTINUE] * 2
    sched.on_trial_complete(None, quiet, {"epoch": 1, "best_val_loss": 5.0})  # Tune ends it without a result
    assert [sched.on_trial_result(None, late, {"epoch": e, "best_val_loss": 20.0, "stop": None})
            for e in (3, 4)] == [TrialScheduler.CONTINUE, TrialScheduler.STOP]
    let_on = [r for r in read_records(RunFolder(tmp_path).asha_state) if r.get("let_on") == "late"]
    assert let_on == [{"let_on": "late", "milestone": m, "agreement": -1.0, "finished": 3} for m in (1, 2)]
    assert _cuts(tmp_path) == {"late": 4}


def test_where_early_scores_rank_finished_trials_as_their_ends_a_clearly_bad_curve_is_cut(tmp_path):
    sched = _agreeing_asha(tmp_path)
    # Nothing is cut before 3 trials have ended (at epoch 4, the last milestone, none is worse than the others)
    for trial_id, curve in [("worse", [9.0] * 8), ("best", [1.0] * 8), ("steady", STEADY)]:
        assert _run(sched, trial_id, curve) == 8
    assert sched.agreement(1) == (1.0, 3)
    assert _run(sched, "bad", [20.0] * 8) == 1
    assert _cuts(tmp_path) == {"bad": 1}


def test_the_last_milestone_cuts_a_clearly_bad_curve_before_any_trial_has_ended(tmp_path):
    sched = _agreeing_asha(tmp_path)
    assert _run(sched, "best", [1.0] * 8) == 8
    # Epochs 1 and 2 have shown nothing yet: a trial worse than the best there goes on past them;
    # epoch 4, the last milestone before the end, cuts it.
    assert _run(sched, "worse", [9.0] * 8) == 4
    assert [(r["milestone"], r["finished"]) for r in read_records(RunFolder(tmp_path).asha_state)
            if r.get("let_on") == "worse"] == [(1, 1), (2, 1)]
    assert _cuts(tmp_path) == {"worse": 4}


def test_the_last_milestone_stops_cutting_where_finished_trials_show_it_ranks_them_backwards(tmp_path):
    sched = _agreeing_asha(tmp_path)
    late_best = [9.0] * 4 + [2.0, 1.0, 0.5, 0.1]  # worst at every milestone, best at the end
    assert [_run(sched, t, c) for t, c in [("a", [3.0] * 7 + [1.0]), ("b", [2.0] * 8)]] == [8, 8]
    assert _run(sched, "late", late_best) == 4  # cut there, before 3 trials have ended
    assert _run(sched, "c", [1.0] * 7 + [3.0]) == 8
    assert sched.agreement(4) == (-1.0, 3)  # a, b and c: the better at epoch 4, the worse at the end
    assert _run(sched, "late2", late_best) == 8  # now shown to rank backwards: let on


def test_an_earlier_milestone_earns_trust_from_the_scores_of_trials_the_last_one_cut(tmp_path):
    sched = _agreeing_asha(tmp_path)
    # b and c are let on past epochs 1 and 2 and cut at epoch 4, the last milestone; a ends by itself
    assert [_run(sched, t, [v] * 8) for t, v in [("a", 1.0), ("b", 2.0), ("c", 3.0)]] == [8, 4, 4]
    assert sched.agreement(1) == (1.0, 3)  # a's final score, b's and c's at epoch 4
    assert sched.agreement(4) == (None, 1)  # the last milestone is judged on final scores alone
    assert _run(sched, "d", [9.0] * 8) == 1


def test_the_final_scores_a_milestone_is_judged_on_survive_a_restore(tmp_path):
    sched = _agreeing_asha(tmp_path)
    pickled = pickle.dumps(sched)  # as the Tuner pickles it at the start: nothing recorded
    for trial_id, curve in [("fast", FAST_WORST), ("steady", STEADY), ("slow", SLOW_BEST)]:
        _run(sched, trial_id, curve)
    restored = pickle.loads(pickled)
    assert [restored.agreement(m) for m in (1, 2, 4)] == [sched.agreement(m) for m in (1, 2, 4)]
    assert _run(restored, "late", [20.0, 20.0, 1.0, 1.0]) == _run(sched, "late2", [20.0, 20.0, 1.0, 1.0]) == 4
