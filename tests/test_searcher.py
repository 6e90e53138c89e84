"""The searcher: TPE set up for a parallel conditional space, ranking by the score, and its study in
the run folder, labelled trial by trial and kept whole across a kill."""

from __future__ import annotations

import json

import optuna
import pandas as pd
import pytest
from optuna.trial import TrialState

from cvae_core.atomic import append_records
from results import study as study_files
from results.run_folder import RunFolder
from search.objective import METRIC, MODE
from search.searcher import ScoreOptunaSearch, create_study, new_sampler, settle
from search.settings import Searcher
from search.space import parse_space_section

SPACE = {"family": "mlp", "latent": 4, "mlp": {"layers": 1, "width": 8}, "lr": {"loguniform": [1.0e-4, 1.0e-2]}}


def searcher(run: RunFolder, sampler=None) -> ScoreOptunaSearch:
    """The searcher as search.tuning builds it, on the run folder's journal."""
    run.path.mkdir(exist_ok=True)
    create_study(run, ["fid"])
    return ScoreOptunaSearch(space=parse_space_section(SPACE), metric=METRIC, mode=MODE,
                             sampler=sampler or optuna.samplers.RandomSampler(0),
                             storage=study_files.journal_storage(run), study_name=run.name, run_location=run.location)


def result(score: float, stop: str | None = None, epoch: int = 4) -> dict:
    return {"epoch": epoch, "score": score, "score_epoch": epoch, "stop": stop, "best_val_loss": 1.0,
            "training_iteration": epoch}


def test_tpe_is_built_with_every_setting_given():
    sampler = new_sampler(Searcher(n_startup_trials=7), seed=3, milestones=(5, 15, 45, 100))
    assert (sampler.milestones, sampler.n_min) == ((5, 15, 45, 100), 7)  # fit on one milestone's scores
    # Optuna keeps them private; these are the settings search.settings.Searcher explains.
    tpe = sampler.sampler
    assert (tpe._n_startup_trials, tpe._multivariate, tpe._group, tpe._constant_liar) == (7, True, True, True)
    last = new_sampler(Searcher(multivariate=False, group=False, constant_liar=False, fit_on="last"), seed=3)
    assert last.milestones == ()  # told each trial's last score: no milestone view
    assert (last.sampler._multivariate, last.sampler._group, last.sampler._constant_liar) == (False, False, False)


def test_gp_is_built_with_its_settings_and_tpe_for_a_familys_keys():
    sampler = new_sampler(Searcher(model="gp", n_startup_trials=7), seed=3, milestones=(5, 15, 45, 100))
    gp = sampler.sampler
    assert isinstance(gp, optuna.samplers.GPSampler) and gp._n_startup_trials == 7
    assert isinstance(gp._independent_sampler, optuna.samplers.TPESampler)


def test_the_gp_told_last_scores_goes_on_after_a_resume_as_it_would_have():
    """spaces/cnn.yaml's searcher (model: gp, fit_on: last): Tune pickles it with its sampler when
    it saves and unpickles it on resume; on the same study (the journal), with trials running, the
    restored GP samples what the original would have."""
    import pickle

    x = {"x": optuna.distributions.FloatDistribution(0.0, 1.0)}

    def study_with(sampler):
        study = optuna.create_study(sampler=sampler)
        for i in range(12):
            study.add_trial(optuna.trial.create_trial(params={"x": i / 12}, distributions=x, value=(i / 12 - 0.7) ** 2))
        study.ask(x)  # running: a pending point
        return study

    def sampler():
        gp = new_sampler(Searcher(model="gp", n_startup_trials=4, fit_on="last"), seed=3)
        assert isinstance(gp.sampler, optuna.samplers.GPSampler) and gp.milestones == ()
        return gp

    uninterrupted, before_kill = study_with(sampler()), study_with(sampler())
    before_kill.sampler = pickle.loads(pickle.dumps(before_kill.sampler))
    asked = [[s.ask(x).params["x"] for _ in range(4)] for s in (uninterrupted, before_kill)]
    assert asked[0] == asked[1] and len(set(asked[0])) == 4


