"""search.workers: what a Ray worker does before it trains or scores."""

from __future__ import annotations

import pickle

import pytest

from cvae_core.data import ImageData, load_data
from results.extractors import TINY
from results.features import MetricOptions
from results.metrics import reference_cached
from results.reference import Reference
from search import workers


@pytest.mark.slow
def test_a_reference_is_primed_in_a_task_handed_the_object_stores_data_not_a_copy(tree, tmp_path, monkeypatch,
                                                                                  ray_session):
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    data = load_data(tree)
    opts = MetricOptions(data, TINY, cache_dir=str(tmp_path / "fidelity"))
    handed, remote = [], workers.Printed.remote
    monkeypatch.setattr(workers.Printed, "remote", lambda self, fn, *args, **o: handed.append(args) or
                        remote(self, fn, *args, **o))
    monkeypatch.setattr(workers, "one_node", lambda: False)  # as on a cluster: always in a task
    workers.prime_on_worker(Reference(), opts, cpus=1, gpu_share=0)
    assert reference_cached(Reference(), opts)
    [args] = handed
    assert not any(isinstance(a, ImageData) for a in args) and any(isinstance(a, ray.ObjectRef) for a in args)
    assert len(pickle.dumps([a for a in args if not isinstance(a, ray.ObjectRef)])) < 10_000  # no images inside


@pytest.mark.slow
def test_a_tasks_failure_is_one_line_naming_what_it_raised(ray_session):
    """A RayTaskError's own text is the worker's whole traceback: the final stage prints one line
    per failed finalist, our own errors as written, others named by their type."""
    import ray

    if not ray.is_initialized():
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)

    @ray.remote
    def fails(error):
        raise error

    lines = []
    for error in (ValueError("reference: the class probe needs a training image of every class"),
                  RuntimeError("CUDA out of memory.\nTried to allocate 2 GiB"), KeyError("fid")):
        with pytest.raises(Exception) as raised:
            ray.get(fails.remote(error))
        lines.append(workers.task_error(raised.value))
    assert lines == ["reference: the class probe needs a training image of every class",
                     "RuntimeError: CUDA out of memory.", "KeyError: 'fid'"]
