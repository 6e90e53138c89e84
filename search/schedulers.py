"""The search's scheduler, as Tune sees it (its searcher: search.searcher).

- `PersistentASHA`: ASHA whose rung records survive a restart. Ray rebuilds ASHA's rungs empty
  when a Tuner is restored (ray-project/ray#30838), so a resumed search would compare new results
  against nothing and stop nobody. Each new rung record, and each stop, is appended to a file in
  the run folder and read back on unpickling; a stopped trial that a restart brings back (the
  kill came before Tune saved the stop) ends at once without training (`search.trainable`).
- `AgreementASHA` (beneath it): ASHA that stops cutting at a milestone once the trials that ended
  show that it ranks them badly (`asha.min_agreement`), and that lets every Nth trial run to the
  end whatever its milestones say (`asha.run_to_end_every`), so that those trials are not only
  the ones the milestones chose.
- It also decides when Tune saves its experiment state (`SavesOnEvents`).
"""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
from ray.tune.schedulers import ASHAScheduler, TrialScheduler

from cvae_core.atomic import append_records, read_records
from results.run_folder import RunFolder

from .private_api import (
    asha_cutoff,
    asha_keys,
    asha_rungs,
    asha_sign,
    asha_stopped,
    keep_no_running_averages,
    last_state_upload_seconds,
    save_experiment_state,
    set_asha_stopped,
    state_upload_running,
)
from .seeds import TRIAL_NUMBER
from .settings import MIN_FINISHED

SAVE_BUDGET = 0.02  # the share of the driver's time that saves may take, the search's last included
STATE_PERIOD_S = 300  # Tune's own periodic save, for whatever no event covers


