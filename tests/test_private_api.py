"""search.private_api: each private part of Ray Tune and Optuna the search relies on, checked on the
real objects of the pinned versions, so that an upgrade that changes one fails here with the reason.
Behaviour is tested elsewhere through the project's own code."""

from pathlib import Path

import optuna
import pytest
from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController
from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from search import private_api
from search.private_api import PrivateAPIChanged
from search.state_upload import upload_state


def asha(mode: str = "min") -> ASHAScheduler:
    return ASHAScheduler(time_attr="epoch", metric="score", mode=mode, max_t=8, grace_period=1, reduction_factor=2)


def test_ashas_rungs_are_its_own_lists_of_milestone_and_recorded_values():
    scheduler = asha()
    [rungs] = private_api.asha_rungs(scheduler)
    assert [milestone for milestone, _ in rungs] == [8, 4, 2, 1]
    rungs[-1][1]["t1"] = -3.0  # written back as PersistentASHA does after a restore
    assert scheduler._brackets[0]._rungs[-1][1] == {"t1": -3.0}


def test_ashas_sign_cutoff_and_stop_count():
    assert private_api.asha_sign(asha("min")) == -1 and private_api.asha_sign(asha("max")) == 1
    scheduler = asha()
    assert private_api.asha_cutoff(scheduler, 0, {"a": -1.0, "b": -2.0, "c": -3.0, "d": -4.0}) == pytest.approx(-2.5)
    assert private_api.asha_stopped(scheduler) == 0
    private_api.set_asha_stopped(scheduler, 3)
    assert private_api.asha_stopped(scheduler) == 3
    assert private_api.asha_keys(scheduler) == ("epoch", "score", 8)


def test_a_trials_running_averages_are_tunes_to_turn_off():
    from types import SimpleNamespace

    from ray.tune.trainable.metadata import _TrainingRunMetadata

    trial = SimpleNamespace(run_metadata=_TrainingRunMetadata())
    private_api.keep_no_running_averages(trial)
    trial.run_metadata.update_metric("score", 1.0, step=1)  # as Tune does with each result
    assert trial.run_metadata.metric_n_steps == {"score": {}}
    with pytest.raises(PrivateAPIChanged, match="run_metadata"):
        private_api.keep_no_running_averages(SimpleNamespace())


def test_the_experiment_state_is_saved_through_the_controller_a_scheduler_is_handed(monkeypatch):
    saved = []
    monkeypatch.setattr(TuneController, "checkpoint", lambda self, force=False, wait=False: saved.append(force))
    controller = TuneController.__new__(TuneController)  # only its checkpoint() is called
    private_api.save_experiment_state(TrialRunnerWrapper(controller, trial_executor=None))
    assert saved == [True]


def test_tunes_running_upload_of_its_state_is_seen_through_its_storage_syncer(tmp_path):
    from types import SimpleNamespace

    from ray.train._internal.storage import StorageContext

    storage = StorageContext(str(tmp_path), "exp")  # the syncer Tune's checkpoint manager uploads with
    controller = TuneController.__new__(TuneController)
    controller._checkpoint_manager = SimpleNamespace(_storage=storage)
    wrapped = TrialRunnerWrapper(controller, trial_executor=None)
    assert private_api.state_upload_running(wrapped) is False  # no upload launched yet
    from ray.train._internal.syncer import _BackgroundProcess

    assert isinstance(_BackgroundProcess.is_running, property)  # what a launched upload is
    storage.syncer._sync_process = SimpleNamespace(is_running=True)
    assert private_api.state_upload_running(wrapped) is True
    storage.syncer._sync_process = SimpleNamespace(is_running=False)
    assert private_api.state_upload_running(wrapped) is False


