"""The project's exceptions cross process boundaries (Ray pickles a trial's or a task's error).
A plain one-argument exception comes back whole by Python's own rules; a divergence, which
carries its epoch and losses, only through its own __reduce__."""

import copy
import math
import pickle

from cvae_core.training import TrainingDiverged


def test_a_divergence_keeps_its_numbers_and_message_through_pickling_and_copying():
    error = TrainingDiverged(3, math.nan, 12.5)
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(again) is TrainingDiverged
        assert again.epoch == 3 and math.isnan(again.train_loss) and again.val_loss == 12.5
        assert str(again) == str(error) and "loss diverged at epoch 3" in str(again)