def test_tpe_settings_with_the_gp_are_one_clear_error():
    with pytest.raises(ValueError, match="constant_liar: a setting of TPE's, and model is 'gp'"):
        Searcher(model="gp", constant_liar=False)


def test_tpe_ranks_by_the_score_where_the_validation_loss_disagrees(tmp_path):
    s = searcher(RunFolder(tmp_path / "run"))
    for trial_id, score, val in (("bern", 150.0, 1900.0), ("gauss", 300.0, -1500.0)):
        s.suggest(trial_id)
        s.on_trial_result(trial_id, {"epoch": 0, "best_val_loss": 1.0, "training_iteration": 1})  # unscored
        s.on_trial_complete(trial_id, {**result(score, stop="patience"), "best_val_loss": val})
    study = study_files.load_study(tmp_path / "run")
    assert study.best_trial.value == 150.0 and [t.value for t in study.trials] == [150.0, 300.0]


def test_each_study_trial_says_which_tune_trial_it_is_and_how_it_ended(tmp_path):
    run = RunFolder(tmp_path / "run")
    s = searcher(run)
    for trial_id in ("a", "b", "c"):
        s.suggest(trial_id)
    grid = run.trial("mlp_a") / "grids" / "epoch0004_samples.png"
    grid.parent.mkdir(parents=True)
    grid.write_bytes(b"png")
    run.trial("mlp_c").mkdir()
    run.failure_file("mlp_c").write_text(json.dumps({"kind": "diverged", "reason": "loss diverged at epoch 2"}))
    s.on_trial_complete("a", result(120.0, stop="patience"))
    s.on_trial_complete("b", result(140.0, stop=None))  # ASHA stopped it: Tune calls that complete too
    s.on_trial_complete("c", result(130.0), error=True)  # diverged after a score: it failed all the same
    study = study_files.load_study(run.path)
    trials = {t.user_attrs[study_files.TUNE_TRIAL_ID]: t for t in study.trials}
    assert {k: t.user_attrs[study_files.STOP_REASON] for k, t in trials.items()} == {
        "a": "patience", "b": "asha", "c": "diverged"}
    assert trials["a"].user_attrs[study_files.TRIAL_DIR] == str(run.trial("mlp_a"))
    assert trials["a"].user_attrs[study_files.PARAMS] > 0 and trials["a"].user_attrs[study_files.SCORE_EPOCH] == 4
    assert trials["c"].state == TrialState.FAIL and trials["a"].value == 120.0
    # ASHA's stop: complete, as Tune reports it (its stop_reason tells), its score also at its epoch
    assert trials["b"].state == TrialState.COMPLETE
    assert trials["b"].intermediate_values == {4: 140.0} and trials["b"].value == 140.0
    [artifact] = optuna.artifacts.get_all_artifact_meta(trials["a"], storage=study_files.journal_storage(run))
    assert (run.study_artifacts / artifact.artifact_id).read_bytes() == b"png"
    assert study.metric_names == ["fid"]


def test_after_a_kill_the_study_keeps_one_trial_per_tune_trial(tmp_path):
    """Tune saves the searcher now and then; a kill loses what it did since. Trial 'b' was sampled
    and 'a' told after the last save: the resumed search takes 'b''s study trial up again for its
    next trial and does not tell 'a' twice."""
    run = RunFolder(tmp_path / "run")
    first = searcher(run)
    config_a = first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's save
    config_b = first.suggest("b")
    first.on_trial_complete("a", result(100.0, stop="patience"))
    del first  # killed

    resumed = searcher(run)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.on_trial_complete("a", result(100.0, stop="patience"))  # Tune reruns it; it reports its end again
    assert resumed.suggest("b2") == config_b  # 'b' sampled again would not be: its study trial, taken up
    resumed.on_trial_complete("b2", result(90.0, stop="max_epochs"))
    study = study_files.load_study(run.path)
    assert [(t.state, t.value, t.user_attrs[study_files.TUNE_TRIAL_ID]) for t in study.trials] == [
        (TrialState.COMPLETE, 100.0, "a"), (TrialState.COMPLETE, 90.0, "b2")]
    assert config_a != config_b


