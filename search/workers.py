"""What a Ray worker does before it trains or scores, for trials and finalists alike: take its
share of the device, and find the reference statistics cached by one task before them.

Kept apart from search.trainable so that a finalist's worker does not import Ray Tune and Optuna.
"""

from __future__ import annotations

import ray
import torch

from cvae_core.training import resolve_device
from results.features import Reference
from results.metrics import prime_reference, reference_cached

from .cluster import one_node


def claim_device(gpu_share: float, cpus: float) -> torch.device:
    """The device of a Ray worker given `gpu_share` of a GPU and `cpus` CPUs, held to its share."""
    torch.set_num_threads(max(1, int(cpus)))
    device = resolve_device()
    if device.type == "cuda" and 0 < gpu_share < 1:
        # Several trials share a GPU: cap this one so it cannot starve the others.
        torch.cuda.set_per_process_memory_fraction(gpu_share, device)
    return device


def _prime(reference: Reference, extractor: str, inception_weights: str | None, gpu_share: float, cpus: float,
           per_class: bool) -> None:
    prime_reference(reference, extractor, inception_weights, claim_device(gpu_share, cpus), per_class=per_class)


def prime_on_worker(reference: Reference, extractor: str, inception_weights: str | None, cpus: float,
                    gpu_share: float, per_class: bool = False) -> None:
    """Cache the reference side of a score (results.metrics.prime_reference) in a Ray task with a
    trial's resources (a GPU when trials get one), before the trials or finalists that read it
    start. Skipped when this machine is the whole cluster and has it cached already (a resume)."""
    if one_node() and reference_cached(reference, extractor, inception_weights, per_class=per_class):
        return
    task = ray.remote(num_cpus=cpus, num_gpus=gpu_share)(_prime)
    ray.get(task.remote(reference, extractor, inception_weights, gpu_share, cpus, per_class))
