"""The Ray Tune trainable: one trial = `cvae_core.training.train` on one sampled config.

A trial reports everything its record holds (search.trials reads it back): every epoch's
metrics, whether training stops after it and why (the training loop decides), its parameter
count and its latest score. A failure that ends it is also written to its failure file.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import ray
import torch
from ray import tune
from tensorboardX import SummaryWriter

from cvae_core.atomic import (
    append_records,
    atomic_torch_save,
    atomic_write_text,
    keep_records,
    read_records,
    remove_temp_files,
)
from cvae_core.config import TrialConfig
from cvae_core.data import ImageData, split
from cvae_core.layout import CHECKPOINT_FILE, read_metrics
from cvae_core.models import config_params
from cvae_core.training import TrainingDiverged, train
from results.features import MetricOptions
from results.run_folder import RunFolder, trial_name
from results.storage import Uploads

from .objective import METRIC, TrialScorer
from .schedulers import stopped_by_asha
from .seeds import trial_seed
from .settings import Objective, Search
from .space import trial_config
from .workers import claim_device

EVENT_FILES = "events.out.tfevents.*"  # the names tensorboardX gives a writer's files
_SEARCH = Search()  # a space file's defaults, which run_trial's own are (its objective aside: no scoring)
# Tune hands a worker its next trial (reuse_actors) only once the last one's function has returned,
# and by default waits 2 s for that, then fails the next trial. A trial stopped by ASHA still
# uploads its folder on the way out, which a slow bucket (retries) can stretch past 2 s.
TRIAL_CLOSE_TIMEOUT_S = 600


class TrialFailed(RuntimeError):
    """A trial failed for a reason that would recur on a retry (e.g. divergence)."""


def tune_trial_dirname(trial) -> str:
    """trial_name, in the form Tune's `trial_dirname_creator` asks for."""
    return trial_name(trial.config, trial.trial_id)


def record_failure(failure_file: Path, kind: str, error: BaseException) -> None:
    """The trial's failure record; a divergence names its epoch (never reported to Tune)."""
    epoch = {"epoch": error.epoch} if isinstance(error, TrainingDiverged) else {}
    atomic_write_text(failure_file, json.dumps({"kind": kind, "reason": str(error), **epoch}))


def check_earlier_failure(run: RunFolder, name: str) -> None:
    """Before a retry: a divergence would only happen again (TrialFailed); any other recorded
    failure is cleared, since this attempt may finish or fail otherwise."""
    recorded = run.read_failure(name)
    if recorded is not None:
        if recorded["kind"] == "diverged":
            raise TrialFailed(recorded["reason"])
        run.remove(run.failure_file(name))


def _scores(scores_file: Path, up_to_epoch: int) -> dict | None:
    """The latest score a trial recorded at or before `up_to_epoch` (a killed trial may have
    scored an epoch its checkpoint does not hold; it is scored again when reached)."""
    return next((r for r in reversed(read_records(scores_file)) if r["score_epoch"] <= up_to_epoch), None)


def _forget_after(run: RunFolder, name: str, epoch: int) -> None:
    """The scores and grids of epochs after `epoch`, where this attempt starts: a killed attempt
    scores before its checkpoint, and this one may stop sooner (patience), so they would read as
    its own (train() forgets the epoch records, and the grids locally)."""
    keep_records(run.scores_file(name), lambda r: r["score_epoch"] <= epoch)
    run.forget_grids_after(run.trial(name), epoch)


def remove_empty_event_files(run: RunFolder, trial_dir: Path) -> None:
    """An attempt killed before its TensorBoard writer first flushed (every 30 s) left an empty
    event file, which shows nothing. A non-empty one holds an earlier attempt's curves: it stays."""
    for path in trial_dir.glob(EVENT_FILES):
        if path.stat().st_size == 0:
            run.remove(path)


def _stopped_by_asha(run: RunFolder, trial_id: str) -> bool:
    """Whether ASHA's state file says it stopped the trial, here or, for a run at a URI, in the
    bucket, where a driver on another node pushed it. The bucket's copy is read beside this node's,
    never over it: a driver on this node appends to that file."""
    if trial_id in stopped_by_asha(run.asha_state):
        return True
    with tempfile.TemporaryDirectory() as tmp:
        copy = Path(tmp) / run.asha_state.name
        return run.fetch(run.asha_state, copy) and trial_id in stopped_by_asha(copy)


