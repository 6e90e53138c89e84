"""A search's Optuna study, kept in its run folder: RUN/optuna.journal (Optuna's journal file
storage, the study named as the run) and RUN/optuna_artifacts/ (each trial's last sample grid).

The search writes it as it goes (search.searcher); optuna-dashboard, `optuna.load_study` and
results.show read it. A presets space runs a grid without Optuna and writes none.
"""

from __future__ import annotations

from pathlib import Path

from .run_folder import RunFolder, open_run

# What each study trial carries besides its parameters and values (user attributes):
TUNE_TRIAL_ID = "tune_trial_id"  # Tune's id: trials.parquet's trial_id
TRIAL_DIR = "trial_dir"  # its folder in the run folder
PARAMS = "params"  # trainable parameters
STOP_REASON = "stop_reason"  # as trials.parquet's: patience, max_epochs, asha (Tune calls it complete), ...
ASHA_STOP = "asha"  # the stop reason of a trial ASHA stopped
SCORE_EPOCH = "score_epoch"  # the epoch its score was computed at
# What the searcher was fitted on to sample it: a milestone (its scores there) or FITTED_ON_LAST; absent: at
# random (its start-up). Named when only TPE recorded it, and kept so that older runs read the same.
FITTED_ON = "tpe_fitted_on"
FITTED_ON_LAST = "last"  # the last score of every trial that had ended


def latest_attempts(trials: list) -> list:
    """The study's trials with each Tune trial once: its latest study trial. A trial that failed
    (out of memory, a lost node) and finished when Tune ran it again is two study trials, the
    failure and the finish (search.searcher: Optuna keeps a failure as it is), both carrying its
    scores so far; counted twice, it would weigh twice. Trials without a Tune id all count."""
    latest = {}
    for t in trials:
        latest[t.user_attrs.get(TUNE_TRIAL_ID, ("no tune id", t.number))] = t
    return sorted(latest.values(), key=lambda t: t.number)


class NoStudy(ValueError):
    """The run folder holds no Optuna study; the message says why, in one line."""


def journal_storage(run: RunFolder):
    """The run's journal storage (Optuna creates the file, empty, if it is missing)."""
    from optuna.storages import JournalStorage

    return JournalStorage(_journal_file(run.location, bool(run.remote and run.remote.reader)))


def _journal_file(location: str, reader: bool = False):
    """Optuna's journal file backend for the run at `location` (`reader`: in the readers' mirror),
    which, unpickled (a searcher Tune restores, on this machine or another), opens the journal where
    this node has the run: a pickled JournalFileBackend holds the path of the machine that pickled it."""
    from optuna.storages.journal import JournalFileBackend

    class RunJournal(JournalFileBackend):
        def __reduce__(self):
            return _journal_file, (location, reader)

    return RunJournal(str(RunFolder.at(location, reader).study_journal))


def artifact_store(run: RunFolder):
    from optuna.artifacts import FileSystemArtifactStore

    run.study_artifacts.mkdir(parents=True, exist_ok=True)
    return FileSystemArtifactStore(str(run.study_artifacts))


def load_study(run_dir: str | Path):
    """The run's study (the run's folder or URI), as `optuna.load_study` opens it; NoStudy when the
    run has none."""
    return study_of(open_run(run_dir))


def study_of(run: RunFolder):
    """load_study for a run already opened (its own files on this node): NoStudy names it as the
    user does (its URI, for a run in a bucket)."""
    import optuna

    where = f"{run.location}/{run.study_journal.name}: no Optuna study in {run.location}"
    if not run.study_journal.exists():
        why = "a presets space runs a grid without Optuna" if run.is_run() else "not a search run folder"
        raise NoStudy(f"{where} ({why})")
    # The journal holds this run's study alone, named as the run was when it started: a run folder
    # renamed since still opens it.
    storage = journal_storage(run)
    names = [study.study_name for study in storage.get_all_studies()]
    if not names:  # a kill between the journal's creation and the study's first line
        raise NoStudy(f"{where} yet (the journal holds none)")
    return optuna.load_study(study_name=names[0] if len(names) == 1 else None, storage=storage)
