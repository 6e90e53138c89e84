"""Every private part of Ray Tune and Optuna the search relies on, and nowhere else.

Each entry says what it is for and was read from the versions in PINS (pyproject pins them). An
attribute that an upgrade took away fails here with one line naming it and the pin
(PrivateAPIChanged), not as a wrong result deep in a search. tests/test_private_api.py checks each.
"""

from __future__ import annotations

import time
from typing import Any

PINS = "read from ray 2.60.0 and optuna 5.0.0 (pyproject pins them)"


class PrivateAPIChanged(RuntimeError):
    """A private attribute of Ray or Optuna that the search relies on is gone or changed."""


def _attr(obj: Any, name: str, what: str) -> Any:
    try:
        return getattr(obj, name)
    except AttributeError:
        raise PrivateAPIChanged(f"{type(obj).__name__}.{name} is gone ({what}); {PINS}") from None


# ray.tune.schedulers.AsyncHyperBandScheduler (async_hyperband.py). PersistentASHA writes its rung
# records to the run folder and back into these after a restore, which rebuilds them empty (ray#30838).

def asha_rungs(asha) -> list[list[tuple[float, dict[str, float]]]]:
    """Per bracket, its rungs: [(milestone, {trial id: value times asha_sign})], ASHA's own lists."""
    brackets = _attr(asha, "_brackets", "ASHA's brackets")
    return [_attr(bracket, "_rungs", "an ASHA bracket's rungs") for bracket in brackets]


def asha_cutoff(asha, bracket: int, recorded: dict[str, float]) -> float:
    """The value a trial must beat at a rung holding `recorded` (times asha_sign), as ASHA computes it."""
    return _attr(_attr(asha, "_brackets", "ASHA's brackets")[bracket], "cutoff", "an ASHA bracket's cutoff")(recorded)


def asha_sign(asha) -> float:
    """1 or -1: what ASHA multiplies a result's metric by before recording it (it keeps maxima)."""
    return _attr(asha, "_metric_op", "ASHA's sign for mode min/max")


def asha_keys(asha) -> tuple[str, str, float]:
    """ASHA's time attribute, metric and max_t: the result keys it reads and its horizon."""
    return (_attr(asha, "_time_attr", "ASHA's time attribute"), _attr(asha, "_metric", "ASHA's metric"),
            _attr(asha, "_max_t", "ASHA's max_t"))


def asha_stopped(asha) -> int:
    """How many trials ASHA has stopped; it counts up by one on each stop."""
    return _attr(asha, "_num_stopped", "ASHA's count of stopped trials")


def set_asha_stopped(asha, count: int) -> None:
    asha_stopped(asha)  # fails when the attribute is gone, rather than creating it
    asha._num_stopped = count


# ray.tune.execution.tune_controller. A scheduler is handed the controller wrapped in a
# TrialRunnerWrapper, which lets it call only a few methods; SavesOnEvents saves the experiment
# state with the controller's own checkpoint(force=True), the call Tune's periodic save makes.

def _controller(wrapped_controller):
    """The TuneController inside the wrapper Tune hands a scheduler."""
    from ray.tune.execution.tune_controller import TrialRunnerWrapper, TuneController

    if not isinstance(wrapped_controller, TrialRunnerWrapper):
        raise PrivateAPIChanged(f"a scheduler is handed a {type(wrapped_controller).__name__}, not a "
                                f"TrialRunnerWrapper (saving the experiment state); {PINS}")
    controller = _attr(wrapped_controller, "_tune_controller", "the wrapped TuneController")
    if not isinstance(controller, TuneController):
        raise PrivateAPIChanged(f"TrialRunnerWrapper._tune_controller is a {type(controller).__name__}, "
                                f"not a TuneController; {PINS}")
    return controller


def save_experiment_state(wrapped_controller) -> None:
    """Save Tune's experiment state now (SavesOnEvents)."""
    _controller(wrapped_controller).checkpoint(force=True)


def state_upload_running(wrapped_controller) -> bool:
    """Whether Tune is still uploading its last saved experiment state to storage (a forced save
    would first wait for it: SavesOnEvents saves later instead). Tune's checkpoint manager keeps
    its storage context (_checkpoint_manager._storage), whose syncer runs the upload in a
    _BackgroundProcess (_sync_process)."""
    manager = _attr(_controller(wrapped_controller), "_checkpoint_manager", "Tune's experiment checkpoint manager")
    syncer = _attr(_attr(manager, "_storage", "the checkpoint manager's storage context"), "syncer",
                   "the storage context's syncer")
    process = _attr(syncer, "_sync_process", "the syncer's running upload")
    return process is not None and bool(_attr(process, "is_running", "whether an upload is running"))


# ray.tune.experiment.trial.Trial / ray.tune.trainable.metadata._TrainingRunMetadata: Tune keeps,
# per trial and reported number, a running average of its last 5 and last 10 values (two deques per
# number, n_steps), and cloudpickles every deque into its experiment state on each save of the trial.

