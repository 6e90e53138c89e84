"""What the searcher buys: random search, TPE with Optuna's defaults and TPE as configured here, on a
synthetic objective, in one run (CPU, nothing trained).

Each search is the project's real Tuner (search.tuning.new_tuner: the searcher and its study,
PersistentASHA, trials several at once) over spaces/cnn.yaml's space and schedule, with a dummy
trainable whose learning curve is a closed-form function of the configuration plus noise
(`final_score` and `curve` below). The function is synthetic: it has the shape of the real problem,
not its numbers:
- the family decides what score can be reached (resnet lower than cnn), and each family's own
  settings matter (resnet: width, blocks, cond_norm, norm; cnn: channels, layers, h);
- latent, beta and lr each have an optimum, quadratic in their logarithm; EMA and a learned sigma help;
- lr above 8e-4 with batch 64 diverges: the trial fails, as a real divergence does;
- larger models converge more slowly: the curve's time constant grows with the parameter count;
- every score has noise (sd 3), as a FID of 1,000 samples has.
For each of R seeds, each searcher runs N trials, K at once. Printed: the median over seeds of the
best score after N trials, of the trial-epochs each searcher needed to reach random search's final
best (of the same seed; trials counted in the order they ended, failed ones included), and of that
as a ratio to what random search itself needed; and the best score each reached within the
trial-epochs random search spent in all (equal compute). Target: the configured TPE reaches
random search's best in <= half of random search's trial-epochs.

One seed draws the same start-up trials for all three searchers (TPE starts with random ones), so
where random search's best is among them the ratios are 1. ASHA promotes the better trials, so a
searcher that samples better configurations also spends more trial-epochs on them.
--grace-period replaces the space's (max_t: no early stopping) to show the schedule's share.

    python bench/search_efficiency.py                      # 5 seeds x 64 trials, 4 at once: ~17 min on 2 cores
    python bench/search_efficiency.py --seeds 3 --trials 24 --concurrent 4 --grace-period 15
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEARCHERS = {
    "random": None,  # TPE that never leaves its random start-up: random search through the same machinery
    "tpe-defaults": {"n_startup_trials": 10, "multivariate": False, "group": False, "constant_liar": False},
    "tpe-configured": {},  # the space file's own searcher settings
}


def final_score(config: dict) -> float:
    """The score (lower is better) the configuration would reach at convergence; inf: it diverges."""
    lr, batch = config["lr"], config["batch_size"]
    if lr > 8e-4 and batch == 64:
        return math.inf
    if config["family"] == "resnet":
        score = 60.0 + {64: 8.0, 128: 0.0}[config["resnet_width"]] - 5.0 * (config["resnet_blocks"] - 1)
        score += -4.0 * config["resnet_cond_norm"] + {"batch": 0.0, "group": 3.0}[config["resnet_norm"]]
    else:
        score = 105.0 + {32: 12.0, 64: 4.0, 128: 0.0}[config["conv_channels"]] + 6.0 * abs(config["conv_layers"] - 3)
        score += {256: 5.0, 512: 0.0, 1024: 2.0}[config["h"]]
    score += 12.0 * math.log2(config["latent"] / 128) ** 2 + 15.0 * math.log10(config["beta"] / 0.02) ** 2
    score += 25.0 * math.log10(lr / 5e-4) ** 2 - 5.0 * (config["ema"] > 0)
    return score - 3.0 * (config["likelihood"] == "gaussian_learned")


def curve(final: float, params: int, epoch: int) -> float:
    """The score after `epoch` epochs: 250 above the final score at the start, decaying with a time
    constant that grows with the model (8 epochs at 5M parameters, 20 at 30M)."""
    tau = 8.0 * (params / 5e6) ** 0.5
    return final + 250.0 * math.exp(-epoch / tau)


def dummy_trial(config, run_dir: str, max_t: int, score_at: frozenset):
    """Reports as search.trainable.run_trial does: an epoch record every epoch, a score at ASHA's
    milestones and the last epoch, the stop at the last; raises as a divergence does."""
    import random

    from ray import tune

    from cvae_core.models import config_params
    from results.run_folder import RunFolder, trial_name
    from search.space import trial_config

    trial_id = tune.get_context().get_trial_id()
    RunFolder(run_dir).trial(trial_name(config, trial_id)).mkdir(parents=True, exist_ok=True)
    params = config_params(trial_config(config).model)
    final, rng, score = final_score(config), random.Random(trial_id), {}
    for epoch in range(1, max_t + 1):
        if math.isinf(final) and epoch == 2:
            raise RuntimeError("loss diverged at epoch 2 (synthetic)")
        stop = "max_epochs" if epoch == max_t else None
        if epoch in score_at or stop:
            value = curve(final, params, epoch) + rng.gauss(0.0, 3.0)
            score = {"score": value, "fid": value, "kid": 0.0, "score_epoch": epoch}
        tune.report({"epoch": epoch, "best_val_loss": 0.0, "stop": stop, "objective": "fid", "params": params,
                     **score})


def one_search(searcher: str, seed: int, trials: int, concurrent: int, grace_period: int | None) -> dict:
    """In this process: one search; per finished trial, in the order they ended, (score, epochs)."""
    import ray
    from ray import tune

    from results.run_folder import RunFolder
    from results.study import TUNE_TRIAL_ID, load_study
    from search import tuning
    from search.objective import milestones
    from search.settings import load_spec, with_overrides

    spec = with_overrides(load_spec(ROOT / "spaces" / "cnn.yaml"), num_samples=trials)
    s = spec.search
    settings = {"n_startup_trials": trials} if SEARCHERS[searcher] is None else SEARCHERS[searcher]
    asha = s.asha if grace_period is None else s.asha.model_copy(update={"grace_period": grace_period})
    search = s.model_copy(update={"seed": seed, "max_concurrent": concurrent, "asha": asha,
                                  "searcher": s.searcher.model_copy(update=settings),
                                  "resources": s.resources.model_copy(update={"cpu": 2 / concurrent, "gpu": 0})})
    spec = dataclasses.replace(spec, search=search)
    run = RunFolder(Path(tempfile.mkdtemp(prefix="search-efficiency-")) / searcher)
    run.path.mkdir(parents=True)
    trainable = tune.with_resources(tune.with_parameters(
        dummy_trial, run_dir=str(run.path), max_t=search.asha.max_t,
        score_at=milestones(search.asha.grace_period, search.asha.reduction_factor, search.asha.max_t),
    ), {"cpu": search.resources.cpu})
    tuning.configure_tune()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = tuning.new_tuner(spec, run, trainable).fit()
    epochs = {r.metrics["trial_id"]: r.metrics["epoch"] for r in results if r.metrics and "epoch" in r.metrics}
    ray.shutdown()
    done = sorted((t for t in load_study(run.path).trials if t.value is not None), key=lambda t: t.datetime_complete)
    return {"ended": [(t.value, epochs[t.user_attrs[TUNE_TRIAL_ID]]) for t in done],
            "failed_epochs": sum(e for i, e in epochs.items() if i not in {t.user_attrs[TUNE_TRIAL_ID] for t in done})}


def epochs_to_reach(run: dict, target: float) -> float:
    """Trial-epochs spent (trials in the order they ended, failed ones counted) until a trial's score <= target."""
    spent = run["failed_epochs"]
    for value, epochs in run["ended"]:
        spent += epochs
        if value <= target:
            return spent
    return math.inf


