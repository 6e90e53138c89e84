import pickle
import shutil
from types import SimpleNamespace

from ray.tune.schedulers import TrialScheduler

from cvae_core.atomic import read_records
from results.run_folder import RunFolder
from search.private_api import asha_rungs
from search.schedulers import PersistentASHA, stopped_by_asha
from search.seeds import TRIAL_NUMBER


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
    assert sched.on_trial_result(None, _trial("bern"), results["bern"]) == TrialScheduler.CONTINUE
    assert sched.on_trial_result(None, _trial("gauss"), results["gauss"]) == TrialScheduler.STOP


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


def _trial(trial_id: str, number: int | None = None):
    """What the schedulers read of a Tune trial: its id, its runtime metadata and its configuration
    (with its study trial number, as the searcher suggests it)."""
    from ray.tune.trainable.metadata import _TrainingRunMetadata

    config = {} if number is None else {TRIAL_NUMBER: number}
    return SimpleNamespace(trial_id=trial_id, run_metadata=_TrainingRunMetadata(), config=config)


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


def _agreeing_asha(run_dir, run_to_end_every=None):
    """ASHA that stops cutting at a milestone once 3 finished trials show it ranks unlike their ends."""
    return PersistentASHA(str(run_dir), time_attr="epoch", metric="best_val_loss", mode="min", max_t=8,
                          grace_period=1, reduction_factor=2, min_agreement=0.5, min_finished=3,
                          run_to_end_every=run_to_end_every)


def _run(sched, trial_id, curve, number=None):
    """A trial (study trial `number`) reporting `curve` (its loss each epoch, ending by itself at the
    last): the epoch the scheduler stopped it at, or its last."""
    trial = _trial(trial_id, number)
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


def _let_on(run_dir, trial_id) -> list[tuple[int, bool]]:
    """Where the rule let `trial_id` on past a cut, and whether as one that runs to the end."""
    return [(r["milestone"], r["runs_to_end"]) for r in read_records(RunFolder(run_dir).asha_state)
            if r.get("let_on") == trial_id]


def test_every_nth_trial_until_min_finished_of_them_runs_to_the_end_whatever_its_milestones_say(tmp_path):
    sched = PersistentASHA(str(tmp_path), time_attr="epoch", metric="best_val_loss", mode="min", max_t=8,
                           grace_period=1, reduction_factor=2, run_to_end_every=3)  # trials 2, 5, 8, 11 and 14
    assert _run(sched, "best", [1.0] * 8, number=0) == 8
    assert _run(sched, "bad", [9.0] * 8, number=1) == 1
    assert _run(sched, "bad-but-third", [9.0] * 8, number=2) == 8
    assert _let_on(tmp_path, "bad-but-third") == [(1, True), (2, True), (4, True)]
    assert _cuts(tmp_path) == {"bad": 1} and "num_stopped=1" in sched.debug_string()
    assert _run(sched, "a preset", [20.0] * 8) == 1  # no study number (a space of presets): cut as ASHA cuts
    assert _run(sched, "the sixth third", [20.0] * 8, number=17) == 1  # min_finished (5) have run to the end


def test_where_early_scores_rank_finished_trials_backwards_a_slow_starter_is_kept(tmp_path):
    (tmp_path / "plain").mkdir()
    plain = _asha(tmp_path / "plain")
    assert [_run(plain, t, c) for t, c in [("fast", FAST_WORST), ("slow", SLOW_BEST)]] == [8, 1]
    sched = _agreeing_asha(tmp_path, run_to_end_every=2)  # trials 1, 3, 5... run to the end
    # The slow starter is trial 1: it runs to the end past the cuts ASHA makes at epochs 1 and 2.
    curves = [(0, "fast", FAST_WORST), (1, "slow", SLOW_BEST), (3, "steady", STEADY)]
    assert [_run(sched, t, c, number=n) for n, t, c in curves] == [8, 8, 8]
    assert _let_on(tmp_path, "slow") == [(1, True), (2, True)]
    assert [sched.agreement(m) for m in (1, 2, 4)] == [(-1.0, 3), (-1.0, 3), (1.0, 3)]
    # Epochs 1 and 2 have now ranked the ended trials backwards: another slow starter, worst there,
    # is let on past them and ends best; a newcomer that is worst at epoch 4 too is cut there.
    assert _run(sched, "slow2", SLOW_BEST, number=4) == 8
    assert _let_on(tmp_path, "slow2") == [(1, False), (2, False)]
    assert _run(sched, "late", [20.0] * 8, number=6) == 4
    records = [r for r in read_records(RunFolder(tmp_path).asha_state) if r.get("let_on") == "late"]
    assert records == [{"let_on": "late", "milestone": m, "runs_to_end": False, "agreement": -1.0, "finished": 4}
                       for m in (1, 2)]
    assert _cuts(tmp_path) == {"late": 4}


