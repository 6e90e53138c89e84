"""The search itself: Ray Tune runs the trials, Optuna's sampler (TPE or a Gaussian process) picks
them, ASHA stops the weak ones, and every trial is ranked by its score (search.objective)."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal

from ray import tune

from cvae_core.data import ImageData
from results.features import MetricOptions
from results.names import resolve_extractor
from results.run_folder import RunFolder
from results.study import journal_storage

from .objective import METRIC, MODE, milestones, searched_keys
from .private_api import (
    OPTUNA_STUDY_NOTICE_LOGGERS,
    after_tune_resumes,
    before_state_uploads,
    tune_searcher,
    upload_states_through,
)
from .schedulers import STATE_PERIOD_S, PersistentASHA
from .searcher import ScoreOptunaSearch, create_study, new_sampler, settle, take_up_tunes_trials
from .settings import Objective, Spec
from .state_upload import upload_state
from .trainable import run_trial, tune_trial_dirname
from .trials import write_trials_table
from .workers import prime_on_worker

log = logging.getLogger("search")


def prepare_objective(run: RunFolder, spec: Spec, data: ImageData, resuming: bool) -> Objective:
    """Resolve the objective's feature extractor once, here (a resumed run's: the one it recorded),
    and cache the reference's features and statistics before any trial needs them (on a GPU node
    when trials use GPUs). Needs Ray initialised; search.run calls it before it makes the run
    folder, or deletes one for --fresh, so an extractor that cannot load changes nothing."""
    objective, res = spec.search.objective, spec.search.resources
    if not objective.scores_samples:
        return objective
    weights = spec.final.inception_weights
    requested = objective.feature_extractor
    extractor = run.extractor("search", requested, weights) if resuming else resolve_extractor(requested, weights)
    n = len(data.classes) * objective.samples_per_class
    log.info(f"search objective: {objective.ranked_by} of {n} samples against "
             f"{objective.reference.label(data)}, features from {extractor}")
    prime_on_worker(objective.reference, MetricOptions(data, extractor, weights), res.cpu, res.gpu)
    return objective.model_copy(update={"feature_extractor": extractor})


def new_tuner(spec: Spec, run: RunFolder, trainable, space=None):
    """The search's Tuner: the searcher, ASHA (which also decides when the state is saved) and
    the run folder. Trials keep their own checkpoints, so Tune keeps none. `space`: Optuna's
    define-by-run space with a `params(config)`, when not the spec's (a benchmark's)."""
    s = spec.search
    scheduler = PersistentASHA(run.location, time_attr="epoch", max_t=s.asha.max_t, grace_period=s.asha.grace_period,
                               reduction_factor=s.asha.reduction_factor, metric=METRIC, mode=MODE,
                               min_agreement=s.asha.min_agreement, min_finished=s.asha.min_finished,
                               run_to_end_every=s.asha.run_to_end_every)
    if spec.space.presets:
        search_alg = None
        param_space = {"preset": tune.grid_search(list(spec.space.presets)),
                       **{k: d.value for k, d in spec.space.top.items()}}
        num_samples = 1
    else:
        create_study(run, list(s.objective.metric))
        score_at = tuple(milestones(s.asha.grace_period, s.asha.reduction_factor, s.asha.max_t))
        keys = searched_keys(s.objective.metric)
        # A define-by-run space takes metric/mode here (OptunaSearch ignores TuneConfig's),
        # so they are given to the searcher and scheduler and not to TuneConfig.
        metric, mode = (METRIC, MODE) if len(keys) == 1 else (keys, [MODE] * len(keys))
        search_alg = ScoreOptunaSearch(space=space or spec.space, metric=metric, mode=mode,
                                       sampler=new_sampler(s.searcher, s.seed, (*score_at, s.asha.max_t)),
                                       storage=journal_storage(run),
                                       study_name=run.name, run_location=run.location)
        param_space, num_samples = None, s.num_samples
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
            trial_dirname_creator=tune_trial_dirname, max_concurrent_trials=s.max_concurrent or None,
            # A trial's worker goes on to the next trial: no process start, and the feature
            # extractor it built (once per process) is built once per worker instead of per trial.
            reuse_actors=True,
        ),
        run_config=tune.RunConfig(
            name=run.name,
            **tune_storage(run),
            failure_config=tune.FailureConfig(max_failures=0),
            callbacks=run_callbacks(run),
            verbose=1,
        ),
    )


def tune_storage(run: RunFolder) -> dict:
    """Where Tune keeps the run's experiment state, as RunConfig takes it: for a run at a URI, its
    bucket path and the run's own filesystem (results.storage), so that Tune's uploads take its options."""
    return {"storage_path": run.storage, "storage_filesystem": run.filesystem}


def run_callbacks(run: RunFolder) -> list:
    """Tune callbacks for a search in `run`: its driver staging folder kept small, and for a run at
    a URI the driver's files uploaded with each save."""
    return [DropsFinishedTrialFolders(), *([PushesRunFiles(run.location)] if run.remote else [])]


