"""What saving Tune's experiment state costs the driver over a whole search, as the trial count grows:
the project's policy (`events`: save on trial events within a time budget, trials keep their own
checkpoints, no driver-side trial logs) against Tune's default period alone (`auto`: a save when
max(10 s, 19 x the last save's duration) has passed, i.e. saves take <= 5% of the driver; same
trials and logs) and the previous policy (`every_second`: a save every second, Tune checkpoints
kept 2 deep, Tune's per-trial logs), measured in the same run; and the project's policy with the
run folder in object storage (`events_s3`: a local S3 server, bench/local_s3.py, started by this
script; Tune uploads its state, the driver its own files on each save, results.storage).

Each (policy, trial count) runs in a fresh process: the project's real Tuner (search.tuning:
new_tuner's TPE and persistent ASHA, configure_tune's settings) over a dummy trainable that
sleeps instead of training but reports as a trial does (an epoch record, a score at ASHA's
milestones, the stop at its last epoch) and checkpoints as the policy's trials do. Measured in
the driver: its CPU seconds, the state saves (count, seconds), the bytes they wrote and the bytes
copied from the driver's staging folder to the run folder.

    python bench/driver_scale.py                      # 50, 200 and 800 trials, a few minutes on 2 cores
    python bench/driver_scale.py --trials 50 200 --concurrent 20
    python bench/driver_scale.py --policies events events_s3        # the local disk against S3
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from local_s3 import start_s3  # noqa: E402 (beside this script)

POLICIES = ("events", "auto", "every_second", "events_s3")


def _folder_bytes(path: str) -> int:
    return sum(f.stat().st_size for f in Path(path).rglob("*") if f.is_file())


def _instrument() -> dict:
    """Count and time Tune's state saves and measure what they write and copy."""
    from search.private_api import on_state_saves

    stats = {"saves": 0, "save_seconds": 0.0, "bytes_written": 0, "bytes_copied": 0}

    def saved(seconds: float, staging: str) -> None:
        stats["saves"] += 1
        stats["save_seconds"] += seconds
        stats["bytes_written"] += sum(f.stat().st_size for f in Path(staging).glob("*") if f.is_file())
        stats["bytes_copied"] += _folder_bytes(staging)

    on_state_saves(saved)
    return stats


def dummy_trial(config, run_location: str, epochs: int, epoch_s: float, score_at: frozenset, checkpoint_every: int,
                tune_checkpoints: bool):
    """Reports like search.trainable.run_trial, sleeping instead of training (and uploading its
    folder after each checkpoint for a run folder at a URI)."""
    import random

    from ray import tune

    from cvae_core.config import MAX_EPOCHS_STOP
    from cvae_core.layout import CHECKPOINT_FILE, METRICS_FILE
    from results.run_folder import RunFolder, trial_name

    trial_id = tune.get_context().get_trial_id()
    run = RunFolder.at(run_location)
    folder = run.trial(trial_name(config, trial_id))
    folder.mkdir(parents=True, exist_ok=True)
    rng = random.Random(trial_id)
    quality, score = config["lr"] * 1e3 + rng.random(), None
    for epoch in range(1, epochs + 1):
        time.sleep(epoch_s)
        stop = MAX_EPOCHS_STOP if epoch == epochs else None
        if epoch in score_at or stop:
            score = {"score": quality * 100 / epoch, "fid": quality * 100 / epoch, "kid": 0.1, "score_epoch": epoch}
        metrics = {"epoch": epoch, "best_val_loss": 2000.0 / epoch, "best_epoch": epoch, "stop": stop,
                   "objective": "fid", "params": 1000, **(score or {})}
        with open(folder / METRICS_FILE, "a") as f:
            f.write(json.dumps(metrics) + "\n")
        if epoch % checkpoint_every and not stop:
            tune.report(metrics)
        elif tune_checkpoints:  # the previous policy: a Tune checkpoint, kept 2 deep
            with tempfile.TemporaryDirectory() as d:
                Path(d, "state.pt").write_bytes(b"x" * 4096)
                tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
        else:  # the trial's own checkpoint
            (folder / "checkpoint.tmp").write_bytes(b"x" * 4096)
            os.replace(folder / "checkpoint.tmp", folder / CHECKPOINT_FILE)
            run.push(folder)
            tune.report(metrics)


