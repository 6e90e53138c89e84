"""The final stage: retrain the best trials to convergence, sample, score, write the leaderboard.

    python -m search.final RUN_DIR [--data PATH] [--address auto]

Runs at the end of `python -m search.run` too. Each (trial, seed) is one Ray task with the
search's resources, so finalists train in parallel on the cluster's GPUs. Everything a task
finishes is on disk: RUN_DIR/final/<trial>_s<seed>/ holds checkpoint.pt (training resumes from
it), best.pt, train.json once training is done, and rows/<sampler>.json once scored; a rerun
skips whatever is there. RUN_DIR/leaderboard.parquet is rebuilt from the rows.
"""

from __future__ import annotations

import json
import math
import sys
import time
from dataclasses import asdict, fields, replace
from pathlib import Path

import pandas as pd
import ray
import torch

from cvae_core.atomic import atomic_write_text
from cvae_core.cli import ArgumentParser
from cvae_core.data import DataError, ImageData, load_data, split
from cvae_core.models import count_params
from cvae_core.sampling import grid_labels
from cvae_core.training import epoch_line, load_model, read_metrics, train
from results.features import Reference
from results.leaderboard import write_leaderboard
from results.metrics import Score, score
from results.samplers import generate, save_sample_grid

from .cluster import ClusterError, check_capacity, connect, parse_address
from .record import recorded_extractor, recorded_source
from .space import FinalSettings, SpaceError, SpaceFile, load_space, model_config, with_inception_weights
from .trainable import claim_device, prime_on_worker, trial_dir_name
from .trials import TRIALS_FILE

FINAL_DIR = "final"
PROGRESS_EVERY_S = 30.0  # seconds between a finalist's epoch lines


def finalists(trials: pd.DataFrame, top_k: int) -> pd.DataFrame:
    """The top-k finished trials by their search score (lower is better for every objective)."""
    ok = trials[(trials["status"] == "TERMINATED") & trials["score"].notna()]
    return ok.sort_values("score").head(top_k)


def _config_of(trial_dir: Path) -> dict:
    return json.loads((trial_dir / "params.json").read_text())


def _rows(rows_dir: Path, samplers: tuple[str, ...]) -> list[dict]:
    return [json.loads((rows_dir / f"{s}.json").read_text()) for s in samplers]


def _needs_scoring(row_file: Path, rescore: bool) -> bool:
    if not row_file.exists():
        return True
    return rescore and any(json.loads(row_file.read_text()).get(f.name) is None
                           for f in fields(Score) if f.name not in ("is_mean", "is_std", "is_missing_reason"))