def keep_no_running_averages(trial) -> None:
    """Stop Tune keeping its last-5 and last-10 averages of the trial's reported numbers (SavesOnEvents).
    They only serve ExperimentAnalysis.get_best_trial(scope="last-5-avg"), which nothing here asks;
    their deques were about 90% of the time Tune took to serialize a trial's state (bench/driver_scale.py)."""
    metadata = _attr(trial, "run_metadata", "the trial's runtime metadata")
    _attr(metadata, "_n_steps", "the running averages' window lengths")
    _attr(metadata, "metric_n_steps", "the running averages' last values")
    metadata._n_steps, metadata.metric_n_steps = (), {}


# ray.train._internal.storage._FilesystemSyncer: Tune uploads its experiment state with
# syncer.sync_up(local_dir, remote_dir), which runs in a background thread the function and keyword
# arguments (local_path, fs, fs_path, exclude) that _sync_up_command builds. A syncer keeps its last
# command, and Tune pickles the syncer with each trial's storage context: the command stays a
# module-level function with plain arguments.

_state_uploads: dict[str, Any] = {"through": None, "before": {}, "seconds": 0.0}


def upload_states_through(upload_state) -> None:
    """From now on in this process, Tune's syncer uploads its experiment state by calling
    upload_state(upload, local_path, fs, fs_path, exclude, before), handed Tune's own upload and its
    arguments (search.state_upload), and what its destination registered (before_state_uploads), in
    Tune's upload thread."""
    from ray.train._internal.storage import _FilesystemSyncer

    _state_uploads["through"] = upload_state
    build = _attr(_FilesystemSyncer, "_sync_up_command", "how Tune's syncer builds an upload")
    if getattr(build, "builds_state_upload", False):
        return

    def sync_up_command(self, local_path: str, uri: str, exclude=None):
        upload, kwargs = build(self, local_path=local_path, uri=uri, exclude=exclude)
        return _state_upload, {**kwargs, "upload": upload}

    sync_up_command.builds_state_upload = True
    _FilesystemSyncer._sync_up_command = sync_up_command


def before_state_uploads(experiment_fs_path: str, before) -> None:
    """From now on in this process, each upload of Tune's experiment state to `experiment_fs_path`
    (its storage context's experiment_fs_path, e.g. bucket/prefix/name) calls before() in Tune's
    upload thread, once upload_state has copied the state aside and before it uploads that copy:
    the run's own files then reach storage before the state that refers to them, and are no older
    than it (Tune may save again meanwhile), without holding up the driver
    (search.tuning.PushesRunFiles). Needs upload_states_through."""
    _state_uploads["before"][experiment_fs_path] = before


def _state_upload(upload, fs_path: str, **kwargs) -> None:
    started = time.perf_counter()
    before = _state_uploads["before"].get(fs_path, lambda: None)
    _state_uploads["through"](upload, fs_path=fs_path, before=before, **kwargs)
    _state_uploads["seconds"] = time.perf_counter() - started


def last_state_upload_seconds() -> float:
    """How long the last finished upload of Tune's experiment state took, the driver's files before
    it included (0.0 before the first). Needs upload_states_through."""
    return _state_uploads["seconds"]


# ray.tune.execution.tune_controller.TuneController.resume restores Tune's trials from its newest
# experiment state, then its search algorithm from two more files saved with it: the searcher's
# own (searcher-state-*.pkl) and its wrappers' (search_gen_state-*.json): a SearchGenerator
# (_counter: how many trials it has made; it makes none past num_samples) and, where
# max_concurrent_trials is set, a ConcurrencyLimiter (live_trials: the trials holding its places).
# A kill can leave the three from different saves; search.searcher.take_up_tunes_trials reconciles them.

_resumes: dict[str, Any] = {"then": None}


def after_tune_resumes(then) -> None:
    """From now on in this process, then(controller) is called with the TuneController once it has
    restored a search's trials and search algorithm, before its first step."""
    from ray.tune.execution.tune_controller import TuneController

    _resumes["then"] = then
    resume = _attr(TuneController, "resume", "how Tune restores a search")
    if getattr(resume, "calls_after", False):
        return

    def resume_then(self, *args, **kwargs):
        resume(self, *args, **kwargs)
        _resumes["then"](self)

    resume_then.calls_after = True
    TuneController.resume = resume_then


def tune_searcher(controller):
    """The searcher a TuneController's search algorithm wraps (None: Tune's own variant generator,
    e.g. a grid search), and the layers around it: the SearchGenerator and any ConcurrencyLimiter."""
    from ray.tune.search import SearchGenerator

    layers = [controller.search_alg]
    if not isinstance(layers[0], SearchGenerator):
        return None, layers
    while hasattr(layers[-1], "searcher"):
        layers.append(layers[-1].searcher)
    return layers[-1], layers[:-1]