def one_run(policy: str, trials: int, concurrent: int, epochs: int, epoch_s: float, bucket: str | None,
            storage: Path) -> dict:
    """In this process: one search with `policy`, its run folder and scratch in `storage` (events_s3:
    the run in `bucket`); its measurements as a dict."""
    if policy not in ("events", "events_s3"):
        os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = {"auto": "auto", "every_second": "1"}[policy]
    import ray
    from ray import tune

    from results.run_folder import RunFolder
    from search import schedulers, tuning
    from search.objective import milestones
    from search.private_api import tuner_run_config
    from search.settings import parse_spec

    tuning.configure_tune()
    if policy not in ("events", "events_s3"):
        schedulers.SavesOnEvents._maybe_save = lambda self, controller: None  # Tune's timer alone
    if policy == "every_second":
        os.environ["TUNE_DISABLE_AUTO_CALLBACK_LOGGERS"] = "0"
    stats = _instrument()
    spec = parse_spec({
        "name": "scale",
        "space": {"family": "mlp", "latent": 4, "mlp": {"layers": 1, "width": 8},
                  "lr": {"loguniform": [1.0e-4, 1.0e-2]}, "batch_size": 16},
        "search": {"num_samples": trials, "max_concurrent": concurrent, "searcher": {"n_startup_trials": 10},
                   "asha": {"max_t": epochs, "grace_period": 2, "reduction_factor": 2}, "checkpoint_every": 2,
                   "objective": {"metric": "fid"}, "resources": {"cpu": 2 / concurrent}},
    })
    os.environ["CVAE_SCRATCH"] = str(storage / "scratch")  # before Ray starts: its workers take it
    run = RunFolder.at(f"{bucket if policy == 'events_s3' else storage}/{policy}-{trials}")
    run.path.mkdir(parents=True)
    s = spec.search
    trainable = tune.with_resources(tune.with_parameters(
        dummy_trial, run_location=run.location, epochs=epochs, epoch_s=epoch_s,
        score_at=milestones(s.asha.grace_period, s.asha.reduction_factor, s.asha.max_t),
        checkpoint_every=s.checkpoint_every, tune_checkpoints=policy == "every_second",
    ), {"cpu": s.resources.cpu})
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    tuner = tuning.new_tuner(spec, run, trainable)
    if policy == "every_second":
        tuner_run_config(tuner).checkpoint_config = tune.CheckpointConfig(num_to_keep=2)
    wall, cpu = time.perf_counter(), time.process_time()
    results = tuner.fit()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    ray.shutdown()
    return {**stats, "policy": policy, "trials": trials, "finished": results.num_terminated,
            "wall_seconds": wall, "driver_cpu_seconds": cpu}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, nargs="+", default=[50, 200, 800])
    p.add_argument("--concurrent", type=int, default=8, help="trials at once (each a 2/concurrent CPU share)")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--epoch-seconds", type=float, default=0.1)
    p.add_argument("--policies", nargs="+", choices=POLICIES, default=list(POLICIES))
    p.add_argument("--one", nargs=3, metavar=("POLICY", "TRIALS", "BUCKET"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        policy, trials, bucket = args.one
        with tempfile.TemporaryDirectory(prefix="driver-scale-") as storage:  # the bench's own, gone after
            print(json.dumps(one_run(policy, int(trials), args.concurrent, args.epochs, args.epoch_seconds, bucket,
                                     Path(storage))))
        return
    server, bucket = start_s3() if "events_s3" in args.policies else (None, "-")  # the commands inherit its endpoint

    print(f"dummy trials of {args.epochs} epochs x {args.epoch_seconds} s, {args.concurrent} at once, on the CPU")
    print(f"{'policy':<14}{'trials':>7}{'wall s':>9}{'driver CPU s':>14}{'saves':>7}{'save s':>9}"
          f"{'MB written':>12}{'MB copied':>11}")
    rows = []
    for trials in args.trials:
        for policy in args.policies:
            cmd = [sys.executable, __file__, "--one", policy, str(trials), bucket, "--concurrent", str(args.concurrent),
                   "--epochs", str(args.epochs), "--epoch-seconds", str(args.epoch_seconds)]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            if out.returncode != 0:
                sys.exit(f"error: the {policy} run of {trials} trials failed:\n{out.stderr[-3000:]}")
            r = json.loads(out.stdout.strip().splitlines()[-1])
            rows.append(r)
            print(f"{policy:<14}{trials:>7}{r['wall_seconds']:>9.1f}{r['driver_cpu_seconds']:>14.1f}{r['saves']:>7}"
                  f"{r['save_seconds']:>9.2f}{r['bytes_written'] / 1e6:>12.1f}{r['bytes_copied'] / 1e6:>11.1f}")
    if server is not None:
        server.stop()
    for r in rows:
        print(f"{r['policy']}, {r['trials']} trials: saves took {100 * r['save_seconds'] / r['wall_seconds']:.1f}% of "
              "the driver's time")
    if len(args.trials) >= 2:
        lo, hi = min(args.trials), max(args.trials)
        for policy in args.policies:
            a = next(r for r in rows if r["policy"] == policy and r["trials"] == lo)
            b = next(r for r in rows if r["policy"] == policy and r["trials"] == hi)
            grow = {k: b[k] / max(a[k], 1e-9) for k in ("save_seconds", "bytes_copied", "driver_cpu_seconds")}
            print(f"{policy}: {lo} -> {hi} trials ({hi / lo:.0f}x): save seconds x{grow['save_seconds']:.1f}, "
                  f"bytes copied x{grow['bytes_copied']:.1f}, driver CPU x{grow['driver_cpu_seconds']:.1f}")


if __name__ == "__main__":
    main()