def _prepare_folder(run: RunFolder, name: str) -> Path:
    """The trial's folder, as an earlier attempt left it (pulled from wherever that ran), ready
    for this attempt; raises TrialFailed when that attempt diverged."""
    trial_dir = run.trial(name)
    run.pull(trial_dir)
    trial_dir.mkdir(parents=True, exist_ok=True)
    remove_temp_files(trial_dir)
    check_earlier_failure(run, name)
    remove_empty_event_files(run, trial_dir)
    return trial_dir


def _val_loss_score(record: dict) -> dict:
    """A val_loss objective's score at an epoch: the best validation loss so far."""
    return {METRIC: record["best_val_loss"], "score_epoch": record["epoch"]}


def _report_last(run: RunFolder, name: str, carried: dict, objective: Objective) -> None:
    """Report the trial's last recorded epoch again, with its score then."""
    last = read_metrics(run.trial(name))[-1]
    if not objective.scores_samples:
        score = _val_loss_score(last)
    else:
        score = _scores(run.scores_file(name), last["epoch"])
    tune.report({**last, **(score or {}), **carried})


def _scorer(trial: TrialConfig, data: ImageData, objective: Objective, inception_weights: str | None,
            device: torch.device) -> TrialScorer | None:
    """What scores the trial's kept weights for a fid/kid objective; None when it ranks by val_loss."""
    if not objective.scores_samples:
        return None
    opts = MetricOptions(data, objective.feature_extractor, inception_weights, str(device))
    return TrialScorer(trial.model, objective.ranked_by, objective.samples_per_class, objective.reference, opts)


class _Reporter:
    """train()'s callback for one trial: scores the kept weights when due, writes TensorBoard events
    and the checkpoint, and reports the epoch to Tune with its latest score and `carried`.

    In a run folder at a URI it also uploads the trial's folder: in the background after a
    checkpoint, and before the report at a milestone and at the last epoch, where Tune may stop
    the trial (ASHA) and never come back."""

    def __init__(self, run: RunFolder, name: str, scorer: TrialScorer | None, score_at: frozenset[int],
                 checkpoint_every: int, carried: dict, last_score: dict | None):
        self.run, self.folder = run, run.trial(name)
        self.checkpoint, self.failure_file = self.folder / CHECKPOINT_FILE, run.failure_file(name)
        self.scores_file = run.scores_file(name)
        self.scorer, self.score_at, self.checkpoint_every = scorer, score_at, checkpoint_every
        self.carried, self.last_score = carried, last_score
        self.reported = False
        self.events = SummaryWriter(str(self.folder), flush_secs=30)
        self.uploads = Uploads() if run.remote else None

    def __call__(self, metrics: dict, make_checkpoint) -> None:
        self._score(metrics, make_checkpoint)
        for key in ("train_loss", "val_loss", "best_val_loss", "lr", METRIC):
            value = {**metrics, **(self.last_score or {})}.get(key)
            if value is not None:
                self.events.add_scalar(key, value, metrics["epoch"])
        decisive = metrics["epoch"] in self.score_at or metrics["stop"] is not None
        if metrics["epoch"] % self.checkpoint_every == 0 or metrics["stop"] is not None:
            # Before reporting: Tune may stop the trial on this report (ASHA) and never return.
            atomic_torch_save(make_checkpoint(), self.checkpoint)
            if self.uploads and not decisive:
                self.uploads.later(lambda: self.run.push(self.folder))
        if decisive:
            self.upload()
        tune.report({**metrics, **(self.last_score or {}), **self.carried})
        self.reported = True

    def report_milestone_again(self, epoch: int) -> None:
        """A trial restarted from a checkpoint at a milestone reports that epoch once more: the
        checkpoint is saved before the report, so a kill between them lost the milestone's score
        for ASHA and the study. A report they did take changes nothing (ASHA skips a milestone it
        recorded, the study keeps an epoch's first value)."""
        if epoch not in self.score_at:
            return
        record = next((r for r in read_metrics(self.folder) if r["epoch"] == epoch), None)
        if record is not None and record["stop"] is None:
            score = _val_loss_score(record) if self.scorer is None else self.last_score  # val_loss: not in scores.jsonl
            tune.report({**record, **(score or {}), **self.carried})

    def upload(self) -> None:
        """Everything the trial wrote so far into the bucket, now (nothing for a local run), what a
        failed background push missed (its failure record) included."""
        if self.uploads:
            self.events.flush()
            self.uploads.finish(lambda: self.run.push(self.folder))

    def close(self) -> None:
        self.events.close()
        self.upload()

    def _score(self, metrics: dict, make_checkpoint) -> None:
        if self.scorer is None:
            self.last_score = _val_loss_score(metrics)
        elif metrics["epoch"] in self.score_at or metrics["stop"] is not None:
            try:
                self.last_score = self.scorer(make_checkpoint()["best_state"], metrics["epoch"])
            except Exception as e:  # the extractor cannot load, the samples are not finite, ...
                record_failure(self.failure_file, "scoring_failed", e)
                raise
            append_records(self.scores_file, [self.last_score])