def test_a_score_reported_again_after_a_kill_for_a_trial_the_study_ended_is_not_an_error(tmp_path):
    """ASHA stopped 'a' (the study told its end) after Tune's last save; the restart reports its
    last epoch again, which ASHA lets through to the searcher, whose saved handle predates the end."""
    run = RunFolder(tmp_path / "run")
    first = searcher(run)
    first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))  # Tune's save
    first.on_trial_complete("a", result(100.0, epoch=4))
    del first  # killed

    resumed = searcher(run)
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.own_exactly(["a"])
    resumed.on_trial_result("a", result(100.0, epoch=4))
    resumed.on_trial_complete("a", result(100.0, epoch=4))
    [trial] = study_files.load_study(run.path).trials
    assert (trial.state, trial.value, trial.intermediate_values) == (TrialState.COMPLETE, 100.0, {4: 100.0})


def test_a_failed_trial_that_finishes_when_tune_retries_it_is_a_study_trial_the_sampler_sees(tmp_path):
    run = RunFolder(tmp_path / "run")
    s = searcher(run)
    config = s.suggest("a")
    run.trial("mlp_a").mkdir(parents=True)
    append_records(run.scores_file("mlp_a"), [{"score": v, "score_epoch": e} for e, v in [(2, 120.0), (4, 110.0)]])
    s.on_trial_result("a", result(120.0, epoch=2))
    s.on_trial_complete("a", result(120.0, epoch=2), error=True)  # out of memory, say
    s.save(str(tmp_path / "searcher.pkl"))  # Tune's save, before the retry's end
    s.on_trial_result("a", result(110.0, epoch=4))  # Tune retries it (resume_errored): it goes on
    s.on_trial_complete("a", result(100.0, stop="max_epochs", epoch=6))
    failed, finished = study_files.load_study(run.path).trials
    assert failed.state == TrialState.FAIL and finished.state == TrialState.COMPLETE
    assert finished.params == failed.params and finished.params["lr"] == config["lr"]
    assert (finished.value, finished.intermediate_values) == (100.0, {2: 120.0, 4: 110.0, 6: 100.0})
    assert finished.user_attrs[study_files.TUNE_TRIAL_ID] == "a"
    assert finished.user_attrs[study_files.STOP_REASON] == "max_epochs"

    resumed = searcher(run)  # killed after the retry's end; Tune, restored from that save, runs it again
    resumed.restore(str(tmp_path / "searcher.pkl"))
    resumed.own_exactly(["a"])
    resumed.on_trial_complete("a", result(100.0, stop="max_epochs", epoch=6))
    assert len(study_files.load_study(run.path).trials) == 2  # recorded once

def test_a_retried_trial_ranked_by_val_loss_keeps_the_retrys_scores_not_the_failed_attempts(tmp_path):
    """The failed attempt reported epochs 1-4 and was killed; its checkpoint was at epoch 2, and the
    retry, started from it, stopped on patience at epoch 3: the study's copy holds what the trial's
    folder does (the first attempt's epochs 3-4 were forgotten there), not the failed attempt's."""
    run = RunFolder(tmp_path / "run")
    s = searcher(run)
    s.suggest("a")
    run.trial("mlp_a").mkdir(parents=True)
    for epoch, loss in [(1, 5.0), (2, 4.0), (3, 3.0), (4, 2.0)]:  # the failed attempt
        s.on_trial_result("a", {**result(loss, epoch=epoch), "objective": "val_loss"})
    s.on_trial_complete("a", {**result(2.0, epoch=4), "objective": "val_loss"}, error=True)
    append_records(run.trial("mlp_a") / "metrics.jsonl",  # as the retry's train() leaves them
                   [{"epoch": e, "best_val_loss": v} for e, v in [(1, 5.0), (2, 4.0), (3, 3.5)]])
    s.on_trial_complete("a", {**result(3.5, stop="patience", epoch=3), "objective": "val_loss"})
    failed, finished = study_files.load_study(run.path).trials
    assert failed.intermediate_values == {1: 5.0, 2: 4.0, 3: 3.0, 4: 2.0}
    assert (finished.value, finished.intermediate_values) == (3.5, {1: 5.0, 2: 4.0, 3: 3.5})


