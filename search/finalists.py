"""The final stage: retrain the best trials to convergence, sample, score, build the leaderboard.

Each (trial, seed) is one Ray task with the search's resources, so finalists train in parallel
on the cluster's GPUs. Everything a task finishes is on disk in its finalist folder
(results.run_folder.Finalist): the training folder (training resumes from its checkpoint), the
summary once trained, and a row file per sampler once scored; a rerun skips whatever is there.
The leaderboard is rebuilt from the row files.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import ray
import torch

from cvae_core.atomic import atomic_write_text, remove_temp_files
from cvae_core.config import TrialConfig
from cvae_core.data import ImageData, split
from cvae_core.grids import grid_labels
from cvae_core.layout import BEST_FILE, CHECKPOINT_FILE, read_metrics
from cvae_core.models import CVAE, count_params
from cvae_core.training import epoch_line, load_model, train
from results import two_stage
from results.features import MetricOptions
from results.leaderboard import SHOWN, make_row, missing_columns, write_leaderboard
from results.metrics import score
from results.run_folder import FINAL_DIR, ROWS_DIR, Finalist, RunFolder, read_table
from results.samplers import encoder_means, generate, save_sample_grid
from results.storage import Uploads

from .objective import METRIC, searched_keys
from .seeds import retraining_seed
from .settings import Final, Resources, RunFolderError, Spec
from .workers import Printed, claim_device, prime_on_worker, task_error

log = logging.getLogger("search")

PROGRESS_EVERY_S = 30.0  # seconds between a finalist's epoch lines


def finalists(trials: pd.DataFrame, top_k: int, keys: Sequence[str] = (METRIC,)) -> pd.DataFrame:
    """The top-k finished trials: by their search score (lower is better for every objective); with
    several objectives (`keys`, the score first), from their Pareto front (trials.parquet's
    `pareto`), spread along it: sorted by the score, k evenly spaced trials with both ends (then the
    best others by score, when the front holds fewer than k)."""
    ok = trials[(trials["status"] == "TERMINATED") & trials[list(keys)].notna().all(axis=1)].sort_values(METRIC)
    if len(keys) == 1:
        return ok.head(top_k)
    front = ok[ok["pareto"]]
    if len(front) <= top_k:
        return pd.concat([front, ok.drop(front.index).head(top_k - len(front))])
    return front.iloc[np.round(np.linspace(0, len(front) - 1, top_k)).astype(int)]


def _progress(name: str, every_s: float = PROGRESS_EVERY_S):
    """train()'s callback: the first epoch, then one line at most every `every_s` seconds."""
    start, last = time.monotonic(), -math.inf

    def show(metrics, _make_checkpoint):
        nonlocal last
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            log.info(f"{name}: {epoch_line(metrics)}  {now - start:.0f} s")

    return show


def _needs_scoring(row_file, rescore: bool) -> bool:
    if not row_file.exists():
        return True
    return rescore and bool(missing_columns(json.loads(row_file.read_text())))


def _uploading(run: RunFolder, finalist: Finalist, every: int, uploads: Uploads | None, show):
    """train()'s callback: `show`, and in a run folder at a URI, each checkpoint's upload in the background."""

    def callback(metrics, make_checkpoint):
        show(metrics, make_checkpoint)
        if uploads is not None and every and metrics["epoch"] % every == 0:
            uploads.later(lambda: run.push(finalist.path))

    return callback


def _train_finalist(run: RunFolder, config: TrialConfig, finalist: Finalist, data: ImageData, train_on: str,
                    final: Final, seed: int, device: torch.device) -> tuple[CVAE, dict]:
    """The finalist's model with its kept weights and its training summary: trained (resuming from
    its checkpoint), or loaded when it was trained before."""
    out, name = finalist.path, finalist.path.name
    # Trained before; unless the summary came without its weights (a bucket an earlier version pushed
    # to, killed mid-push): then the checkpoint says training is done, and train() returns at once.
    if finalist.summary.exists() and (out / BEST_FILE).exists():
        return load_model(out / BEST_FILE, device), json.loads(finalist.summary.read_text())
    ckpt = out / CHECKPOINT_FILE
    resume = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
    log.info(f"{name}: {'resuming at epoch ' + str(resume['epoch']) if resume else 'training'} on {device}")
    run.forget_grids_after(out, resume["epoch"] if resume else 0)
    uploads = Uploads() if run.remote else None
    result = train(
        config.model, *split(data, train_on),
        recipe=config.recipe, epochs=final.max_epochs, patience=final.patience, seed=seed, device=device,
        out_dir=out, grid_every=final.grid_every, checkpoint_every=final.checkpoint_every, resume=resume,
        callback=_uploading(run, finalist, final.checkpoint_every, uploads, _progress(name)),
    )
    if uploads is not None:
        uploads.finish(lambda: run.push(finalist.path))  # the weights before the summary that says they are done
    summary = {
        "epochs_trained": result.epochs_run, "best_epoch": result.best_epoch,
        "best_val_loss": result.best_val_loss, "stop_reason": result.stop_reason,
        # every epoch's time, also those run before a kill and resume
        "train_seconds": sum(r["epoch_seconds"] for r in read_metrics(out)),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    }
    atomic_write_text(finalist.summary, json.dumps(summary))
    run.push(finalist.summary)
    log.info(f"{name}: trained {result.epochs_run} epochs ({result.stop_reason}), best val "
             f"{result.best_val_loss:.2f} at epoch {result.best_epoch}, {summary['train_seconds']:.0f} s")
    return result.model, summary