def test_tunes_state_upload_first_calls_what_its_destination_registered_in_its_own_thread(tmp_path):
    import pickle
    import threading

    from ray.train._internal.storage import StorageContext

    hooked, plain = StorageContext(str(tmp_path), "hooked"), StorageContext(str(tmp_path), "plain")
    staging = tmp_path / "staging"
    staging.mkdir()
    (staging / "experiment_state.json").write_text("{}")
    seen = []
    private_api.upload_states_through(upload_state)  # as search.tuning.configure_tune sets it
    private_api.before_state_uploads(hooked.experiment_fs_path, lambda: seen.append(
        (threading.current_thread() is threading.main_thread(), (tmp_path / "hooked/experiment_state.json").exists())))
    for storage in (hooked, plain):
        storage.syncer.sync_up(str(staging), storage.experiment_fs_path)
        storage.syncer.wait()
        assert (Path(storage.experiment_fs_path) / "experiment_state.json").read_text() == "{}"
    assert seen == [(False, False)]  # once, for its destination: in Tune's upload thread, before the state
    assert private_api.last_state_upload_seconds() > 0  # what the search's last save will wait for (SavesOnEvents)
    pickle.loads(pickle.dumps(hooked))  # Tune pickles a storage context, its syncer's last upload with it


def test_anything_but_tunes_wrapper_is_refused_rather_than_called():
    with pytest.raises(PrivateAPIChanged, match=r"handed a TuneController, not a TrialRunnerWrapper .*ray 2\.60"):
        private_api.save_experiment_state(TuneController.__new__(TuneController))


def test_a_tuners_run_config_is_the_one_it_runs_with():
    from ray import tune

    config = tune.RunConfig(name="x")
    assert private_api.tuner_run_config(tune.Tuner(lambda c: None, run_config=config)) == config


def test_tunes_state_saves_can_be_watched(monkeypatch):
    import inspect

    from ray.train._internal.storage import StorageContext
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    assert list(inspect.signature(_ExperimentCheckpointManager.sync_up_experiment_state).parameters) == [
        "self", "save_fn", "force", "wait"]
    assert isinstance(getattr(StorageContext, "experiment_driver_staging_path", None), property)
    monkeypatch.setattr(_ExperimentCheckpointManager, "sync_up_experiment_state",
                        lambda self, save_fn, force=False, wait=False: save_fn())
    seen = []
    private_api.on_state_saves(lambda seconds, staging: seen.append(staging))
    manager = _ExperimentCheckpointManager.__new__(_ExperimentCheckpointManager)
    manager._storage = type("Storage", (), {"experiment_driver_staging_path": "/staging"})()
    manager.sync_up_experiment_state(lambda: None, force=True)
    assert seen == ["/staging"]


def test_optuna_search_keeps_its_study_its_trials_and_the_ones_it_told():
    search = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score", mode="min")
    search.suggest("t1")
    study, trials = private_api.searcher_study(search), private_api.searcher_trials(search)
    assert isinstance(study, optuna.Study) and list(trials) == ["t1"] and isinstance(trials["t1"], optuna.Trial)
    search.on_trial_complete("t1", {"score": 1.0})
    assert private_api.searcher_completed(search) == {"t1"}
    assert study.trials[0].value == 1.0


def test_tunes_search_algorithm_is_set_to_the_trials_it_made():
    from types import SimpleNamespace

    from ray.tune.search import ConcurrencyLimiter, SearchGenerator

    search = OptunaSearch(space={"x": optuna.distributions.FloatDistribution(0, 1)}, metric="score", mode="min")
    limiter = ConcurrencyLimiter(search, max_concurrent=2)
    generator = SearchGenerator(limiter)
    generator.set_state({"counter": 2, "total_samples": 2, "finished": False, "experiment": None})  # 2 made
    assert limiter.suggest("t1") and limiter.suggest("t2") and limiter.suggest("t3") is None  # places full
    controller = SimpleNamespace(search_alg=generator)
    assert private_api.tune_searcher(controller) == (search, [generator, limiter])
    assert generator.is_finished()
    # Tune restored t1 running, t2 ended, and t5, which the limiter's older record lacks
    restored = [SimpleNamespace(trial_id="t1", status="RUNNING"), SimpleNamespace(trial_id="t2", status="TERMINATED")]
    private_api.set_trials_made([generator, limiter], restored)
    assert generator.is_finished()  # it makes none more: 2 made, of 2
    private_api.set_trials_made([generator, limiter], restored[:1])
    assert not generator.is_finished()  # it makes one more
    assert limiter.suggest("t4") and limiter.live_trials == {"t1", "t4"}
    private_api.set_trials_made([generator, limiter], [*restored, SimpleNamespace(trial_id="t5", status="PENDING")])
    assert limiter.live_trials == {"t1", "t5"} and limiter.num_unfinished_live_trials == 2
    assert limiter.suggest("t6") is None  # both places held: t2's ended, t5's not
    grid = SimpleNamespace(search_alg=private_api.PrivateAPIChanged)  # not a SearchGenerator: no searcher
    assert private_api.tune_searcher(grid)[0] is None


