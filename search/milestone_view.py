"""The searcher fitted on what a milestone can compare (as BOHB does): one budget's scores, not last scores.

Under ASHA a trial's last score comes from whichever milestone it was stopped at. Told to a
sampler (TPE or a Gaussian process) as if final, an epoch-5 score and an epoch-100 score are
ranked together: slowly converging models look bad, and a stopped trial can look better than one
that ran on. `MilestoneSampler` instead shows the sampler, before each new trial, a view of the
study in which every trial is valued by its score at one milestone: the highest milestone
(ASHA's, or the last epoch) at which at least `n_startup_trials` trials have a score. Trials
scored there count, whether they are still running or have ended; a trial whose own training
stopped earlier (patience) counts with its last score; the other running trials stay running
(TPE's "constant liar", the GP's pending points); trials that never reached the milestone are
left out (they say nothing about that budget). Before any milestone has that many scores, the
sampler samples at random, as in its start-up. Measured on LCBench's real curves:
bench/search_efficiency.py.

The scores are the study's intermediate values (search.searcher reports each at the epoch it was
computed). Optuna keeps intermediate values for one objective only, so a multi-objective search
(`metric: [fid, params]`) fits the sampler on its finished trials as before.
"""

from __future__ import annotations

import copy
from typing import Any

from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, GPSampler
from optuna.search_space import intersection_search_space
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from cvae_core.config import STOP_REASONS
from results.study import FITTED_ON, FITTED_ON_LAST, STOP_REASON, latest_attempts

from .private_api import StudyView, set_trial_user_attr


def score_at(trial: FrozenTrial, milestone: int) -> float | None:
    """The trial's score at `milestone`: its intermediate value there, or for a trial whose own
    training stopped before it (patience), its last score; None where it has none."""
    if milestone in trial.intermediate_values:
        return trial.intermediate_values[milestone]
    own_stop = trial.state == TrialState.COMPLETE and trial.user_attrs.get(STOP_REASON) in STOP_REASONS
    if own_stop and trial.intermediate_values and max(trial.intermediate_values) < milestone:
        return trial.value
    return None


def milestone_view(trials: list[FrozenTrial], milestones: tuple[int, ...], n_min: int) -> tuple[int | None, list]:
    """The highest milestone with at least `n_min` scores, and the trials as the sampler should see them:
    each trial scored there COMPLETE with that score, the other running ones RUNNING, the rest
    left out, and a retried trial's failed attempt too (latest_attempts). (None, the running ones)
    when no milestone has enough."""
    trials = latest_attempts(trials)
    for milestone in sorted(milestones, reverse=True):
        scored = {t.number: s for t in trials if (s := score_at(t, milestone)) is not None}
        if len(scored) >= n_min:
            break
    else:
        milestone, scored = None, {}
    view = []
    for t in trials:
        if t.number in scored:
            seen = copy.copy(t)
            seen.state, seen.values = TrialState.COMPLETE, [scored[t.number]]
            view.append(seen)
        elif t.state == TrialState.RUNNING:
            view.append(t)
    return milestone, view


def _modelled_by_gp(view: StudyView) -> dict[str, BaseDistribution]:
    """The settings GPSampler models: those every trial in the view has, each with more than one
    value. GPSampler keeps that intersection itself, updated by trial number from where it last
    looked; a view whose trials change from one ask to the next defeats that (a trial scored since,
    numbered below, and without a family's keys would go unseen, and the GP then fails on the key
    it lacks), so it is computed afresh from the view, with Optuna's own function."""
    return {name: d for name, d in intersection_search_space(view.get_trials(deepcopy=False)).items()
            if not d.single()}


class MilestoneSampler(BaseSampler):
    """`sampler` (Optuna's TPESampler or GPSampler) shown each study through `milestone_view` at
    `milestones` (epochs: ASHA's and the last), from `n_min` scores at a milestone on (module doc).
    Without milestones (`fit_on: last`), and for a multi-objective study, it shows the study as it
    is. Either way each trial records what the sampler was fitted on to sample it, which
    results.show counts: the milestone, or FITTED_ON_LAST once `n_min` trials have ended (the
    sampler's own start-up rule; this search never tells Optuna a trial was pruned)."""

    def __init__(self, sampler: BaseSampler, milestones: tuple[int, ...], n_min: int):
        if n_min < 1:
            raise ValueError(f"n_min: {n_min} must be >= 1")
        self.sampler, self.milestones, self.n_min = sampler, tuple(sorted(milestones)), n_min
        self._view: tuple[int, Study | StudyView] | None = None  # (trial number, what it sees)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_view": None}  # saved with the searcher: the study is not part of it

    def _seen(self, study: Study, trial: FrozenTrial) -> Study | StudyView:
        """The view this trial is sampled against, built once per trial."""
        if self._view is None or self._view[0] != trial.number:
            others = [t for t in study.get_trials(deepcopy=False) if t.number != trial.number]
            if self.milestones and len(study.directions) == 1:
                fitted_on, view = milestone_view(others, self.milestones, self.n_min)
                seen = StudyView(study, view)
            else:
                ended = sum(t.state == TrialState.COMPLETE for t in others)
                fitted_on, seen = (FITTED_ON_LAST if ended >= self.n_min else None), study
            if fitted_on is not None:
                set_trial_user_attr(study, trial, FITTED_ON, fitted_on)
            self._view = (trial.number, seen)
        return self._view[1]

    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        seen = self._seen(study, trial)
        if isinstance(self.sampler, GPSampler) and seen is not study:
            return _modelled_by_gp(seen)
        return self.sampler.infer_relative_search_space(seen, trial)

    def sample_relative(self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]) -> dict:
        return self.sampler.sample_relative(self._seen(study, trial), trial, search_space)

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self.sampler.sample_independent(self._seen(study, trial), trial, param_name, param_distribution)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        self.sampler.before_trial(study, trial)

    def after_trial(self, study: Study, trial: FrozenTrial, state: TrialState, values) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()