def best_within(run: dict, budget: float) -> float:
    """The best score among the trials that ended before `budget` trial-epochs were spent."""
    spent, best = run["failed_epochs"], math.inf
    for value, epochs in run["ended"]:
        spent += epochs
        if spent > budget:
            break
        best = min(best, value)
    return best


def spent(run: dict) -> int:
    return run["failed_epochs"] + sum(e for _, e in run["ended"])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--trials", type=int, default=64)
    p.add_argument("--concurrent", type=int, default=4)
    p.add_argument("--grace-period", type=int, help="epochs; default: the space's (max_t: no early stopping)")
    p.add_argument("--one", nargs=2, metavar=("SEARCHER", "SEED"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.one:
        print(json.dumps(one_search(args.one[0], int(args.one[1]), args.trials, args.concurrent, args.grace_period)))
        return

    schedule = "ASHA schedule" if args.grace_period is None else f"ASHA schedule with grace_period {args.grace_period}"
    print(f"synthetic objective over spaces/cnn.yaml's space and {schedule}: {args.seeds} seeds x {args.trials} "
          f"trials, {args.concurrent} at once, on the CPU")
    runs = {name: [] for name in SEARCHERS}
    for seed in range(args.seeds):
        for name in SEARCHERS:
            cmd = [sys.executable, __file__, "--one", name, str(seed), "--trials", str(args.trials),
                   "--concurrent", str(args.concurrent)]
            cmd += [] if args.grace_period is None else ["--grace-period", str(args.grace_period)]
            out = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, check=True).stdout
            runs[name].append(json.loads(out.strip().splitlines()[-1]))
    print(f"{'searcher':<16}{'median best':>12}{'trial-epochs to random best':>30}{'ratio to random':>17}"
          f"{'best within random trial-epochs':>34}")
    targets = [min(v for v, _ in r["ended"]) for r in runs["random"]]
    baseline = [epochs_to_reach(r, t) for r, t in zip(runs["random"], targets)]
    budgets = [spent(r) for r in runs["random"]]
    for name, seeds in runs.items():
        best = statistics.median(min(v for v, _ in r["ended"]) for r in seeds)
        needed = [epochs_to_reach(r, t) for r, t in zip(seeds, targets)]
        ratio = statistics.median(n / b for n, b in zip(needed, baseline))
        within = statistics.median(best_within(r, b) for r, b in zip(seeds, budgets))
        print(f"{name:<16}{best:>12.1f}{statistics.median(needed):>30.0f}{ratio:>17.2f}{within:>34.1f}")
        print("    per seed (best, trial-epochs to random best, trial-epochs in all): " + ", ".join(
            f"({min(v for v, _ in r['ended']):.1f}, {n}, {spent(r)})" for r, n in zip(seeds, needed)))
    print("target: tpe-configured's ratio <= 0.50 (inf: never reached random search's best)")


if __name__ == "__main__":
    main()
