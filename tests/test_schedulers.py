import pickle
from types import SimpleNamespace

import pytest
from ray.tune.schedulers import TrialScheduler

from search.schedulers import PatienceStopper, PersistentASHA


def _asha(path):
    return PersistentASHA(path, time_attr="epoch", metric="best_val_loss", mode="min",
                          max_t=8, grace_period=1, reduction_factor=2)


def _feed(sched, trial_id, epoch, loss):
    trial = SimpleNamespace(trial_id=trial_id)
    if trial_id not in sched._trial_info:
        sched.on_trial_add(None, trial)
    return sched.on_trial_result(None, trial, {"epoch": epoch, "best_val_loss": loss})


def test_rungs_survive_a_restore_and_give_the_same_decisions(tmp_path):
    state = tmp_path / "asha_state.json"
    sched = _asha(state)
    pickled = pickle.dumps(sched)  # as the Tuner pickles it at the start, rungs empty
    for i, loss in enumerate([10.0, 9.0, 8.0, 7.0]):
        _feed(sched, f"t{i}", 1, loss)
    assert state.exists()

    fresh_ray_restore = _asha(tmp_path / "elsewhere.json")  # what Ray alone gives: empty rungs
    assert _feed(fresh_ray_restore, "late", 1, 11.0) == TrialScheduler.CONTINUE

    restored = pickle.loads(pickled)
    assert restored._brackets[0]._rungs[-1][1] == sched._brackets[0]._rungs[-1][1]
    # A bad newcomer is compared with the rungs recorded before the restart...
    assert _feed(restored, "late", 1, 11.0) == TrialScheduler.STOP
    # ...exactly as the uninterrupted scheduler decides.
    assert _feed(sched, "late", 1, 11.0) == TrialScheduler.STOP


def test_patience_stopper():
    stop = PatienceStopper(3)
    assert not stop("t", {"epochs_since_best": 2})
    assert stop("t", {"epochs_since_best": 3})
    assert not stop.stop_all()
    with pytest.raises(ValueError, match="patience=0"):
        PatienceStopper(0)