class DropsFinishedTrialFolders(tune.Callback):
    """Removes the empty folder Tune keeps for each finished trial in its driver staging folder
    (Trial.local_path: for driver-side logs, which configure_tune turns off, and a failed trial's
    error file, which keeps its folder). Tune uploads the staging folder whole on every save: in
    object storage each empty folder costs a request (a folder marker; at 200 trials about 1.5 s of
    the upload the search's last save waits for), and on a disk a copy and a mkdir (at 800 trials
    about 0.1 s of each upload, search.state_upload)."""

    def setup(self, **info) -> None:
        self._trials, self._emptied = [], set()  # also after a restore, which unpickles this object

    def on_step_begin(self, iteration: int, trials: list, **info) -> None:
        self._trials = trials  # Tune's own list of the search's trials, kept up to date by Tune

    def get_state(self) -> None:
        """In every save, before Tune uploads its staging folder."""
        for trial in self._trials:
            if trial.status == "TERMINATED" and trial.trial_id not in self._emptied:
                with contextlib.suppress(OSError):  # gone already, or holds files
                    os.rmdir(trial.local_path)
                self._emptied.add(trial.trial_id)
        return None  # nothing of its own to save


class PushesRunFiles(tune.Callback):
    """Uploads the driver's files of a run at a URI (results.storage) whenever Tune uploads its
    experiment state, in Tune's upload thread and before that state (private_api.
    before_state_uploads), so the bucket's ASHA records and study are never older than its Tune
    state, as in a local run folder, and the driver does not wait for them: a save costs it no more
    than on the local disk. Holds the run's location, not its mirror: a search resumed on another
    machine unpickles it there."""

    def __init__(self, location: str):
        self.location = location

    def setup(self, **info) -> None:
        before_state_uploads(RunFolder.at(self.location).remote.fs_path, self._push)

    def _push(self) -> None:
        run = RunFolder.at(self.location)
        run.push(run.path, recursive=False)
        run.push(run.study_artifacts)


def _hold_tunes_trials(controller) -> None:
    """Once Tune has restored a search: its searcher and ASHA hold the trials the restored Tune holds
    and no others (what a kill left from different saves; a grid of presets remakes its own)."""
    take_up_tunes_trials(controller)
    asha = controller.scheduler_alg
    if isinstance(tune_searcher(controller)[0], ScoreOptunaSearch) and isinstance(asha, PersistentASHA):
        asha.keep_only([trial.trial_id for trial in controller.get_trials()])