def finalist_job(
    trial: dict,
    seed: int,
    data: ImageData,
    train_on: str,
    final: FinalSettings,
    run_dir: str,
    run_name: str,
    gpu_share: float = 0.0,
    cpus: float = 1.0,
    rescore: bool = False,
) -> list[dict]:
    """Train one finalist with one seed (resuming), then score each sampler not yet scored (with
    `rescore`, also those scored before a measure of this version existed)."""
    config = _config_of(Path(trial["trial_dir"]))
    cfg = model_config(config)
    out = Path(run_dir) / FINAL_DIR / f"{trial_dir_name(config, trial['trial_id'])}_s{seed}"
    rows_dir = out / "rows"
    todo = [s for s in final.samplers if _needs_scoring(rows_dir / f"{s}.json", rescore)]
    if not todo:
        return _rows(rows_dir, final.samplers)

    device = claim_device(gpu_share, cpus)
    train_x, train_y, val_x, val_y = split(data, train_on)
    summary_file = out / "train.json"
    if summary_file.exists():
        model = load_model(out / "best.pt", device)
        summary = json.loads(summary_file.read_text())
    else:
        ckpt = out / "checkpoint.pt"
        resume = torch.load(ckpt, map_location="cpu", weights_only=True) if ckpt.exists() else None
        print(f"{out.name}: {'resuming at epoch ' + str(resume['epoch']) if resume else 'training'} on {device}",
              flush=True)
        result = train(
            cfg, train_x, train_y, val_x, val_y,
            epochs=final.max_epochs, batch_size=config["batch_size"], lr=config["lr"],
            patience=final.patience, seed=seed, device=device, out_dir=out,
            grid_every=final.checkpoint_every, checkpoint_every=final.checkpoint_every, resume=resume,
            callback=_progress(out.name),
        )
        model = result.model
        summary = {
            "epochs_trained": result.epochs_run, "best_epoch": result.best_epoch,
            "best_val_loss": result.best_val_loss, "stop_reason": result.stop_reason,
            # every epoch's time, also those run before a kill and resume
            "train_seconds": sum(r["epoch_seconds"] for r in read_metrics(out / "metrics.jsonl")),
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
        }
        atomic_write_text(summary_file, json.dumps(summary))
        print(f"{out.name}: trained {result.epochs_run} epochs ({result.stop_reason}), best val "
              f"{result.best_val_loss:.2f} at epoch {result.best_epoch}, {summary['train_seconds']:.0f} s", flush=True)

    reference = Reference(data, final.reference_split, final.reference_n)
    rows_dir.mkdir(parents=True, exist_ok=True)
    for sampler in todo:
        t0 = time.perf_counter()
        print(f"{out.name}: {sampler} sampler: scoring {10 * final.samples_per_class} images with "
              f"{final.feature_extractor}", flush=True)
        images = generate(model, sampler, final.samples_per_class, train_x, train_y,
                          components=final.gmm_components, seed=seed)
        grid = out / f"samples_{sampler}.png"
        save_sample_grid(images, final.samples_per_class, grid, data.classes)
        s = score(images, grid_labels(final.samples_per_class), reference, extractor=final.feature_extractor,
                  inception_weights=final.inception_weights, device=device)
        is_text = f"IS {s.is_mean:.2f}" if s.is_mean is not None else "IS n/a"
        print(f"{out.name}: {sampler} sampler: FID {s.fid:.2f}, intra-FID {s.intra_fid:.2f}, class accuracy "
              f"{s.class_accuracy:.2f} (real {s.probe_accuracy_real:.2f}), precision {s.precision:.2f}, recall "
              f"{s.recall:.2f}, {is_text} ({time.perf_counter() - t0:.0f} s)", flush=True)
        row = {
            "run": run_name, "trial_id": trial["trial_id"], "seed": seed, "sampler": sampler,
            "search_objective": trial["objective"], "search_score": trial["score"],
            "preset": config.get("preset"), "lr": float(config["lr"]), "batch_size": int(config["batch_size"]),
            **cfg.to_dict(), "params": count_params(model),
            **{k: summary[k] for k in ("epochs_trained", "best_epoch", "best_val_loss", "train_seconds", "device")},
            **asdict(s), "classes": list(data.classes), "checkpoint": str(out / "best.pt"), "sample_grid": str(grid),
            "created_at": time.time(),
        }
        atomic_write_text(rows_dir / f"{sampler}.json", json.dumps(row))
    return _rows(rows_dir, final.samplers)