def test_a_resumed_searcher_owns_exactly_the_trials_tune_restored(tmp_path):
    """Tune's experiment state and the searcher's can come from different saves: 'c' reached the
    searcher's alone (Tune never heard of it), 'b' Tune's alone (its study trial is labelled with it)."""
    run = RunFolder(tmp_path / "run")
    first = searcher(run)
    first.suggest("a")
    first.save(str(tmp_path / "searcher.pkl"))  # the searcher's save, before 'b'
    config_b = first.suggest("b")
    config_c = first.suggest("c")
    first.save(str(tmp_path / "searcher-c.pkl"))  # a later save of the searcher, with 'c'
    del first  # killed

    lost_b = searcher(run)
    lost_b.restore(str(tmp_path / "searcher.pkl"))
    lost_b.own_exactly(["a", "b"])
    lost_b.on_trial_complete("b", result(80.0, stop="max_epochs"))  # told, not a KeyError
    ahead = searcher(run)
    ahead.restore(str(tmp_path / "searcher-c.pkl"))
    ahead.own_exactly(["a", "b"])
    assert ahead.suggest("c2") == config_c != config_b  # 'c''s study trial, taken up
    assert {t.user_attrs[study_files.TUNE_TRIAL_ID]: t.state for t in study_files.load_study(run.path).trials} == {
        "a": TrialState.RUNNING, "b": TrialState.COMPLETE, "c2": TrialState.RUNNING}


def test_settle_ends_what_is_still_running_from_the_trials_table(tmp_path):
    run = RunFolder(tmp_path / "run")
    s = searcher(run)
    for trial_id in ("a", "b"):
        s.suggest(trial_id)
    table = pd.DataFrame({"trial_id": ["a"], "status": ["TERMINATED"], "score": [70.0]})
    settle(run, table, ["score"])
    study = study_files.load_study(run.path)
    assert [(t.state, t.value) for t in study.trials] == [(TrialState.COMPLETE, 70.0), (TrialState.FAIL, None)]


def test_settle_reaches_the_study_of_a_run_in_a_bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "driver"))
    run = RunFolder.at(f"file://{tmp_path}/bucket/runs/r")
    run.path.mkdir(parents=True)
    run.mark()
    s = searcher(run)
    for trial_id in ("a", "b"):
        s.suggest(trial_id)
    settle(run, pd.DataFrame({"trial_id": ["a"], "status": ["TERMINATED"], "score": [70.0]}), ["score"])
    monkeypatch.setenv("CVAE_SCRATCH", str(tmp_path / "reader"))  # results.show, optuna-dashboard elsewhere
    study = study_files.load_study(run.location)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.FAIL]


def test_a_run_without_a_study_says_so_in_one_line(tmp_path):
    run = RunFolder(tmp_path / "seed")
    run.path.mkdir()
    run.space_file.write_text("space: {presets: [mlp-M1]}\n")
    (run.path / "data.json").write_text('{"source": "/data.zip"}')
    with pytest.raises(study_files.NoStudy) as err:
        study_files.load_study(run.path)
    assert str(err.value) == (f"{run.study_journal}: no Optuna study in {run.path} (a presets space runs a grid "
                              "without Optuna)")
    run.study_journal.write_bytes(b"")  # a kill between the journal's creation and the study's first line
    with pytest.raises(study_files.NoStudy, match=r"optuna\.journal: no Optuna study in .* yet \(the journal holds"):
        study_files.load_study(run.path)
