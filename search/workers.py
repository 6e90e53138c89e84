"""What a Ray worker does before it trains or scores, for trials and finalists alike: take its
share of the device, and find the reference statistics cached by one task before them; and how
the lines Ray tasks print, and their errors, reach the user (`Printed`, `task_error`).

Kept apart from search.trainable so that a finalist's worker does not import Ray Tune and Optuna.
"""

from __future__ import annotations

import contextlib
import logging
from dataclasses import replace
from typing import Any, Callable

import ray
import torch

from cvae_core.cli import first_line, show_logs
from cvae_core.data import ImageData
from cvae_core.training import resolve_device
from results.features import MetricOptions
from results.metrics import prime_reference, reference_cached
from results.reference import Reference

from .cluster import one_node

log = logging.getLogger("search")


def claim_device(gpu_share: float, cpus: float) -> torch.device:
    """The device of a Ray worker given `gpu_share` of a GPU and `cpus` CPUs, held to its share."""
    torch.set_num_threads(max(1, int(cpus)))
    device = resolve_device()
    if device.type == "cuda" and 0 < gpu_share < 1:
        # Several trials share a GPU: cap this one so it cannot starve the others.
        torch.cuda.set_per_process_memory_fraction(gpu_share, device)
    return device


def task_error(error: BaseException) -> str:
    """A Ray task's failure in one line: the error the task raised (a RayTaskError's str is the
    worker's whole traceback, coloured), named by its type unless it is one of this project's
    one-line ValueErrors; Ray's own (a worker killed, out of memory), its first line."""
    cause = error.cause if isinstance(error, ray.exceptions.RayTaskError) and error.cause is not None else error
    if not str(cause).strip():
        return type(cause).__name__
    return first_line(cause) if isinstance(cause, ValueError) else f"{type(cause).__name__}: {first_line(cause)}"


class _QueueLines:
    """A text stream that puts each whole line on a Ray queue; put blocks until the queue has it."""

    def __init__(self, queue):
        self._queue, self._partial = queue, ""

    def write(self, text: str) -> int:
        *lines, self._partial = (self._partial + text).split("\n")
        for line in lines:
            self._queue.put(line)
        return len(text)

    def flush(self) -> None:
        pass

    def close(self) -> None:
        """Put a last line that has no newline."""
        if self._partial:
            self._queue.put(self._partial)
            self._partial = ""


@ray.remote
def _printing_to(queue, fn: Callable, *args) -> Any:
    """fn(*args) in a Ray task, its printed lines put on `queue`."""
    lines = _QueueLines(queue)
    show_logs()  # this worker's log records, as printed lines, onto the queue
    try:
        with contextlib.redirect_stdout(lines):
            return fn(*args)
    finally:
        lines.close()


class Printed:
    """What Ray tasks print, shown by the driver in order and once. Ray's own log streaming
    delivers a task's lines late (a finalist's last lines after the leaderboard), deduplicates
    lines that look alike, and with two nodes on one host prints each twice. Tasks started with
    `remote` put their lines on a queue (a Ray actor holding no CPU); each put blocks, so all of a
    task's lines are queued before its result is ready, and `wait` prints them. Use it as a
    context manager: leaving prints what is left and ends the queue's actor."""

    def __init__(self):
        from ray.util.queue import Queue

        self._queue = Queue(actor_options={"num_cpus": 0})

    def __enter__(self) -> Printed:
        return self

    def __exit__(self, exc_type, *_) -> None:
        # Leaving on an error (Ctrl-C included): that error is what the user must see.
        with contextlib.suppress(Exception) if exc_type else contextlib.nullcontext():
            self.show()
            self._queue.shutdown()

    def remote(self, fn: Callable, *args, **options) -> ray.ObjectRef:
        """fn(*args) as a Ray task with `options` (num_cpus, num_gpus), its printed lines queued."""
        return _printing_to.options(**options).remote(self._queue, fn, *args)

    def show(self) -> None:
        for line in self._queue.get_nowait_batch(self._queue.qsize()):
            log.info(line)

    def wait(self, pending: list) -> tuple[list, list]:
        """ray.wait for one of `pending` (a second at most), printing what the tasks printed meanwhile."""
        ready, pending = ray.wait(pending, num_returns=1, timeout=1.0)
        self.show()
        return ready, pending

    def get(self, future: ray.ObjectRef) -> Any:
        """ray.get, printing the task's lines as they come."""
        pending = [future]
        while pending:
            _, pending = self.wait(pending)
        return ray.get(future)


def _prime(reference: Reference, opts: MetricOptions, data: ImageData, gpu_share: float, cpus: float,
           conditional: bool) -> None:
    device = str(claim_device(gpu_share, cpus))
    prime_reference(reference, replace(opts, data=data, device=device, progress=True), conditional)


def prime_on_worker(reference: Reference, opts: MetricOptions, cpus: float, gpu_share: float,
                    conditional: bool = False, data_ref: ray.ObjectRef | None = None) -> None:
    """Cache the reference side of a score (results.metrics.prime_reference) in a Ray task with a
    trial's resources (a GPU when trials get one; opts.device is the worker's), before the trials
    or finalists that read it start, printing what it computes. The task is handed opts.data as
    the object store's copy (`data_ref` when the caller has put it there already), not in its
    arguments. Skipped when this machine is the whole cluster and has it cached already (a resume)."""
    if one_node() and reference_cached(reference, opts, conditional):
        return
    data_ref = data_ref if data_ref is not None else ray.put(opts.data)
    with Printed() as printed:
        printed.get(printed.remote(_prime, reference, replace(opts, data=None), data_ref, gpu_share, cpus, conditional,
                                   num_cpus=cpus, num_gpus=gpu_share))