def run_final(run_dir: Path, spec: SpaceFile, data: ImageData, rescore: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Needs Ray initialised. Returns the leaderboard (also written to RUN_DIR/leaderboard.parquet)
    and one line per finalist that failed."""
    res = spec.search.resources
    trials = pd.read_parquet(run_dir / TRIALS_FILE)
    chosen = finalists(trials, spec.final.top_k)
    if chosen.empty:
        raise SpaceError(f"{run_dir / TRIALS_FILE}: no finished trial to retrain")
    # Resolved here, once: tasks on nodes that differ would otherwise pick different networks.
    extractor = recorded_extractor(run_dir, "final", spec.final.feature_extractor, spec.final.inception_weights)
    final = replace(spec.final, feature_extractor=extractor)
    remote = ray.remote(num_cpus=res.cpu, num_gpus=res.gpu)
    data_ref = ray.put(data)
    print(f"final stage: retraining {len(chosen)} trial(s) x {final.seeds} seed(s), scoring with {extractor}",
          flush=True)
    prime_on_worker(Reference(data, final.reference_split, final.reference_n), extractor, final.inception_weights,
                    res.cpu, res.gpu)
    job = remote(finalist_job)
    futures = {
        job.remote(row, seed, data_ref, spec.search.train_on, final, str(run_dir), run_dir.name, res.gpu, res.cpu,
                   rescore):
        (row["trial_id"], seed)
        for row in chosen.to_dict("records") for seed in range(final.seeds)
    }
    failures, pending = [], list(futures)
    while pending:
        [future], pending = ray.wait(pending, num_returns=1)
        trial_id, seed = futures[future]
        try:
            ray.get(future)
            print(f"final stage: {trial_id} seed {seed} scored ({len(futures) - len(pending)}/{len(futures)})",
                  flush=True)
        except Exception as e:  # one failed finalist must not lose the others' rows
            failures.append(f"{trial_id} seed {seed}: {e}")
    return write_leaderboard(run_dir), failures


def _progress(name: str, every_s: float = PROGRESS_EVERY_S):
    """train()'s callback: the first epoch, then one line at most every `every_s` seconds."""
    start, last = time.monotonic(), -math.inf

    def show(metrics, _make_checkpoint):
        nonlocal last
        now = time.monotonic()
        if now - last >= every_s:
            last = now
            print(f"{name}: {epoch_line(metrics)}  {now - start:.0f} s", flush=True)

    return show


def run_and_report(run_dir: Path, spec: SpaceFile, data: ImageData, rescore: bool = False) -> int:
    """run_final, then print the leaderboard and any failures; the exit status for the CLIs."""
    try:
        board, failures = run_final(run_dir, spec, data, rescore)
    except (ValueError, ray.exceptions.RayTaskError) as e:  # nothing to retrain, extractor, reference failed
        print(f"error: final stage: {e}", file=sys.stderr)
        return 1
    shown = ["trial_id", "seed", "sampler", "family", "params", "fid", "intra_fid", "class_accuracy", "precision",
             "recall"]
    print(board[shown].to_string(index=False))
    print(f"leaderboard: {run_dir / 'leaderboard.parquet'}")
    for f in failures:
        print(f"final stage: failed {f}", file=sys.stderr)
    if failures:
        print(f"rerun python -m search.final {run_dir} to retry the failed finalists", file=sys.stderr)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m search.final", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path, help="a search's run folder (holding space.yaml and trials.parquet)")
    p.add_argument("--data", default=None, help="the data to use (default: what the search recorded in data.json)")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or HOST:PORT)")
    p.add_argument("--rescore", action="store_true",
                   help="score again the rows scored before a measure of this version existed (keeps the training)")
    p.add_argument("--inception-weights", default=None,
                   help="torch-fidelity's Inception weights file (pt_inception-2015-12-05), for FID and IS offline")
    args = p.parse_args(argv)
    run_dir = args.run_dir.resolve()
    try:
        parse_address(args.address)
        if not (run_dir / TRIALS_FILE).exists():
            raise SpaceError(f"{run_dir}: no {TRIALS_FILE}; run python -m search.run first")
        spec = with_inception_weights(load_space(run_dir / "space.yaml"), args.inception_weights)
        data = load_data(recorded_source(run_dir, args.data))
        res = spec.search.resources
        connect(args.address)
        check_capacity(res.cpu, res.gpu, f"{spec.path}: search.resources")
    except (SpaceError, DataError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return run_and_report(run_dir, spec, data, args.rescore)


if __name__ == "__main__":
    # Ray pickles the tasks by reference to this module, not by value from __main__ (by value,
    # cloudpickle drags in whatever sys.modules holds under torch.*, e.g. torch.classes).
    from search.final import main as importable_main

    sys.exit(importable_main())
