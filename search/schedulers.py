"""ASHA whose rung records survive a restart, and the searcher told only of scored results.

Ray rebuilds ASHA's rungs empty when a Tuner is restored (ray-project/ray#30838), so a resumed
search would compare new results against nothing and stop nobody. `PersistentASHA` writes its
rungs to a JSON file in the run folder whenever they change and reads them back on unpickling.
"""

from __future__ import annotations

import json
from pathlib import Path

from ray.tune.schedulers import ASHAScheduler
from ray.tune.search.optuna import OptunaSearch

from cvae_core.atomic import atomic_write_text


class PersistentASHA(ASHAScheduler):
    def __init__(self, state_path: str | Path, **kwargs):
        super().__init__(**kwargs)
        self._state_path = str(Path(state_path).resolve())
        self._saved_count = -1
        self._load()

    def __setstate__(self, state):
        # Tuner.restore unpickles the scheduler as it was first built: refill it from the file.
        self.__dict__.update(state)
        self._load()

    def _rung_records(self) -> list[list[dict[str, float]]]:
        return [[recorded for _, recorded in bracket._rungs] for bracket in self._brackets]

    def _load(self) -> None:
        path = Path(self._state_path)
        if not path.exists():
            return
        saved = json.loads(path.read_text())
        for bracket, rungs in zip(self._brackets, saved["rungs"]):
            for (_, recorded), loaded in zip(bracket._rungs, rungs):
                recorded.clear()
                recorded.update(loaded)
        self._num_stopped = saved["num_stopped"]
        self._saved_count = self._count()

    def _count(self) -> int:
        return sum(len(r) for rungs in self._rung_records() for r in rungs)

    def _save_if_changed(self) -> None:
        count = self._count()
        if count != self._saved_count:
            state = {"rungs": self._rung_records(), "num_stopped": self._num_stopped,
                     "milestones": [[m for m, _ in b._rungs] for b in self._brackets]}
            atomic_write_text(Path(self._state_path), json.dumps(state))
            self._saved_count = count

    def on_trial_result(self, tune_controller, trial, result):
        action = super().on_trial_result(tune_controller, trial, result)
        self._save_if_changed()
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self._save_if_changed()


class ScoreOptunaSearch(OptunaSearch):
    """OptunaSearch told only of results that carry the metric: a trial is scored from its first
    ASHA milestone on, and OptunaSearch reads the metric of every result it is given."""

    def on_trial_result(self, trial_id: str, result: dict):
        if self.metric in result:
            super().on_trial_result(trial_id, result)
