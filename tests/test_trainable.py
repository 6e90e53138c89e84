import json

import pytest

from search.trainable import TrialFailed, check_earlier_failure


def test_a_retry_is_refused_after_a_divergence_and_clears_any_other_failure(tmp_path):
    failure = tmp_path / "failure.json"
    failure.write_text(json.dumps({"kind": "out_of_memory", "reason": "CUDA out of memory"}))
    check_earlier_failure(failure)
    assert not failure.exists()  # the retry starts clean: it may finish, or fail otherwise
    check_earlier_failure(failure)  # nothing recorded: nothing to do

    failure.write_text(json.dumps({"kind": "diverged", "reason": "loss diverged at epoch 3"}))
    with pytest.raises(TrialFailed, match="loss diverged at epoch 3"):
        check_earlier_failure(failure)
    assert failure.exists()