class SavesOnEvents:
    """Save Tune's experiment state when a trial is added, finishes, fails or is removed.

    Tune rewrites its whole state on every save. Saving once a second therefore costs time that
    grows with the number of trials times the search's length, quadratically in all; saving on
    the events a resume must not lose costs once per event. The save runs at the start of Tune's
    next step, after Tune has recorded the new status. It waits while saves would take more than
    SAVE_BUDGET of the driver's time since the search started: the saves done, this one and the
    one Tune makes when the search ends, each of the last two counted as long as the last save,
    and the wait for an upload as long as the last (Tune's last save waits for its upload; a
    2,000-trial search's state takes a fraction of a second to save, and a run folder in object
    storage adds its uploads). Only a burst of events, trials ending seconds apart, meets the
    budget; a kill in it resumes as before those events were saved (docs/search.md). It also waits
    while Tune still uploads its last save (a run folder in object storage): a forced save would
    block the driver until that upload ends. Tune's own timer (STATE_PERIOD_S) saves the rest.

    Why not Tune's default period alone (TUNE_GLOBAL_CHECKPOINT_S=auto: a save once max(10 s, 19 x
    the last save) has passed)? It is cheaper, but a trial added after its last save is unknown
    to the restored Tuner: killed 2 epochs into such a trial, a resumed search started it again
    from scratch in a new folder and left the old one, with its checkpoint, outside trials.parquet
    (with this class the same kill resumed the trial from its checkpoint, in its folder). Measured
    by bench/driver_scale.py on 2 shared CPU cores, 800 dummy trials, 8 at once: events 17 saves,
    1.1 s of saves (1.5% of the 73 s run), 52 MB copied, driver CPU 18.1 s; auto 6 saves, 0.7 s,
    42 MB, 13.8 s; a save every second 233 saves, 12.2 s, 2,892 MB, 65.7 s.

    It also has Tune keep no running averages of a trial's reported numbers
    (private_api.keep_no_running_averages), which were most of what a save of a trial costs.
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._reset_save_clock()

    def _reset_save_clock(self) -> None:
        self._save_wanted, self._save_clock, self._save_spent, self._last_save = False, None, 0.0, 0.0

    def _want_save(self) -> None:
        self._save_wanted = True

    def _maybe_save(self, tune_controller) -> None:
        now = time.monotonic()
        if self._save_clock is None:
            self._save_clock = now
        ahead = 2 * self._last_save + last_state_upload_seconds()  # this save, and the search's last with its upload
        if not self._save_wanted or self._save_spent + ahead > SAVE_BUDGET * (now - self._save_clock):
            return
        if state_upload_running(tune_controller):
            return  # the save would wait for the upload (object storage: long); a later step saves
        save_experiment_state(tune_controller)
        self._save_wanted = False
        self._last_save = time.monotonic() - now
        self._save_spent += self._last_save

    def choose_trial_to_run(self, tune_controller):
        self._maybe_save(tune_controller)  # Tune asks this at the start of every step
        return super().choose_trial_to_run(tune_controller)

    def on_trial_add(self, tune_controller, trial):
        super().on_trial_add(tune_controller, trial)
        keep_no_running_averages(trial)  # most of what a save of the trial's state costs
        self._want_save()

    def on_trial_error(self, tune_controller, trial):
        super().on_trial_error(tune_controller, trial)
        self._want_save()

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self._want_save()

    def on_trial_remove(self, tune_controller, trial):
        super().on_trial_remove(tune_controller, trial)
        self._want_save()


class AgreementASHA(ASHAScheduler):
    """ASHA that stops cutting at a milestone where the milestone is shown to rank trials unlike
    their final scores: among the trials scored there that then ended by themselves (their epoch
    record's `stop`: max_t or patience), the rank correlation (Spearman) of the two is below
    `min_agreement`, over at least `min_finished` trials. There every trial goes on past it, as
    without early stopping; until then, and wherever it ranks well, it cuts as ASHA does. None:
    plain ASHA. Below the last milestone (the highest below max_t), while that one is not shown to
    rank badly, a trial without a final score counts with its score there (one it cut, or one
    still running), so the earlier milestones are judged as soon as trials reach it.

    Every `run_to_end_every`-th trial by its study number, until `min_finished` of them (trials 7,
    15, 23, 31 and 39 for 8 and 5), is never cut: the trials that end by themselves are otherwise
    the ones the milestones chose, and among those even a milestone that ranks the best models
    backwards can rank well. They are the evidence; more would cost their full runs where the
    milestones rank well (LCBench). None: none.

    Why: where slowly converging models end best, early scores rank them worst and ASHA cuts the
    very trials a search is for (bench/search_efficiency.py's synthetic function; some LCBench
    tasks). Trusting every milestone until shown otherwise costs nothing where early scores rank
    well (LCBench); waiting for finished trials before any milestone cut cost a quarter of random
    search's budget there (docs/benchmarks.md, stop 59).
    """

    def __init__(self, min_agreement: float | None = None, min_finished: int = MIN_FINISHED,
                 run_to_end_every: int | None = None, **kwargs):
        super().__init__(**kwargs)
        self._min_agreement, self._min_finished = min_agreement, min_finished
        self._run_to_end_every = run_to_end_every
        self._finals: dict[str, float] = {}  # trial id: its final score, times asha_sign like the rungs
        self._let_on: dict | None = None  # the last cut this rule overruled, and why

    def agreement(self, milestone: int) -> tuple[float | None, int]:
        """The milestone's Spearman correlation with the scores it is judged against (None: not
        defined yet) and over how many trials: the final scores; below the last milestone, while
        that one is not shown to rank badly, a trial without one counts with its score there."""
        ends = self._finals
        if milestone < self._last_milestone and not self._ranks_badly(self._last_milestone):
            ends = {**self._recorded(self._last_milestone), **self._finals}
        pairs = pd.DataFrame([(v, ends[t]) for t, v in self._recorded(milestone).items() if t in ends])
        if len(pairs) < 2:
            return None, len(pairs)
        rho = pairs[0].corr(pairs[1], method="spearman")
        return (None if pd.isna(rho) else float(rho)), len(pairs)

    def _ranks_badly(self, milestone: int) -> bool:
        if self._min_agreement is None:  # plain ASHA: no correlation to compute at each cut
            return False
        rho, n = self.agreement(milestone)
        return n >= self._min_finished and (rho is None or rho < self._min_agreement)

    def runs_to_end(self, trial) -> bool:
        """Whether `trial` is one of the first `min_finished` of every `run_to_end_every`-th, by its
        study number (a space of presets has none)."""
        every, number = self._run_to_end_every, trial.config.get(TRIAL_NUMBER)
        return every is not None and number is not None and number % every == every - 1 and \
            number < every * self._min_finished

    def _recorded(self, milestone: int) -> dict[str, float]:
        return {t: v for rungs in asha_rungs(self) for m, recorded in rungs if m == milestone
                for t, v in recorded.items()}

    @property
    def _last_milestone(self) -> int:
        max_t = asha_keys(self)[2]  # Ray's ASHA has a rung at max_t itself where the schedule reaches it
        return max(m for rungs in asha_rungs(self) for m, _ in rungs if m < max_t)

    def on_trial_result(self, tune_controller, trial, result):
        self._let_on = None
        stopped_before = asha_stopped(self)
        action = super().on_trial_result(tune_controller, trial, result)
        epoch_key, score_key, max_t = asha_keys(self)
        epoch, score = result.get(epoch_key), result.get(score_key)
        if score is None:
            return action
        if result.get("stop") is not None:
            self._finals[trial.trial_id] = asha_sign(self) * score
            # It ended by itself (patience, max_t): not ASHA's stop, though Ray counts it so when a
            # milestone's cutoff or max_t comes at the same epoch.
            set_asha_stopped(self, stopped_before)
        elif action == TrialScheduler.STOP and epoch < max_t:
            milestone = max(m for rungs in asha_rungs(self) for m, recorded in rungs
                            if m <= epoch and trial.trial_id in recorded)  # where ASHA just cut it
            to_end = self.runs_to_end(trial)
            if to_end or self._ranks_badly(milestone):
                set_asha_stopped(self, asha_stopped(self) - 1)
                rho, n = self.agreement(milestone)
                self._let_on = {"let_on": trial.trial_id, "milestone": milestone, "runs_to_end": to_end,
                                "agreement": None if rho is None else round(rho, 4), "finished": n}
                return TrialScheduler.CONTINUE
        return action


def stopped_by_asha(state_path: str | Path) -> set[str]:
    """The trials ASHA has stopped, as recorded in its state file."""
    return {r["trial"] for r in read_records(state_path) if "trial" in r and "stopped" in r}


class PersistentASHA(SavesOnEvents, AgreementASHA):
    """ASHA whose rungs, and the final scores AgreementASHA compares them with, are kept in the
    run's RUN/asha_state.jsonl (`run_location`: the run's folder or URI, found again wherever a
    resumed search unpickles it)."""

    def __init__(self, run_location: str, **kwargs):
        super().__init__(**kwargs)
        self._location = str(run_location)
        self._written: set[tuple[int, int, str]] = set()  # (bracket, rung, trial) already in the file
        self._written_finals: set[str] = set()
        self._load()

    def __setstate__(self, state):
        # Tuner.restore unpickles the scheduler as it was first built: refill it from the file. One
        # pickled before a rule of AgreementASHA's existed lacks its attribute: it resumes without it.
        self.__dict__.update({"_min_agreement": None, "_min_finished": MIN_FINISHED, "_run_to_end_every": None,
                              "_let_on": None, **state,
                              "_finals": {}, "_written_finals": set()})
        self._reset_save_clock()
        self._load()

    @property
    def _state_path(self) -> Path:
        return RunFolder.at(self._location).asha_state

    def _load(self) -> None:
        for record in read_records(self._state_path):
            if "stopped" in record:
                set_asha_stopped(self, record["stopped"])
                continue
            if "final" in record:
                self._finals[record["trial"]] = asha_sign(self) * record["final"]
                self._written_finals.add(record["trial"])
                continue
            if "let_on" in record:
                continue  # a decision, for results.show
            if "forget" in record:
                self._forget({record["forget"]})
                continue
            b, r, trial_id = record["bracket"], record["rung"], record["trial"]
            asha_rungs(self)[b][r][1][trial_id] = record["value"]
            self._written.add((b, r, trial_id))

    def keep_only(self, trial_ids: list[str]) -> None:
        """Forget the records of every trial but `trial_ids`, the trials a restored Tune holds: a kill
        can leave Tune's state from a save before a trial these records hold, and the trial that takes
        up its study trial (search.searcher.take_up_tunes_trials) runs its configuration again, under
        another id, which would count twice at its milestones. (A grid of presets makes such a trial
        again under its own id, whose records it replaces: not for it.)"""
        recorded = {t for rungs in asha_rungs(self) for _, values in rungs for t in values} | set(self._finals)
        if gone := sorted(recorded - set(trial_ids)):
            self._forget(set(gone))
            append_records(self._state_path, [{"forget": trial_id} for trial_id in gone])

    def _forget(self, trial_ids: set[str]) -> None:
        for rungs in asha_rungs(self):
            for _, values in rungs:
                for trial_id in trial_ids & set(values):
                    del values[trial_id]
        for trial_id in trial_ids:
            self._finals.pop(trial_id, None)
        self._written = {key for key in self._written if key[2] not in trial_ids}
        self._written_finals -= trial_ids

    def _append_new_records(self, trial_id: str, stopped: bool) -> None:
        """New rung records; for a stop, on what: the milestone, the trial's score and the cutoff it
        was compared with (the best 1/reduction_factor of the scores recorded there before it)."""
        lines, stop, sign = [], {}, asha_sign(self)
        for b, rungs in enumerate(asha_rungs(self)):
            for r, (milestone, recorded) in enumerate(rungs):
                if trial_id in recorded and (b, r, trial_id) not in self._written:
                    lines.append({"bracket": b, "rung": r, "milestone": milestone, "trial": trial_id,
                                  "value": recorded[trial_id]})
                    self._written.add((b, r, trial_id))
                    peers = {k: v for k, v in recorded.items() if k != trial_id}
                    if stopped and peers:  # the first trial at a milestone is never stopped there
                        stop = {"milestone": milestone, "score": sign * recorded[trial_id],
                                "cutoff": sign * float(asha_cutoff(self, b, peers)), "compared": len(peers)}
        if stopped:
            lines.append({"stopped": asha_stopped(self), "trial": trial_id, **stop})
        if trial_id in self._finals and trial_id not in self._written_finals:
            lines.append({"trial": trial_id, "final": sign * self._finals[trial_id]})
            self._written_finals.add(trial_id)
        if self._let_on is not None:
            lines.append(self._let_on)
            self._let_on = None  # once: a trial Tune ends without a result (on_trial_complete) comes next
        if lines:
            append_records(self._state_path, lines)

    def on_trial_result(self, tune_controller, trial, result):
        before = asha_stopped(self)
        action = super().on_trial_result(tune_controller, trial, result)
        self._append_new_records(trial.trial_id, asha_stopped(self) != before)
        return action

    def on_trial_complete(self, tune_controller, trial, result):
        super().on_trial_complete(tune_controller, trial, result)
        self._append_new_records(trial.trial_id, stopped=False)