def configure_tune() -> None:
    """Tune's and Optuna's process-wide settings for a search (read when a Tuner starts)."""
    # The driver's heap is mostly what it has imported (Ray, Tune, Optuna, torch: about 300,000
    # objects), and Python's full garbage collection scans it whole: 0.2 s on 2 CPU cores, once or
    # twice in a 200-trial search; falling into a save, it doubled the saves' share of the driver's
    # time (bench/driver_scale.py). Frozen before the first search, it is left out of every scan.
    if not gc.get_freeze_count():
        gc.collect()
        gc.freeze()
    # The state is saved when a trial is added, finishes or fails (SavesOnEvents), else rarely.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", str(STATE_PERIOD_S))
    # Each trial writes its own records into the run folder. Tune's driver-side copies of them
    # (result.json, progress.csv, events) would be copied to storage whole on every save.
    os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "1"
    # Tune's experiment state lands whole, so that a kill during an upload leaves one to resume from.
    upload_states_through(upload_state)
    # ... beside the searcher's, which a kill may leave from another save: a resume reconciles them.
    after_tune_resumes(_hold_tunes_trials)
    # A trial's score exists from its first ASHA milestone on; Tune would refuse earlier results.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # ... and Tune, reading its experiment back, would warn about each missing per-trial log.
    logging.getLogger("ray.tune.analysis.experiment_analysis").setLevel(logging.ERROR)
    # The command's own line says how to resume (the same command); Tune's would point to Tuner.restore.
    # (addFilter keeps one copy, however many searches this process runs.)
    logging.getLogger("ray.tune.tune").addFilter(_not_tunes_resume_hint)
    # The command says whether it starts or resumes; Optuna would say it of the study, twice.
    for name in OPTUNA_STUDY_NOTICE_LOGGERS:
        logging.getLogger(name).addFilter(_not_optunas_study_notice)


def _not_optunas_study_notice(record: logging.LogRecord) -> bool:
    """False for Optuna's "A new study created in Journal" and "Using an existing study"."""
    return not record.getMessage().startswith(("A new study created", "Using an existing study"))


def _not_tunes_resume_hint(record: logging.LogRecord) -> bool:
    """False for Tune's "Experiment has been interrupted ... Resume experiment with: Tuner.restore(...)"."""
    return "Resume experiment with:" not in record.getMessage()


def run_search(spec: Spec, run: RunFolder, data: ImageData, resuming: bool, objective: Objective) -> bool:
    """Needs Ray initialised, the run folder created and the objective prepared (prepare_objective).
    Runs (or resumes) the search and writes trials.parquet; True when every trial has finished,
    False when interrupted."""
    configure_tune()

    s, res = spec.search, spec.search.resources
    if objective.scores_samples:  # recorded in the run folder, which exists now
        run.extractor("search", objective.feature_extractor, spec.final.inception_weights)
    trainable = tune.with_resources(tune.with_parameters(
        run_trial, data=data, run_location=run.location, train_on=s.train_on, max_t=s.asha.max_t, patience=s.patience,
        checkpoint_every=s.checkpoint_every, grid_every=s.grid_every, gpu_share=res.gpu, cpus=res.cpu,
        objective=objective, inception_weights=spec.final.inception_weights,
        score_at=milestones(s.asha.grace_period, s.asha.reduction_factor, s.asha.max_t), search_seed=s.seed,
    ), {"cpu": res.cpu, "gpu": res.gpu})
    # Tune restores from its experiment state: a command killed before Tune's first save left
    # tuner.pkl without one, and Tuner.restore would start the search over with one trial (it is
    # given no num_samples). Such a search starts again; the searcher takes up its study trial.
    if resuming and run.has_tune_state() and tune.Tuner.can_restore(run.tune_path, storage_filesystem=run.filesystem):
        log.info(f"resuming {run.location}")
        tuner = tune.Tuner.restore(run.tune_path, trainable, resume_errored=True, storage_filesystem=run.filesystem)
    else:
        log.info(f"starting {run.location}")
        tuner = new_tuner(spec, run, trainable)
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGUSR1)}
    try:
        tuner.fit()
    finally:  # Tune leaves its Ctrl-C handler installed, which would swallow a Ctrl-C in the final stage
        for sig, handler in handlers.items():
            if handler is not None:
                signal.signal(sig, handler)
    table = write_trials_table(run, searched_keys(objective.metric))
    run.push(run.path, recursive=False)
    done = int(table["status"].isin(["TERMINATED", "ERROR"]).sum())
    log.info(f"{done}/{len(table)} trials finished, {int((table['status'] == 'ERROR').sum())} failed; "
             f"table in {run.location}/{run.trials_table.name}")
    # From the table (Tune's state as saved before it shut down), not from the ResultGrid: after a Ctrl-C
    # or SIGTERM Tune marks the trials still running TERMINATED as it stops them, so that count
    # would call a search interrupted in its last trials finished.
    finished = len(table) >= s.num_samples and done == len(table)
    if finished and not spec.space.presets:
        settle(run, table, searched_keys(objective.metric))
    return finished