def _second_stage(model: CVAE, finalist: Finalist, train_x, train_y, final: Final, seed: int,
                  device: torch.device) -> two_stage.SecondStage:
    """The two_stage sampler's second VAE: fitted once on the encoder means of the training images,
    and saved beside the weights (results.sample draws from the same fit)."""
    if finalist.two_stage.exists():
        return two_stage.load(finalist.two_stage, device)
    t0 = time.perf_counter()
    settings = final.two_stage
    codes = encoder_means(model, train_x, train_y)
    second, loss = two_stage.fit(codes, train_y, model.cfg.num_classes, width=settings.width, layers=settings.layers,
                                 epochs=settings.epochs, seed=seed, device=device)
    two_stage.save(second, finalist.two_stage)
    log.info(f"{finalist.path.name}: two_stage sampler: second VAE ({settings.layers} x {settings.width}) fitted on "
             f"{len(codes)} encoder means, {settings.epochs} epochs, loss {loss:.2f} "
             f"({time.perf_counter() - t0:.0f} s)")
    return second


def finalist_job(trial: dict, seed: int, data: ImageData, train_on: str, final: Final, run_location: str,
                 gpu_share: float = Resources().gpu, cpus: float = Resources().cpu,
                 rescore: bool = False) -> list[dict]:
    """Train one finalist (a row of trials.parquet) as its retraining number `seed` (its training
    seed from the row's, search.seeds), resuming, then score each sampler not yet scored (with
    `rescore`, also the rows written before a leaderboard column existed). Its images are drawn
    with `seed`, the leaderboard row's. `run_location`: the run's folder or URI (RunFolder.at)."""
    run = RunFolder.at(run_location)
    config = TrialConfig.from_dict(json.loads(trial["config"]))
    finalist = run.finalist(Path(trial["trial_dir"]).name, seed)
    run.pull(finalist.path)  # what an earlier attempt finished, on whichever node
    if finalist.path.is_dir():
        remove_temp_files(finalist.path)
    todo = [s for s in final.samplers if _needs_scoring(finalist.row(s), rescore)]
    if todo:
        device = claim_device(gpu_share, cpus)
        training_seed = retraining_seed(trial.get("seed"), seed)
        model, summary = _train_finalist(run, config, finalist, data, train_on, final, training_seed, device)
        _score_finalist(run, trial, config, finalist, model, summary, todo, data, train_on, final, seed, device)
    return [json.loads(finalist.row(s).read_text()) for s in final.samplers]