def test_a_clearly_bad_curve_is_cut_from_the_start(tmp_path):
    sched = _agreeing_asha(tmp_path)
    assert _run(sched, "best", [1.0] * 8, number=0) == 8
    assert _run(sched, "bad", [20.0] * 8, number=1) == 1  # every milestone cuts until shown to rank badly
    assert _cuts(tmp_path) == {"bad": 1}


def test_where_early_scores_rank_finished_trials_as_their_ends_the_cuts_go_on(tmp_path):
    sched = _agreeing_asha(tmp_path, run_to_end_every=2)
    curves = [("steady", STEADY), ("worse", [9.0] * 8), ("best", [1.0] * 8), ("worst", [12.0] * 8)]
    assert [_run(sched, t, c, number=n) for n, (t, c) in enumerate(curves)] == [8, 8, 8, 8]
    assert sched.agreement(1) == (1.0, 4)
    assert _run(sched, "bad", [20.0] * 8, number=4) == 1
    assert _cuts(tmp_path) == {"bad": 1}


def test_a_milestone_stops_cutting_where_finished_trials_show_it_ranks_them_backwards(tmp_path):
    sched = _agreeing_asha(tmp_path)
    late_best = [9.0] * 4 + [2.0, 1.0, 0.5, 0.1]  # worst at every milestone, best at the end
    assert [_run(sched, t, c) for t, c in [("a", [3.0] * 7 + [1.0]), ("b", [2.0] * 8)]] == [8, 8]
    assert _run(sched, "late", late_best) == 1  # cut at the first milestone, before 3 trials have ended
    assert _run(sched, "c", [1.0] * 7 + [3.0]) == 8
    assert sched.agreement(4) == (-1.0, 3)  # a, b and c: the better at epoch 4, the worse at the end
    assert sched.agreement(1) == (-1.0, 3)  # the last milestone ranks badly: the earlier ones are judged on ends
    assert _run(sched, "late2", late_best) == 8  # now shown to rank backwards: let on


def test_below_the_last_milestone_a_trial_without_a_final_score_counts_with_its_score_there(tmp_path):
    sched = _agreeing_asha(tmp_path)
    assert _run(sched, "a", [3.0] * 8) == 8
    for trial_id, value in [("b", 2.0), ("c", 1.0)]:  # still running, past the last milestone (epoch 4)
        trial = _trial(trial_id)
        sched.on_trial_add(None, trial)
        for epoch in range(1, 5):
            assert sched.on_trial_result(None, trial, {"epoch": epoch, "best_val_loss": value, "stop": None}) == \
                TrialScheduler.CONTINUE
    assert sched.agreement(1) == (1.0, 3)  # a's final score, b's and c's at epoch 4
    assert sched.agreement(4) == (None, 1)  # the last milestone is judged on final scores alone


def test_the_final_scores_a_milestone_is_judged_on_survive_a_restore(tmp_path):
    sched = _agreeing_asha(tmp_path, run_to_end_every=2)
    pickled = pickle.dumps(sched)  # as the Tuner pickles it at the start: nothing recorded
    for number, trial_id, curve in [(0, "fast", FAST_WORST), (1, "slow", SLOW_BEST), (3, "steady", STEADY)]:
        assert _run(sched, trial_id, curve, number=number) == 8
    restored = pickle.loads(pickled)
    assert [restored.agreement(m) for m in (1, 2, 4)] == [sched.agreement(m) for m in (1, 2, 4)]
    assert _run(restored, "late", [20.0, 20.0, 1.0, 1.0], number=4) == 4  # let on past epochs 1 and 2
    assert _run(sched, "late2", [20.0, 20.0, 1.0, 1.0], number=6) == 4
    assert _run(restored, "third", [20.0] * 8, number=5) == 8  # run to the end: its study number, after a restore
