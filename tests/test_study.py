"""results.study: the search's Optuna study in its run folder."""

import optuna

from results import study as study_files
from results.run_folder import RunFolder


def test_a_renamed_run_folder_still_opens_its_study(tmp_path):
    old = RunFolder(tmp_path / "cnn")
    old.path.mkdir()
    optuna.create_study(storage=study_files.journal_storage(old), study_name=old.name).add_trial(
        optuna.trial.create_trial(value=1.0))
    renamed = tmp_path / "cnn-2026-12"
    old.path.rename(renamed)
    assert [t.value for t in study_files.load_study(renamed).trials] == [1.0]
