"""search.milestone_view: the sampler (TPE or GP) fitted on one milestone's scores, on hand-made
trials whose right answer is known."""

from __future__ import annotations

import random

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from results.study import FITTED_ON, FITTED_ON_LAST, STOP_REASON, TUNE_TRIAL_ID
from search.milestone_view import MilestoneSampler, milestone_view, score_at
from search.searcher import new_sampler
from search.settings import Searcher

X = {"x": FloatDistribution(0.0, 1.0)}
MILESTONES = (5, 15, 45, 100)


def trial(number: int, scores: dict[int, float], state=TrialState.COMPLETE, stop: str | None = None, x: float = 0.5):
    """A study trial with its scores as intermediate values; a finished one valued by its last score."""
    t = create_trial(params={"x": x}, distributions=X, intermediate_values=scores, state=state,
                     value=scores[max(scores)] if state == TrialState.COMPLETE and scores else None,
                     user_attrs={STOP_REASON: stop or ("max_epochs" if max(scores, default=0) == 100 else "asha")})
    t.number = number
    return t


def test_a_slow_starter_that_ends_best_is_best_where_it_is_compared_with_its_peers():
    slow = trial(0, {5: 200.0, 15: 120.0, 45: 40.0, 100: 30.0})
    fast = trial(1, {5: 100.0, 15: 90.0, 45: 85.0, 100: 84.0})
    cut_early = trial(2, {5: 60.0})  # looks better than every final score if told as final
    milestone, view = milestone_view([slow, fast, cut_early], MILESTONES, n_min=2)
    assert milestone == 100
    assert {t.number: t.value for t in view} == {0: 30.0, 1: 84.0}  # the early cut says nothing of epoch 100


def test_the_highest_milestone_with_enough_scores_and_the_running_trials():
    trials = [trial(0, {5: 50.0, 15: 45.0}, stop="asha"), trial(1, {5: 70.0, 15: 30.0}, TrialState.RUNNING),
              trial(2, {5: 10.0}, stop="asha"), trial(3, {5: 20.0}, TrialState.RUNNING),
              trial(4, {}, TrialState.RUNNING), trial(5, {}, TrialState.FAIL)]
    milestone, view = milestone_view(trials, MILESTONES, n_min=2)
    assert milestone == 15  # two scores there, one at 45
    seen = {t.number: (t.state, t.value) for t in view}
    assert seen == {0: (TrialState.COMPLETE, 45.0), 1: (TrialState.COMPLETE, 30.0),  # running, scored at 15
                    3: (TrialState.RUNNING, None), 4: (TrialState.RUNNING, None)}  # TPE's constant liars
    assert trials[1].state == TrialState.RUNNING  # the study's own trials are untouched
    assert milestone_view(trials, MILESTONES, n_min=5) == (None, [trials[1], trials[3], trials[4]])


def test_a_trial_tune_retried_counts_once_with_its_finish():
    """Its failed attempt and its finish (a study trial of its own, search.searcher) both carry its
    scores so far: counted twice, a milestone would reach n_min with one trial too few."""
    def attempt(number, state, tune_id, scores):
        t = trial(number, scores, state, stop="max_epochs" if state == TrialState.COMPLETE else None)
        t.user_attrs = {**t.user_attrs, TUNE_TRIAL_ID: tune_id}
        return t

    failed = attempt(0, TrialState.FAIL, "a", {5: 50.0, 15: 40.0})
    other = attempt(1, TrialState.COMPLETE, "b", {5: 60.0, 15: 45.0, 45: 44.0, 100: 43.0})
    finished = attempt(2, TrialState.COMPLETE, "a", {5: 50.0, 15: 40.0, 45: 35.0, 100: 30.0})
    milestone, view = milestone_view([failed, other, finished], MILESTONES, n_min=3)
    assert milestone is None  # two trials, not three
    milestone, view = milestone_view([failed, other, finished], MILESTONES, n_min=2)
    assert milestone == 100 and {t.number: t.value for t in view} == {1: 43.0, 2: 30.0}


def test_a_trial_its_own_training_stopped_counts_at_later_milestones():
    patient = trial(0, {5: 80.0, 15: 50.0}, stop="patience")
    assert score_at(patient, 45) == score_at(patient, 100) == 50.0
    assert score_at(trial(1, {5: 80.0, 15: 50.0}, stop="asha"), 45) is None


def _suggestions(sampler, n: int = 30) -> list[float]:
    """The study of 40 hand-made trials: x > 0.6 starts slowly and ends best (30 at epoch 100, 200 at
    epoch 5); x < 0.4 starts fast and ends at 80; under ASHA most slow starters were cut at epoch 5."""
    study = optuna.create_study(sampler=sampler)
    for i in range(40):
        x = (i % 20) / 20
        if x > 0.6:
            scores = {5: 200.0} if i < 34 else {5: 200.0, 15: 120.0, 45: 40.0, 100: 30.0}
        else:
            scores = {5: 100.0, 15: 90.0, 45: 85.0, 100: 80.0 + x} if x < 0.4 else {5: 150.0}
        study.add_trial(trial(i, scores, x=x))
    return [study.ask(X).params["x"] for _ in range(n)]


def milestone_sampler(model: str, seed: int, n_min: int) -> MilestoneSampler:
    return new_sampler(Searcher(model=model, n_startup_trials=n_min), seed, MILESTONES)


