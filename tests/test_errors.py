"""The project's exceptions cross process boundaries (Ray pickles a trial's or a task's error):
each must come back whole, with its message."""

import copy
import math
import pickle

import pytest

from cvae_core.config import ConfigError
from cvae_core.data import DataError
from cvae_core.training import TrainingDiverged
from search.cluster import ClusterError
from search.space import SpaceError
from search.trainable import TrialFailed

ERRORS = [
    TrainingDiverged(3, math.nan, math.inf),
    ConfigError("latent=0 must be >= 1"),
    DataError("x.zip: not a valid zip file"),
    SpaceError("s.yaml: space.lr: -1 must be > 0"),
    TrialFailed("loss diverged at epoch 3"),
    ClusterError("--address h:1: cannot reach h:1"),
]


@pytest.mark.parametrize("error", ERRORS, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling_and_copying_with_their_message(error):
    for again in (pickle.loads(pickle.dumps(error)), copy.copy(error)):
        assert type(again) is type(error) and str(again) == str(error)


def test_a_divergence_keeps_its_numbers():
    again = pickle.loads(pickle.dumps(TrainingDiverged(3, math.nan, 12.5)))
    assert again.epoch == 3 and again.val_loss == 12.5 and "loss diverged at epoch 3" in str(again)