def set_trials_made(layers: list, trials: list) -> None:
    """The layers around a searcher (tune_searcher's) made exactly the Tune trials `trials`: the
    generator counts them (it makes the rest up to num_samples), and a concurrency limiter's places
    are held by those not yet ended, whichever save its own record came from (one older than Tune's
    held a place for a trial that had ended, forever, and none for one Tune ran). (The searcher's
    own record: ScoreOptunaSearch.own_exactly.)"""
    from ray.tune.experiment import Trial
    from ray.tune.search import ConcurrencyLimiter

    _attr(layers[0], "_counter", "how many trials Tune's generator made")
    layers[0]._counter = len(trials)
    unfinished = {t.trial_id for t in trials if t.status not in (Trial.TERMINATED, Trial.ERROR)}
    for limiter in (layer for layer in layers if isinstance(layer, ConcurrencyLimiter)):
        _attr(limiter, "live_trials", "the trials holding a concurrency limiter's places")
        _attr(limiter, "num_unfinished_live_trials", "how many of them run")
        limiter.live_trials, limiter.num_unfinished_live_trials = set(unfinished), len(unfinished)


def tuner_run_config(tuner):
    """A built Tuner's RunConfig, which bench/driver_scale.py changes after new_tuner built it (the
    Tuner keeps it in its local tuner, Tuner._local_tuner._run_config)."""
    return _attr(_attr(tuner, "_local_tuner", "a Tuner's local tuner"), "_run_config", "a Tuner's RunConfig")


def on_state_saves(saved) -> None:
    """From now on in this process, call `saved(seconds, staging_dir)` after each save of Tune's
    experiment state (bench/driver_scale.py counts, times and sizes them): Tune saves through
    ray.tune.execution.experiment_state._ExperimentCheckpointManager.sync_up_experiment_state,
    which skips a save that is not due, into its _storage.experiment_driver_staging_path."""
    from ray.tune.execution.experiment_state import _ExperimentCheckpointManager

    original = _attr(_ExperimentCheckpointManager, "sync_up_experiment_state", "Tune's state save")

    def sync_up(self, save_fn, force=False, wait=False):
        done = []
        t0 = time.perf_counter()
        original(self, lambda: done.append(save_fn()), force=force, wait=wait)
        if done:
            storage = _attr(self, "_storage", "the checkpoint manager's storage context")
            saved(time.perf_counter() - t0, storage.experiment_driver_staging_path)

    _ExperimentCheckpointManager.sync_up_experiment_state = sync_up


# ray.tune.search.optuna.OptunaSearch (optuna_search.py). ScoreOptunaSearch labels the study
# trials it owns and takes up a study trial sampled before a kill (search.searcher).

def searcher_trials(search) -> dict:
    """{Tune trial id: optuna.Trial}, the study trials OptunaSearch has handed out."""
    return _attr(search, "_ot_trials", "OptunaSearch's study trial per Tune trial")


def searcher_study(search):
    """The optuna.Study OptunaSearch samples in."""
    return _attr(search, "_ot_study", "OptunaSearch's study")


def searcher_completed(search) -> set[str]:
    """The Tune trial ids OptunaSearch has told the study the end of (it tells no trial twice)."""
    return _attr(search, "_completed_trials", "OptunaSearch's told trials")


# optuna's loggers that say a study was created or opened (search.tuning drops those lines).
OPTUNA_STUDY_NOTICE_LOGGERS = ("optuna.storages.journal._storage", "optuna.study.study")


# optuna: a FrozenTrial's storage id (FrozenTrial._trial_id), which optuna.Trial and the storage
# take; a study's trials as TPESampler reads them (Study._get_trials, which StudyView replaces).

def open_trial(study, frozen):
    """Optuna's own handle (optuna.Trial) on a stored trial, to set its attributes or tell it."""
    import optuna

    return optuna.Trial(study, _attr(frozen, "_trial_id", "a stored trial's id"))


def set_trial_user_attr(study, frozen, key: str, value: Any) -> None:
    """A user attribute on a trial a sampler is handed as a FrozenTrial (samplers get no optuna.Trial)."""
    storage = _attr(study, "_storage", "the study's storage")
    storage.set_trial_user_attr(_attr(frozen, "_trial_id", "a stored trial's id"), key, value)


class StudyView:
    """A study as Optuna's TPESampler and GPSampler read it, with its trials replaced
    (search.milestone_view): they read trials through Study._get_trials and get_trials; everything
    else (its storage, where they share a running trial's relative settings, its directions) is the
    study's."""

    def __init__(self, study, trials: list):
        _attr(study, "_get_trials", "how TPESampler reads a study's trials, which this view replaces")
        self._study, self._trials = study, trials

    def __getattr__(self, name: str) -> Any:
        return getattr(self._study, name)

    def _get_trials(self, deepcopy: bool = True, states=None, use_cache: bool = False) -> list:
        return [t for t in self._trials if states is None or t.state in states]

    def get_trials(self, deepcopy: bool = True, states=None) -> list:
        return self._get_trials(deepcopy, states)

    @property
    def trials(self) -> list:
        return self._get_trials()