def run_trial(
    config: dict,
    data: ImageData,
    run_location: str,
    train_on: str = _SEARCH.train_on,
    max_t: int = _SEARCH.asha.max_t,
    patience: int = _SEARCH.patience,
    checkpoint_every: int = _SEARCH.checkpoint_every,
    grid_every: int = _SEARCH.grid_every,
    gpu_share: float = _SEARCH.resources.gpu,
    cpus: float = _SEARCH.resources.cpu,
    objective: Objective = Objective(metric="val_loss"),
    inception_weights: str | None = None,
    score_at: frozenset[int] = frozenset(),
    search_seed: int = _SEARCH.seed,
) -> None:
    """Train until max_t epochs or `patience` epochs without improvement, reporting every epoch.

    `data` comes from the object store; the training function moves it to this trial's device
    once. With a fid/kid `objective` (its extractor already resolved) the kept weights are scored
    at the epochs in `score_at` and at the last epoch; every later result carries that score.
    It trains with the seed search.seeds derives from `search_seed` and its place in the search.
    Everything the trial keeps is in its folder of the run folder (`run_location`: a folder every
    node sees, or a URI, results.storage): its epoch records, checkpoint, scores, grids, failure
    record and TensorBoard events. A restarted trial continues from its own checkpoint, so Tune
    keeps no checkpoints and the driver's saved state holds no paths that a kill could leave
    dangling.
    """
    os.environ.setdefault("TUNE_FUNCTION_THREAD_TIMEOUT_S", str(TRIAL_CLOSE_TIMEOUT_S))  # read in this worker
    trial_id = tune.get_context().get_trial_id()
    run, name = RunFolder.at(run_location), trial_name(config, trial_id)
    trial_dir, failure_file = _prepare_folder(run, name), run.failure_file(name)

    device = claim_device(gpu_share, cpus)
    trial = trial_config(config)
    seed = trial_seed(search_seed, config, trial_id)
    carried = {"objective": objective.ranked_by, "params": config_params(trial.model), "seed": seed,
               "node_id": ray.get_runtime_context().get_node_id()}  # in every result
    if _stopped_by_asha(run, trial_id):
        _report_last(run, name, carried, objective)  # ASHA stopped it, but the kill came before Tune saved that
        return

    checkpoint = trial_dir / CHECKPOINT_FILE
    resume = torch.load(checkpoint, map_location="cpu", weights_only=True) if checkpoint.exists() else None
    _forget_after(run, name, resume["epoch"] if resume else 0)
    report = _Reporter(run, name, _scorer(trial, data, objective, inception_weights, device), score_at,
                       checkpoint_every, carried, _scores(run.scores_file(name), resume["epoch"]) if resume else None)
    try:
        if resume is not None:
            report.report_milestone_again(resume["epoch"])
        x, y, vx, vy = split(data, train_on)
        train(
            trial.model, x, y, vx, vy,
            recipe=trial.recipe, epochs=max_t, patience=patience, seed=seed,
            device=device, out_dir=trial_dir, grid_every=grid_every, checkpoint_every=0, resume=resume,
            callback=report,
        )
    except TrainingDiverged as e:
        record_failure(failure_file, "diverged", e)
        raise
    except torch.OutOfMemoryError as e:
        record_failure(failure_file, "out_of_memory", e)
        raise
    finally:
        report.close()  # uploads what the trial wrote, its failure record included
    if not report.reported:  # restarted after it had finished (a kill before Tune saved that): say so again
        _report_last(run, name, carried, objective)
