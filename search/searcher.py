"""The search's searcher: Optuna's sampler (TPE or a Gaussian process) through Tune's OptunaSearch,
its study in the run folder.

The study lives in RUN/optuna.journal (results.study), so optuna-dashboard shows the search as it
runs and a resumed search continues it. Each study trial carries its Tune trial's id and folder,
its parameter count, why it stopped (ASHA's stops included, which Tune reports as complete) and
its score's epoch, and its last sample grid as an artifact. A kill leaves the study as the
journal holds it: a trial sampled after Tune's last save is taken up again by the next trial
Tune asks for (its settings once more), a trial told before Tune saved that it ended is not told
twice, and `settle` ends whatever is still running when the search ends, from trials.parquet.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import optuna
import pandas as pd
from optuna.exceptions import ExperimentalWarning
from optuna.samplers import BaseSampler, GPSampler, TPESampler
from optuna.trial import TrialState
from ray.tune.search.optuna import OptunaSearch

from cvae_core.layout import latest_samples_grid
from results import study as study_files
from results.run_folder import RunFolder, trial_name

from .milestone_view import MilestoneSampler
from .private_api import (
    open_trial,
    searcher_completed,
    searcher_study,
    searcher_trials,
    set_trials_made,
    tune_searcher,
)
from .seeds import TRIAL_NUMBER
from .settings import Searcher
from .trials import stop_reason


def new_sampler(searcher: Searcher, seed: int, milestones: tuple[int, ...] = ()) -> BaseSampler:
    """Optuna's TPE or GP sampler with every setting given (search.settings.Searcher says why each is
    what it is), fitted on the scores at one of `milestones` (epochs: ASHA's and the last) when
    `fit_on: milestone`, on each trial's last score otherwise; either way it records what it was
    fitted on (MilestoneSampler)."""
    if searcher.model == "gp":
        # The GP models the keys every trial has; a family's own keys it leaves to its independent
        # sampler, univariate TPE here rather than its default, random search.
        tpe = TPESampler(seed=seed, n_startup_trials=searcher.n_startup_trials)
        sampler = GPSampler(seed=seed, n_startup_trials=searcher.n_startup_trials, independent_sampler=tpe,
                            warn_independent_sampling=False)
    else:
        with warnings.catch_warnings():  # `group` is marked experimental; it is chosen, and tested here
            warnings.simplefilter("ignore", ExperimentalWarning)
            sampler = TPESampler(seed=seed, n_startup_trials=searcher.n_startup_trials,
                                 multivariate=searcher.multivariate, group=searcher.group,
                                 constant_liar=searcher.constant_liar)
    return MilestoneSampler(sampler, milestones if searcher.fit_on == "milestone" else (),
                            n_min=searcher.n_startup_trials)


def create_study(run: RunFolder, metric_names: list[str]) -> None:
    """The run's study, with its metrics named so that tools label them (all minimised), made here
    before OptunaSearch opens it; an existing one is kept."""
    study = optuna.create_study(storage=study_files.journal_storage(run), study_name=run.name, load_if_exists=True,
                                directions=["minimize"] * len(metric_names))
    with warnings.catch_warnings():  # set_metric_names is marked experimental
        warnings.simplefilter("ignore", ExperimentalWarning)
        study.set_metric_names(metric_names)


class ScoreOptunaSearch(OptunaSearch):
    """OptunaSearch told only of results that carry the metric (a trial is scored from its first
    ASHA milestone on, and OptunaSearch reads the metric of every result it is given), whose study
    trials say which Tune trial they are (see the module doc), and whose suggestions carry their
    study trial number (search.seeds). `run_location`: the run's folder or URI (RunFolder.at), the
    same wherever a resumed search unpickles it; `space` also says a sampled configuration's
    parameter count (`params`, None where it has none)."""

    def __init__(self, *args, space, run_location: str, **kwargs):
        super().__init__(*args, space=space, **kwargs)
        self._params, self._run_location = space.params, run_location

    def suggest(self, trial_id: str) -> dict | None:
        owned = searcher_trials(self)
        if trial_id not in owned and (lost := self._sampled_before_a_kill()) is not None:
            owned[trial_id] = lost
        config = super().suggest(trial_id)
        if config is not None:
            config[TRIAL_NUMBER] = owned[trial_id].number
            trial, folder = owned[trial_id], RunFolder.at(self._run_location).trial(trial_name(config, trial_id))
            trial.set_user_attr(study_files.TUNE_TRIAL_ID, trial_id)
            trial.set_user_attr(study_files.TRIAL_DIR, str(folder))
            if (params := self._params(config)) is not None:
                trial.set_user_attr(study_files.PARAMS, params)
        return config

    def own_exactly(self, trial_ids: list[str]) -> None:
        """Hold the study trials of the Tune trials `trial_ids` (each labelled with its Tune trial as
        it was handed out) and no others."""
        owned, study = searcher_trials(self), searcher_study(self)
        for trial_id in set(owned) - set(trial_ids):
            del owned[trial_id]
        missing = set(trial_ids) - set(owned)
        for frozen in study.get_trials(deepcopy=False) if missing else ():
            if (trial_id := frozen.user_attrs.get(study_files.TUNE_TRIAL_ID)) in missing:
                owned[trial_id] = open_trial(study, frozen)

    def _sampled_before_a_kill(self) -> optuna.Trial | None:
        """A study trial still running that no trial of this search owns: sampled by a driver that
        was killed before Tune saved the trial. Optuna gives a trial's settings again when asked for
        them again, so the next trial takes it up instead of sampling anew."""
        owned, study = {trial.number for trial in searcher_trials(self).values()}, searcher_study(self)
        for frozen in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen.number not in owned:
                return open_trial(study, frozen)
        return None

    def on_trial_result(self, trial_id: str, result: dict):
        if trial_id not in searcher_completed(self) and (trial := searcher_trials(self).get(trial_id)) is not None:
            self._report_score(trial, result)

    def _report_score(self, trial: optuna.Trial, result: dict) -> None:
        """A new score, as Optuna's intermediate value at the epoch it was computed (Tune's
        iteration, which OptunaSearch would use, restarts when a trial resumes; the epoch does not).
        With several objectives Optuna keeps none."""
        if isinstance(self.metric, list) or self.metric not in result or result.get("score_epoch") != result["epoch"]:
            return
        with warnings.catch_warnings():  # a resumed trial reports its last epoch again: Optuna keeps the first
            warnings.simplefilter("ignore", UserWarning)
            try:
                trial.report(result[self.metric], result["epoch"])
            except optuna.exceptions.UpdateFinishedTrialError:
                pass  # ended in the study already: told before a kill Tune's save missed, or failed before a retry

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        trial = searcher_trials(self).get(trial_id)
        if trial is not None and (state := self._state(trial.number)).is_finished():
            searcher_completed(self).add(trial_id)  # told before a kill that came before Tune saved its end
            if state == TrialState.FAIL and result and not error:
                self._record_retry(trial, result)
            return
        if trial is None:
            return super().on_trial_complete(trial_id, result, error)
        self._label_end(trial, result or {}, error)
        if result and not error:
            self._report_score(trial, result)  # Tune hands the result ASHA stopped a trial on to this call alone
        # A trial that failed after a score would be told complete with it: it failed.
        super().on_trial_complete(trial_id, None if error else result, error)

    def _record_retry(self, failed: optuna.Trial, result: dict) -> None:
        """A trial that failed (out of memory, a lost node) and finished when Tune ran it again
        (resume_errored): Optuna keeps a failure as it is, so its finish is a study trial of its
        own, with its settings and the Tune trial it is, which the sampler learns from."""
        values = [result.get(m) for m in (self.metric if isinstance(self.metric, list) else [self.metric])]
        if not all(isinstance(v, (int, float)) and math.isfinite(v) for v in values):
            return
        study = searcher_study(self)
        frozen = next(t for t in study.get_trials(deepcopy=False) if t.number == failed.number)
        tune_id = frozen.user_attrs.get(study_files.TUNE_TRIAL_ID)
        if any(t.number != failed.number and t.user_attrs.get(study_files.TUNE_TRIAL_ID) == tune_id
               for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))):
            return  # recorded before a kill that came before Tune saved the retry's end
        attrs = self._end_attrs(frozen, result)  # its folder pulled
        intermediate = {}
        if len(values) == 1:  # from its folder: the study took no more of the retry's once the trial had
            # failed, and kept the failed attempt's past the checkpoint the retry started from
            name = Path(frozen.user_attrs[study_files.TRIAL_DIR]).name
            intermediate = RunFolder.at(self._run_location).scores(name, result.get("objective"))
            if "score_epoch" in result:
                intermediate[int(result["score_epoch"])] = values[0]
        study.add_trial(optuna.trial.create_trial(
            params=frozen.params, distributions=frozen.distributions, values=values,
            intermediate_values=intermediate, user_attrs={**frozen.user_attrs, **attrs}))

    def _end_attrs(self, trial: optuna.Trial | optuna.trial.FrozenTrial, result: dict, error: bool = False) -> dict:
        """Why the trial stopped and the epoch of its last score, from its folder (pulled to this
        node: written on its trial's node) and its last result."""
        run = RunFolder.at(self._run_location)
        folder = run.trial(Path(trial.user_attrs[study_files.TRIAL_DIR]).name)  # where this node has it
        run.pull(folder, keep=lambda path: path.suffix != ".pt")
        failure = run.read_failure(folder.name)
        attrs = {study_files.STOP_REASON: stop_reason("ERROR" if error else "TERMINATED", result, failure)}
        if "score_epoch" in result:
            attrs[study_files.SCORE_EPOCH] = int(result["score_epoch"])
        return attrs

    def _state(self, number: int) -> TrialState:
        return next(t.state for t in searcher_study(self).get_trials(deepcopy=False) if t.number == number)

    def _label_end(self, trial: optuna.Trial, result: dict, error: bool) -> None:
        """Why it stopped and when it was scored, and its last sample grid (a finished trial takes
        no more attributes, so before it is told)."""
        for key, value in self._end_attrs(trial, result, error).items():
            trial.set_user_attr(key, value)
        run = RunFolder.at(self._run_location)
        grid = latest_samples_grid(run.trial(Path(trial.user_attrs[study_files.TRIAL_DIR]).name))
        if grid is not None:
            optuna.artifacts.upload_artifact(artifact_store=study_files.artifact_store(run), file_path=str(grid),
                                             study_or_trial=trial)


def take_up_tunes_trials(controller) -> None:
    """Once Tune has restored a search (private_api.after_tune_resumes), its search algorithm is made
    to hold exactly the trials the restored Tune holds. Tune saves its experiment state, the
    searcher's and its wrappers' in three files, and a kill can leave them from different saves
    (search.state_upload). A trial the searcher handed out that Tune never saved held a place, so
    Tune waited for it forever, or was counted, so the search ended a trial short and said
    "interrupted" on every later command; now it is forgotten, and the next trial takes up its
    study trial (its settings once more). A count from an earlier save than Tune's would run
    trials too many; a trial Tune saved before the searcher did gets its study trial back."""
    searcher, wrappers = tune_searcher(controller)
    if not isinstance(searcher, ScoreOptunaSearch):
        return  # a grid of presets: Tune's own variant generator, no searcher state of its own
    trials = controller.get_trials()
    searcher.own_exactly([trial.trial_id for trial in trials])
    set_trials_made(wrappers, trials)


def settle(run: RunFolder, table: pd.DataFrame, keys: list[str]) -> None:
    """Once the search has ended: every study trial still running is told how its Tune trial ended
    (its row of trials.parquet: the objectives' columns `keys`), or fails when no trial ran it; a
    run at a URI's study is pushed at once."""
    study = study_files.study_of(run)
    rows = table.set_index("trial_id")
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        tune_id = trial.user_attrs.get(study_files.TUNE_TRIAL_ID)
        row = rows.loc[tune_id] if tune_id in rows.index else None
        values = [float(row[k]) for k in keys] if row is not None else [math.nan]
        if row is not None and row["status"] == "TERMINATED" and all(map(math.isfinite, values)):
            study.tell(trial.number, values if len(values) > 1 else values[0])
        else:
            study.tell(trial.number, state=TrialState.FAIL)
    run.push(run.study_journal)