def _score_finalist(run: RunFolder, trial: dict, config: TrialConfig, finalist: Finalist, model: CVAE,
                    summary: dict, samplers: list[str], data: ImageData, train_on: str, final: Final, seed: int,
                    device: torch.device) -> None:
    """Draw the trained finalist's images with each of `samplers`, score them, and write each row file."""
    name = finalist.path.name
    train_x, train_y = split(data, train_on)[:2]
    second = _second_stage(model, finalist, train_x, train_y, final, seed, device) if "two_stage" in samplers else None
    opts = MetricOptions(data, final.feature_extractor, final.inception_weights, str(device))
    preset = trial.get("preset")
    for sampler in samplers:
        t0 = time.perf_counter()
        log.info(f"{name}: {sampler} sampler: scoring {len(data.classes) * final.samples_per_class} images with "
                 f"{final.feature_extractor}")
        images = generate(model, sampler, final.samples_per_class, train_x, train_y,
                          components=final.gmm_components, seed=seed, second_stage=second)
        save_sample_grid(images, final.samples_per_class, finalist.sample_grid(sampler), data.classes)
        s = score(images, grid_labels(final.samples_per_class, model.cfg.num_classes), final.reference, opts)
        is_text = f"IS {s.is_mean:.2f}" if s.is_mean is not None else "IS n/a"
        log.info(f"{name}: {sampler} sampler: FID {s.fid:.2f}, intra-FID {s.intra_fid:.2f}, class accuracy "
                 f"{s.class_accuracy:.2f} (real {s.probe_accuracy_real:.2f}), precision {s.precision:.2f}, recall "
                 f"{s.recall:.2f}, {is_text} ({time.perf_counter() - t0:.0f} s)")
        row = make_row(
            run=run.name, trial_id=trial["trial_id"], seed=seed, sampler=sampler,
            search_objective=trial["objective"], search_score=trial["score"],
            preset=preset if isinstance(preset, str) else None,  # pandas reads a missing string as NaN
            trial=config, params=count_params(model), training=summary, score=s, classes=data.classes,
            checkpoint=run.address(finalist.path / BEST_FILE), sample_grid=run.address(finalist.sample_grid(sampler)),
            data_source=data.source,
            train_on=train_on, gmm_components=final.gmm_components,
        )
        run.push(finalist.path)  # the grid and the two_stage fit before the row that names them
        atomic_write_text(finalist.row(sampler), json.dumps(row))
        run.push(finalist.row(sampler))


def run_final(run: RunFolder, spec: Spec, data: ImageData, rescore: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Needs Ray initialised. Returns the leaderboard (also written to the run folder) and one line
    per finalist that failed."""
    res = spec.search.resources
    trials = read_table(run.trials_table)
    chosen = finalists(trials, spec.final.top_k, searched_keys(spec.search.objective.metric))
    if chosen.empty:
        raise RunFolderError(f"{run.trials_table}: no finished trial to retrain")
    # Resolved here, once: tasks on nodes that differ would otherwise pick different networks.
    extractor = run.extractor("final", spec.final.feature_extractor, spec.final.inception_weights)
    final = spec.final.model_copy(update={"feature_extractor": extractor})
    data_ref = ray.put(data)
    log.info(f"final stage: retraining {len(chosen)} trial(s) x {final.seeds} seed(s), scoring with {extractor}")
    # The reference side (features, statistics, class probe) once, before the finalists race to need it.
    prime_on_worker(final.reference, MetricOptions(data, extractor, final.inception_weights), res.cpu, res.gpu,
                    conditional=True, data_ref=data_ref)
    with Printed() as printed:
        futures = {
            printed.remote(finalist_job, row, seed, data_ref, spec.search.train_on, final, run.location, res.gpu,
                           res.cpu, rescore, num_cpus=res.cpu, num_gpus=res.gpu): (row["trial_id"], seed)
            for row in chosen.to_dict("records") for seed in range(final.seeds)
        }
        failures = _wait_for_finalists(printed, futures)
    run.pull(run.path / FINAL_DIR, keep=lambda path: path.parent.name == ROWS_DIR)  # written on their nodes
    board = write_leaderboard(run.path)
    run.push(run.path, recursive=False)
    return board, failures


def _wait_for_finalists(printed: Printed, futures: dict) -> list[str]:
    """Each finalist's end as it comes (their lines printed meanwhile); one line per failed one."""
    failures, pending = [], list(futures)
    while pending:
        ready, pending = printed.wait(pending)
        for future in ready:
            trial_id, seed = futures[future]
            try:
                ray.get(future)
                log.info(f"final stage: {trial_id} seed {seed} scored ({len(futures) - len(pending)}/{len(futures)})")
            except Exception as e:  # one failed finalist must not lose the others' rows
                failures.append(f"{trial_id} seed {seed}: {task_error(e)}")
    return failures


def run_and_report(run: RunFolder, spec: Spec, data: ImageData, rescore: bool = False) -> int:
    """run_final, then print the leaderboard and any failures; the exit status for the CLIs."""
    try:
        board, failures = run_final(run, spec, data, rescore)
    except (ValueError, ray.exceptions.RayError) as e:  # nothing to retrain, extractor, reference failed
        print(f"error: final stage: {task_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: what the finalists finished is on disk
        print(f"interrupted: run the same command, or python -m search.final {run.location}, to go on", flush=True)
        return 130
    print(board[SHOWN].to_string(index=False))
    print(f"leaderboard: {run.location}/{run.leaderboard.name}")
    for f in failures:
        print(f"final stage: failed {f}", file=sys.stderr)
    if failures:
        print(f"rerun python -m search.final {run.location} to retry the failed finalists", file=sys.stderr)
    return 1 if failures else 0