def test_a_hook_runs_once_tune_has_resumed_a_search(monkeypatch):
    calls = []
    monkeypatch.setattr(TuneController, "resume", lambda self, resume_config: calls.append("resume"))
    private_api.after_tune_resumes(lambda controller: calls.append(controller))
    controller = TuneController.__new__(TuneController)
    controller.resume(None)
    assert calls == ["resume", controller]


def test_a_stored_trial_is_opened_and_labelled_by_its_storage_id():
    study = optuna.create_study()
    study.ask()
    frozen = study.trials[0]
    assert private_api.open_trial(study, frozen).number == frozen.number
    private_api.set_trial_user_attr(study, frozen, "k", 5)
    assert study.trials[0].user_attrs == {"k": 5}


def test_tpe_reads_a_study_view_in_place_of_the_studys_trials():
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(n_startup_trials=2, seed=0))
    study.optimize(lambda t: t.suggest_float("x", 0, 1), n_trials=3)
    study.ask()
    shown = study.trials[:3]
    read = []

    class Counted(private_api.StudyView):
        def _get_trials(self, deepcopy=True, states=None, use_cache=False):
            read.append(states)
            return super()._get_trials(deepcopy, states, use_cache)

    view = Counted(study, shown)
    assert view.get_trials(states=(optuna.trial.TrialState.COMPLETE,)) == shown and view.trials == shown
    assert view.directions == study.directions  # the rest is the study's
    tpe = optuna.samplers.TPESampler(n_startup_trials=2, seed=0, multivariate=True, constant_liar=True)
    trial = study.trials[3]
    space = tpe.infer_relative_search_space(view, trial)
    read.clear()
    assert 0 <= tpe.sample_relative(view, trial, space)["x"] <= 1
    assert read, "TPESampler no longer reads a study's trials through Study._get_trials"


def test_optunas_study_notices_come_from_the_loggers_the_search_quiets(tmp_path, monkeypatch):
    import logging

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append((record.name, record.getMessage().split(" with")[0]))
    for name in private_api.OPTUNA_STUDY_NOTICE_LOGGERS:  # without the filters a search in this process added
        monkeypatch.setattr(logging.getLogger(name), "filters", [])
    monkeypatch.setattr(logging.getLogger("optuna"), "level", logging.INFO)
    monkeypatch.setattr(logging.getLogger("optuna"), "handlers", [handler])
    storage = JournalStorage(JournalFileBackend(str(tmp_path / "journal")))
    optuna.create_study(storage=storage, study_name="s")
    optuna.create_study(storage=storage, study_name="s", load_if_exists=True)
    assert set(seen) == {(private_api.OPTUNA_STUDY_NOTICE_LOGGERS[0], "A new study created in Journal"),
                         (private_api.OPTUNA_STUDY_NOTICE_LOGGERS[1], "Using an existing study")}


def test_a_missing_attribute_is_one_line_naming_it_and_the_pin():
    class Gone:
        pass

    with pytest.raises(PrivateAPIChanged) as raised:
        private_api.asha_stopped(Gone())
    message = str(raised.value)
    assert message.startswith("Gone._num_stopped is gone (") and "ray 2.60.0 and optuna 5.0.0" in message
    assert "\n" not in message
    for call in (private_api.asha_rungs, private_api.asha_sign, private_api.searcher_trials,
                 private_api.searcher_study, private_api.searcher_completed, private_api.tuner_run_config,
                 lambda o: private_api.set_asha_stopped(o, 1), lambda o: private_api.open_trial(None, o),
                 lambda o: private_api.set_trial_user_attr(o, o, "k", 1), lambda o: private_api.asha_cutoff(o, 0, {}),
                 lambda o: private_api.save_experiment_state(o)):
        with pytest.raises(PrivateAPIChanged):
            call(Gone())
