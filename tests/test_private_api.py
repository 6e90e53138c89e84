"""The private parts of Ray Tune and Optuna this project relies on, each checked once here so that an
upgrade past the versions pyproject pins fails with the reason, not somewhere deep in a search.
Behaviour is tested elsewhere through the project's own code."""

import inspect

import optuna
import pytest
from ray.tune.execution.tune_controller import TuneController
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

TESTED = "tested with ray 2.60 and optuna 5.0 (pyproject pins them)"


def _fail(what: str, who: str) -> None:
    pytest.fail(f"{what}: {who} relies on it; {TESTED}")


def test_asha_keeps_its_rungs_and_stop_count_as_persistent_asha_rewrites_them():
    asha = ASHAScheduler(time_attr="epoch", metric="score", mode="min", max_t=8, grace_period=1, reduction_factor=2)
    who = "search.schedulers.PersistentASHA (rungs survive a restore, ray#30838)"
    if not isinstance(getattr(asha, "_num_stopped", None), int):
        _fail("ASHAScheduler._num_stopped is no longer an int", who)
    brackets = getattr(asha, "_brackets", None)
    if not brackets or not all(isinstance(getattr(b, "_rungs", None), list) for b in brackets):
        _fail("ASHAScheduler._brackets[i]._rungs is no longer a list", who)
    milestone, recorded = brackets[0]._rungs[0]
    if not (isinstance(milestone, (int, float)) and isinstance(recorded, dict)):
        _fail("an ASHA rung is no longer (milestone, {trial_id: value})", who)


def test_optuna_search_keeps_its_study_and_trials_where_the_searcher_reads_them(tmp_path):
    search = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score", mode="min")
    search.suggest("t1")
    who = "search.searcher.ScoreOptunaSearch (labels study trials, takes up trials sampled before a kill)"
    if not isinstance(getattr(search, "_ot_study", None), optuna.Study):
        _fail("OptunaSearch._ot_study is no longer the optuna.Study", who)
    trials = getattr(search, "_ot_trials", None)
    if not (isinstance(trials, dict) and isinstance(trials.get("t1"), optuna.Trial)):
        _fail("OptunaSearch._ot_trials is no longer {tune trial id: optuna.Trial}", who)
    if not isinstance(getattr(search, "_completed_trials", None), set):
        _fail("OptunaSearch._completed_trials is no longer a set", who)
    frozen = search._ot_study.get_trials(deepcopy=False)[0]
    if not isinstance(getattr(frozen, "_trial_id", None), int):
        _fail("optuna FrozenTrial._trial_id (the storage's id, which optuna.Trial takes) is gone", who)
    if optuna.Trial(search._ot_study, frozen._trial_id).number != frozen.number:
        _fail("optuna.Trial(study, trial_id) no longer opens a stored trial", who)


def test_tune_controller_saves_its_state_on_demand():
    who = "search.schedulers.SavesOnEvents (saves the experiment state on trial events)"
    if "force" not in inspect.signature(getattr(TuneController, "checkpoint", lambda: None)).parameters:
        _fail("TuneController.checkpoint(force=...) is gone", who)