@pytest.mark.parametrize("model", ["tpe", "gp"])
@pytest.mark.parametrize("seed", [0, 1])
def test_on_a_milestone_it_samples_where_the_slow_starters_end_best(model, seed):
    suggested = _suggestions(milestone_sampler(model, seed, n_min=5))
    assert sum(x > 0.6 for x in suggested) > 0.6 * len(suggested)


def test_n_min_is_checked():
    with pytest.raises(ValueError, match="n_min: 0"):
        MilestoneSampler(optuna.samplers.TPESampler(), MILESTONES, n_min=0)


@pytest.mark.parametrize("model", ["tpe", "gp"])
def test_saved_and_restored_it_samples_what_it_would_have_sampled(model):
    """Tune pickles the searcher with its sampler when it saves, and unpickles it on resume; the
    milestone view is rebuilt from the study, so the restored sampler goes on as the original."""
    import pickle

    def study_with(sampler):
        study = optuna.create_study(sampler=sampler)
        for i in range(12):
            study.add_trial(trial(i, {5: 100.0 - i, 15: 90.0 - 2 * i} if i % 3 else {5: 120.0 + i}, x=i / 12))
        return study

    def sampler():
        return milestone_sampler(model, seed=3, n_min=4)

    uninterrupted, before_kill = study_with(sampler()), study_with(sampler())
    uninterrupted.ask(X), before_kill.ask(X)
    saved = pickle.dumps(before_kill.sampler)  # its view of the last trial is not part of it
    before_kill.sampler = pickle.loads(saved)  # the same study (the journal), the sampler restored
    assert [uninterrupted.ask(X).params["x"] for _ in range(5)] == [before_kill.ask(X).params["x"] for _ in range(5)]
    assert pickle.loads(saved)._view is None


@pytest.mark.parametrize("model", ["tpe", "gp"])
def test_a_multi_objective_study_is_sampled_from_its_finished_trials(model):
    """metric: [fid, params]: Optuna keeps no intermediate values, so no milestone view."""
    study = optuna.create_study(directions=["minimize", "minimize"], sampler=milestone_sampler(model, 0, n_min=4))
    for i in range(8):
        study.add_trial(create_trial(params={"x": i / 8}, distributions=X, values=[100.0 - 10 * i, 10.0 * i]))
    asked = [study.ask(X) for _ in range(2)]
    assert all(0.0 <= t.params["x"] <= 1.0 for t in asked)
    assert [t.number for t in asked] == [8, 9]
    assert [study.trials[n].user_attrs.get(FITTED_ON) for n in (8, 9)] == [FITTED_ON_LAST] * 2


@pytest.mark.parametrize("model", ["tpe", "gp"])
def test_told_last_scores_it_samples_as_the_plain_sampler_and_says_from_when(model):
    """fit_on: last (spaces/cnn.yaml's GP): the sampler sees the study as it is, so it samples what
    Optuna's own would; each trial records whether it was sampled at random (fewer than n_min
    trials had ended) or fitted on the last scores, for results.show."""
    def asked(sampler) -> tuple[list[float], list]:
        study = optuna.create_study(sampler=sampler)
        for i in range(8):
            t = study.ask(X)
            if i % 4 != 3:  # every fourth left running
                study.tell(t, (t.params["x"] - 0.7) ** 2)
        return [t.params["x"] for t in study.trials], [t.user_attrs.get(FITTED_ON) for t in study.trials]

    last = Searcher(model=model, n_startup_trials=3, fit_on="last")
    plain_x, _ = asked(new_sampler(last, seed=5).sampler)
    x, fitted = asked(new_sampler(last, seed=5))
    assert x == plain_x
    assert fitted == [None] * 3 + [FITTED_ON_LAST] * 5  # trial 3 is sampled after trials 0-2 ended


@pytest.mark.parametrize("model", ["tpe", "gp"])
def test_a_conditional_space_whose_view_changes_between_asks_is_sampled(model):
    """A family's own key, trials scored while running and stopped at random milestones: each
    ask's view holds other trials, and the GP models only the keys every trial in it has (seed 1
    failed on the key a family lacks while the GP kept its own running intersection)."""
    rng = random.Random(1)
    study = optuna.create_study(sampler=milestone_sampler(model, seed=1, n_min=4))
    running = {}
    for _ in range(50):
        t = study.ask()
        if t.suggest_categorical("family", ["a", "b"]) == "a":
            t.suggest_float("a_only", 0.0, 1.0)
        t.suggest_float("x", 0.0, 1.0)
        running[t.number] = (t, 0)
        while len(running) >= 4:  # one of 4 running trials reaches its next milestone, and may stop there
            number = rng.choice(list(running))
            t, k = running[number]
            t.report(rng.random() * 100, MILESTONES[k])
            if k == len(MILESTONES) - 1 or rng.random() < 0.5:
                t.set_user_attr(STOP_REASON, "max_epochs" if k == len(MILESTONES) - 1 else "asha")
                study.tell(t, rng.random() * 100)
                del running[number]
            else:
                running[number] = (t, k + 1)
    assert len(study.trials) == 50
    assert sum("a_only" in t.params for t in study.trials) > 5  # the family's key is sampled
