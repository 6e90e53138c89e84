"""What the search buys: the configured search against what users would pick instead, at equal
compute, on a synthetic objective or on real learning curves (LCBench), in one run (CPU, nothing trained).

Each search is the project's real Tuner (search.tuning.new_tuner: the searcher and its study,
PersistentASHA, trials several at once) with a trainable that reports as search.trainable.run_trial
does (an epoch record every epoch, the score when it is computed, the stop at the last epoch).
Methods (the names of --methods and the JSON):
- `random`: random search + ASHA, Ray Tune's own pairing, the reference for every ratio (TPE that
  never leaves its random start-up: random search through the same machinery);
- `tpe-defaults`: TPE with Optuna's defaults + ASHA;
- `no-early-stopping`: TPE on a milestone (search.settings.Searcher's defaults), every trial run to max_t;
- `configured`: the search as the space file configures it (spaces/cnn.yaml: a GP told last scores,
  ASHA's milestones trusted until the trials run to the end refute them).
The baselines are TPE's and random search's whatever searcher the space file sets, each
with plain ASHA on the space's schedule (min_agreement and run_to_end_every are the configured
search's own).
Benchmarks:
- `synthetic` (default): spaces/cnn.yaml's space and schedule, each trial's curve a closed-form
  function of its configuration plus noise (`final_score`, `curve`): the shape of the real problem,
  not its numbers. The family decides what can be reached (resnet lower than cnn) and each family's
  settings matter; latent, beta and lr have optima; lr above 8e-4 with batch 64 diverges (the trial
  fails); larger models converge more slowly; every score has noise (sd 3), as a FID of 1,000 samples.
- `lcbench`: real curves of MLPs on OpenML tasks (bench/lcbench.py; --tasks), LCBench's seven
  settings with its ranges and log scales. Each epoch reports the validation error (100 -
  accuracy) and the surrogate's seconds; the score is that error, at ASHA's milestones and the
  last epoch, as a real trial's FID. The searcher and schedule are cnn.yaml's with max_t = 52
  instead of 100 and the grace period scaled by as much (lcbench_schedule: 5 x 52/100, rounded,
  is 3), so ASHA's milestones (grace_period x reduction_factor^k <= max_t) are 3, 9 and 27 of 52
  epochs where cnn.yaml's are 5, 15 and 45 of 100: each at about the same share of training.
  The surrogate predicts its lowest errors at corners of the space, where LCBench trained
  almost nothing (docs/benchmarks.md, "The surrogate's corners"); with --points N (2000: as many
  as LCBench trained per task) each configuration a search samples stands for the nearest of N
  drawn at random over the space (lcbench.nearest), so that every search chooses among points
  where the surrogate has data around: a tabular benchmark read from the surrogate.
Measures for each task over S seeds (bench/efficiency.py): B, the median of random search's
trial-epochs for N trials; T, the median of its final best (the lowest last score of trials that
ran to max_t); per method, the median best within B trial-epochs (equal compute) and the ratio:
the median over seeds of the trial-epochs the search had trained when a trial first reached T
(the trials still running then included, failed ones too; never: infinite), over B, with a 90%
bootstrap interval over seeds (B and T measured again on each draw), and the same ratio counted
in the surrogate's seconds (LCBench's `time`: a wide network's epoch costs more). Target: the configured search's median
ratio over tasks <= 0.5.

One seed draws the same start-up trials for every TPE method, so where random search's best is
among them the ratios are 1. ASHA promotes the better trials, so a searcher that samples better
configurations also spends more trial-epochs on them. --grace-period replaces the schedule's
(max_t: no early stopping) for every method.

Each epoch lasts --epoch-seconds (a sleep; default 0.05 s). A real epoch outlasts Tune's own work
per report and a trial's start; without the sleep a trial advances as fast as the driver handles
its reports, and a trial that started early could run 52 epochs while the next three ran 5, so
ASHA met them in an order no real search gives it. --space: the space file whose schedule every
method runs and whose searcher the configured search runs (default spaces/cnn.yaml; an LCBench
search keeps LCBench's own space).

One 128-trial search on the surrogate takes about 40-60 s on 2 idle cores (the sleeps, at 4
trials at once, about 25-45 s of it; Ray's start and stop about 8 s), more with `model: gp`,
whose every ask optimises its acquisition over LCBench's two wide integer settings (about 3 s an
ask on these cores); --parallel 2 runs two at once. Each search is a process of its own.

--emulate runs each search in this process without Tune's controller and actors: the Tuner's
ASHA (search.schedulers.AgreementASHA, Ray's ASHAScheduler with the space's asha rules,
without the run-folder records) and the project's searcher (search.searcher.new_sampler) through Optuna's ask and
tell, --concurrent trials at once, each one epoch per step, no sleeps. One trial at a time its
searches are the Tuner's, trial for trial (tests/test_bench.py); four at once, the Tuner's trials
report in an order that timing decides. About 1.5 s for a 128-trial search on the surrogate with
TPE (its asks most of it), so 10 seeds of two TPE methods on six tasks take about 80 s, for
exploring a change before measuring it through the Tuner; with cnn.yaml's GP each configured search
takes about 55 s with torch on 2 threads, 60-75 s on one. --parallel 2 runs two searches at once,
each a process on one core: 10 seeds of random search and the GP on six tasks in about 41
minutes instead of 55 (each process's start, about 4 s, makes it slower for TPE alone).

    python bench/search_efficiency.py --benchmark lcbench --tasks 7593,126025 --json out.json
    python bench/search_efficiency.py --benchmark lcbench --tasks 7593,126025 --seeds 10 --emulate
    python bench/search_efficiency.py --benchmark lcbench --tasks 7593,126025 --seeds 10 --first-seed 10 --emulate
    python bench/search_efficiency.py --seeds 3 --trials 24 --methods random,configured
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

import efficiency  # noqa: E402  (bench/, beside this script)
import lcbench  # noqa: E402

from cvae_core.cli import ArgumentParser, local_path, number, out_file  # noqa: E402

METHODS = ("random", "tpe-defaults", "no-early-stopping", "configured")
# TPESampler()'s own settings in the pinned Optuna 5.0 (its multivariate=None: multivariate for one objective)
OPTUNA_DEFAULTS = {"n_startup_trials": 10, "multivariate": True, "group": False, "constant_liar": True,
                   "fit_on": "last"}
SPACE_FILE = ROOT / "spaces" / "cnn.yaml"
CLOCKS = "epoch-ends"  # the bench's own folder in its run folder: each trial's epoch ends


def final_score(config: dict) -> float:
    """The synthetic score (lower is better) the configuration would reach at convergence; inf: it diverges."""
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
    """The synthetic score after `epoch` epochs: 250 above the final score at the start, decaying
    with a time constant that grows with the model (8 epochs at 5M parameters, 20 at 30M)."""
    tau = 8.0 * (params / 5e6) ** 0.5
    return final + 250.0 * math.exp(-epoch / tau)


def report_curve(score, max_t: int, score_at: frozenset, epoch_s: float, clock: Path, params: int | None = None,
                 per_epoch=None, fail_at: int | None = None) -> None:
    """Report as search.trainable.run_trial does: an epoch record every `epoch_s` seconds (with
    `per_epoch(epoch)`'s entries), `score(epoch)` at the epochs in `score_at` and the last, the stop
    at the last; raise at `fail_at` as a divergence does. Each epoch's end goes into `clock` first
    (when, and its `seconds` entry), for what the search had spent at any moment (_spent_when)."""
    import time

    from ray import tune

    from cvae_core.config import MAX_EPOCHS_STOP

    last = {}
    clock.parent.mkdir(exist_ok=True)
    for epoch in range(1, max_t + 1):
        time.sleep(epoch_s)
        if epoch == fail_at:
            raise RuntimeError(f"loss diverged at epoch {epoch} (synthetic)")
        stop = MAX_EPOCHS_STOP if epoch == max_t else None
        if epoch in score_at or stop:
            last = {"score": score(epoch), "score_epoch": epoch}
        own = {} if per_epoch is None else per_epoch(epoch)
        with clock.open("a") as f:
            f.write(json.dumps([time.time(), own.get("seconds")]) + "\n")
        tune.report({"epoch": epoch, "best_val_loss": 0.0, "stop": stop, "params": params, **own, **last})


def _clock_file(run_dir: str | Path, trial_id: str | None = None) -> Path:
    """A trial's epoch ends (report_curve), in the bench's run folder; by default the running trial's."""
    if trial_id is None:
        from ray import tune

        trial_id = tune.get_context().get_trial_id()
    return Path(run_dir) / CLOCKS / f"{trial_id}.jsonl"


def _trial_folder(run_dir: str, config: dict) -> None:
    from ray import tune

    from results.run_folder import RunFolder, trial_name

    RunFolder(run_dir).trial(trial_name(config, tune.get_context().get_trial_id())).mkdir(parents=True, exist_ok=True)


def synthetic_curve(config: dict, seed: int):
    """The synthetic function's curve of `config`: score(epoch), with noise seeded by the search's
    seed and its study trial number and drawn as the scores are asked for (another seed, other
    noise); its parameter count; the epoch it diverges at (None)."""
    import random

    from cvae_core.models import config_params
    from search.seeds import TRIAL_NUMBER
    from search.space import trial_config

    params = config_params(trial_config(config).model)
    final, rng = final_score(config), random.Random(f"{seed}-{config[TRIAL_NUMBER]}")
    return lambda epoch: curve(final, params, epoch) + rng.gauss(0.0, 3.0), params, 2 if math.isinf(final) else None


def synthetic_trial(config, run_dir: str, seed: int, max_t: int, score_at: frozenset, epoch_s: float):
    """The synthetic function's curve (synthetic_curve)."""
    _trial_folder(run_dir, config)
    score, params, fail_at = synthetic_curve(config, seed)
    report_curve(score, max_t, score_at, epoch_s, _clock_file(run_dir), params, fail_at=fail_at)


def lcbench_trial(config, run_dir: str, folder: lcbench.Folder, task: str, points: int | None, max_t: int,
                  score_at: frozenset, epoch_s: float):
    """The surrogate's curve of `config` on `task`: its validation error and cumulative seconds every
    epoch, as `val_error` and `seconds`; the error as the score at `score_at`, as a trial's FID."""
    _trial_folder(run_dir, config)
    error, seconds = lcbench.curve(folder, task, config, points)
    report_curve(lambda epoch: error[epoch - 1], max_t, score_at, epoch_s, _clock_file(run_dir),
                 per_epoch=lambda epoch: {"val_error": error[epoch - 1], "seconds": seconds[epoch - 1]})


def method_search(method: str, search, trials: int, grace_period: int | None):
    """The space's search settings as `method` runs them (module doc): the baselines are TPE's and
    random search's whichever model the space's searcher uses, with plain ASHA on its schedule."""
    from search.settings import Searcher

    searcher, asha = search.searcher, search.asha
    if method != "configured":
        searcher = Searcher(n_startup_trials=searcher.n_startup_trials)
        asha = asha.model_copy(update={"min_agreement": None, "run_to_end_every": None})  # the configured search's own
    if method == "random":
        searcher = searcher.model_copy(update={"n_startup_trials": trials, "fit_on": "last"})
    elif method == "tpe-defaults":
        searcher = searcher.model_copy(update=OPTUNA_DEFAULTS)
    if method == "no-early-stopping" or grace_period is not None:
        asha = asha.model_copy(update={"grace_period": asha.max_t if method == "no-early-stopping" else grace_period})
    return search.model_copy(update={"searcher": searcher, "asha": asha})


def _fit(args: argparse.Namespace, spec, run, task: str) -> dict[str, dict]:
    """Run the search in `run` with the benchmark's trainable; each trial's last result by its id."""
    import ray
    from ray import tune

    from search import tuning
    from search.objective import milestones

    s = spec.search
    score_at = milestones(s.asha.grace_period, s.asha.reduction_factor, s.asha.max_t)
    if args.benchmark == "lcbench":
        folder = lcbench.read_folder(args.lcbench)
        space = lcbench.Space(folder)
        trainable = tune.with_parameters(lcbench_trial, run_dir=str(run.path), folder=folder, task=task,
                                         points=args.points, max_t=s.asha.max_t, score_at=score_at,
                                         epoch_s=args.epoch_seconds)
    else:
        space = None
        trainable = tune.with_parameters(synthetic_trial, run_dir=str(run.path), seed=s.seed, max_t=s.asha.max_t,
                                         score_at=score_at, epoch_s=args.epoch_seconds)
    tuning.configure_tune()
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = tuning.new_tuner(spec, run, tune.with_resources(trainable, {"cpu": s.resources.cpu}), space).fit()
    ray.shutdown()
    return {r.metrics["trial_id"]: r.metrics for r in results if r.metrics and "epoch" in r.metrics}


def _spec(args: argparse.Namespace, method: str, seed: int):
    """The space file's spec as `method` runs it with this seed, --trials and --concurrent."""
    from search.settings import load_spec, with_overrides

    spec = with_overrides(load_spec(args.space), num_samples=args.trials)
    s = spec.search
    if args.benchmark == "lcbench":
        s = s.model_copy(update={"asha": lcbench_schedule(s.asha)})
    s = method_search(method, s, args.trials, args.grace_period)
    s = s.model_copy(update={"seed": seed, "max_concurrent": args.concurrent,
                             "resources": s.resources.model_copy(update={"cpu": 2 / args.concurrent, "gpu": 0})})
    return dataclasses.replace(spec, search=s)


def lcbench_schedule(asha):
    """The space's ASHA schedule on LCBench's 52 epochs: the grace period scaled by 52 / max_t
    (rounded, at least 1), so that each milestone comes at about the same share of training."""
    grace = max(1, round(asha.grace_period * lcbench.EPOCHS / asha.max_t))
    return asha.model_copy(update={"max_t": lcbench.EPOCHS, "grace_period": grace})


def one_search(args: argparse.Namespace, method: str, seed: int, task: str) -> list[efficiency.Ended]:
    """In this process: one search; its trials in the order they ended."""
    from results.run_folder import RunFolder
    from results.study import TUNE_TRIAL_ID, load_study

    spec = _spec(args, method, seed)
    s = spec.search
    with tempfile.TemporaryDirectory(prefix="search-efficiency-") as tmp:  # the bench's own run folder
        run = RunFolder(Path(tmp) / method)
        run.path.mkdir()
        last = _fit(args, spec, run, task)
        trials = [t for t in load_study(run.path).trials if t.datetime_complete]
        ends = {i: _epoch_ends(_clock_file(run.path, i), m.get("epoch", 0)) for i, m in last.items()}
    out = []
    for t in sorted(trials, key=lambda t: t.datetime_complete):
        m = last.get(t.user_attrs[TUNE_TRIAL_ID], {})
        epochs, seconds = _spent_when(ends.values(), t.datetime_complete.timestamp())
        out.append(efficiency.Ended(t.value, m.get("epoch") == s.asha.max_t, epochs, seconds))
    return out


def _epoch_ends(path: Path, reported: int) -> list[tuple[float, float | None]]:
    """A trial's epoch ends (when, its cumulative seconds), up to the last one Tune took in: a
    trial ASHA stopped may have ended another epoch before its actor went."""
    lines = path.read_text().splitlines() if path.is_file() else []
    return [tuple(json.loads(line)) for line in lines[:reported]]


def _spent_when(trials, moment: float) -> tuple[int, float | None]:
    """The trial-epochs and seconds every trial had trained by `moment` (seconds: None where the
    benchmark has none)."""
    done = [[e for e in ends if e[0] <= moment] for ends in trials]
    seconds = [ends[-1][1] for ends in done if ends]
    return sum(map(len, done)), None if None in seconds else sum(seconds)


def emulated_search(args: argparse.Namespace, method: str, seed: int, task: str) -> list[efficiency.Ended]:
    """One search as the Tuner runs it, without Tune's controller and actors (--emulate): the Tuner's
    ASHA (AgreementASHA) and the project's searcher (new_sampler, through Optuna's ask and tell as OptunaSearch
    uses them), --concurrent trials at once, each one epoch per step, in trial order. The trials
    in the order they ended."""
    import optuna
    from ray.tune.schedulers import TrialScheduler

    from cvae_core.config import MAX_EPOCHS_STOP
    from search.objective import METRIC, MODE, milestones
    from search.schedulers import AgreementASHA
    from search.searcher import new_sampler
    from search.seeds import TRIAL_NUMBER

    optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per search's new study otherwise
    spec = _spec(args, method, seed)
    s = spec.search
    score_at = milestones(s.asha.grace_period, s.asha.reduction_factor, s.asha.max_t)
    study = optuna.create_study(sampler=new_sampler(s.searcher, s.seed, (*sorted(score_at), s.asha.max_t)))
    asha = AgreementASHA(time_attr="epoch", metric=METRIC, mode=MODE, max_t=s.asha.max_t,
                         grace_period=s.asha.grace_period, reduction_factor=s.asha.reduction_factor,
                         min_agreement=s.asha.min_agreement, min_finished=s.asha.min_finished,
                         run_to_end_every=s.asha.run_to_end_every)
    folder = lcbench.read_folder(args.lcbench) if args.benchmark == "lcbench" else None
    space = lcbench.Space(folder) if folder else spec.space
    running, ended, spent, spent_s = [], [], 0, 0.0
    while running or len(study.trials) < args.trials:
        while len(running) < args.concurrent and len(study.trials) < args.trials:
            trial = study.ask()
            config = {**space(trial), TRIAL_NUMBER: trial.number}
            if folder:
                error, seconds = lcbench.curve(folder, task, config, args.points)
                score, fail_at = (lambda epoch, error=error: error[epoch - 1]), None
            else:
                (score, _, fail_at), seconds = synthetic_curve(config, s.seed), None
            running.append(SimpleNamespace(trial=trial, trial_id=str(trial.number), config=config, score=score,
                                           fail_at=fail_at, seconds=seconds, epoch=0, last=None))
            asha.on_trial_add(None, running[-1])
        for t in list(running):
            t.epoch += 1
            if t.epoch == t.fail_at:  # the trial raises: Tune fails it, OptunaSearch tells the study so
                asha.on_trial_remove(None, t)
                study.tell(t.trial, state=optuna.trial.TrialState.FAIL)
                ended.append(efficiency.Ended(None, False, spent, spent_s if folder else None))
                running.remove(t)
                continue
            spent += 1
            if folder:  # the surrogate's seconds are cumulative
                spent_s += t.seconds[t.epoch - 1] - (t.seconds[t.epoch - 2] if t.epoch > 1 else 0.0)
            result = {"epoch": t.epoch, "stop": MAX_EPOCHS_STOP if t.epoch == s.asha.max_t else None}
            if t.epoch in score_at or t.epoch == s.asha.max_t:
                t.last = result[METRIC] = t.score(t.epoch)
                t.trial.report(t.last, t.epoch)
            if asha.on_trial_result(None, t, result) == TrialScheduler.STOP or t.epoch == s.asha.max_t:
                asha.on_trial_remove(None, t)
                study.tell(t.trial, t.last)
                ended.append(efficiency.Ended(t.last, t.epoch == s.asha.max_t, spent, spent_s if folder else None))
                running.remove(t)
    return ended


def _search(args: argparse.Namespace, method: str, seed: int, task: str) -> list[efficiency.Ended]:
    """One search in a fresh process (Ray's state is per process; an emulated search's asks hold
    the interpreter, so --parallel takes processes there too); --emulate one at a time: in this one."""
    if args.emulate and args.parallel == 1:
        return emulated_search(args, method, seed, task)
    cmd = [sys.executable, __file__, "--one", method, str(seed), task, *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True)  # in this folder: its relative paths read alike
    if out.returncode != 0:
        sys.exit(f"error: the {method} search (seed {seed}, task {task}) failed:\n{out.stderr[-3000:]}")
    return [efficiency.Ended(*t) for t in json.loads(out.stdout.strip().splitlines()[-1])]


def _searches(args: argparse.Namespace, task: str) -> dict[str, list[list[efficiency.Ended]]]:
    """Every method's search for each seed on `task`, --parallel at a time."""
    seeds = range(args.first_seed, args.first_seed + args.seeds)
    jobs = [(method, seed) for seed in seeds for method in args.methods]
    with ThreadPoolExecutor(args.parallel) as pool:
        done = dict(zip(jobs, pool.map(lambda job: _search(args, job[0], job[1], task), jobs)))
    return {m: [done[m, seed] for seed in seeds] for m in args.methods}


def _show(x: float | None) -> str:
    return "inf" if x is None else f"{x:.2f}"


def _print_task(task: str, figures: dict[str, dict], searches: dict[str, list], budget_unit: str) -> None:
    print(f"task {task}:")
    print(f"  {'method':<19}{'final best':>11}{'best within B':>15}{'ratio':>8}{'90% interval':>18}"
          f"{'ratio (time)':>14}{'trial-epochs':>14}")
    for method, f in figures.items():
        interval = f"[{_show(f['interval'][0])}, {_show(f['interval'][1])}]"
        ratio_time = "-" if budget_unit == "epochs" else _show(f["ratio_time"])
        print(f"  {method:<19}{_show(f['final_best']):>11}{_show(f['median_best']):>15}{_show(f['ratio']):>8}"
              f"{interval:>18}{ratio_time:>14}{f['trial_epochs']:>14.0f}")
        print("      per seed (final best, trial-epochs in all): " + ", ".join(
            f"({efficiency.final_best(s):.1f}, {efficiency.spent(s):.0f})" for s in searches[method]))


def _parser() -> ArgumentParser:
    p = ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--benchmark", choices=("synthetic", "lcbench"), default="synthetic")
    p.add_argument("--space", type=local_path, default=SPACE_FILE,
                   help="the space file whose schedule every method runs and whose searcher the configured search runs "
                        "(lcbench: its space aside)")
    p.add_argument("--tasks", help="LCBench's OpenML task ids, comma-separated (lcbench only; default 7593)")
    p.add_argument("--lcbench", type=local_path,
                   help=f"the surrogate's folder (lcbench only; default {lcbench.DEFAULT_DIR})")
    p.add_argument("--points", type=number(int, 1),
                   help="lcbench: every configuration a search samples stands for the nearest of this many drawn at "
                        "random over the space, as LCBench drew the 2,000 it trained (default: the surrogate anywhere)")
    p.add_argument("--methods", default=",".join(METHODS), help=f"a comma-separated subset of {','.join(METHODS)}")
    p.add_argument("--seeds", type=number(int, 1), default=10)
    p.add_argument("--first-seed", type=number(int, 0), default=0,
                   help="seeds FIRST.. instead of 0..: another draw of seeds, to see how much a figure owes to them")
    p.add_argument("--trials", type=number(int, 1), default=128)
    p.add_argument("--concurrent", type=number(int, 1), default=4)
    p.add_argument("--grace-period", type=number(int, 1), help="epochs, for every method; default: the schedule's")
    p.add_argument("--epoch-seconds", type=number(float, 0), default=0.05,
                   help="each trial's epoch lasts this long (a sleep), as a real epoch outlasts Tune's work per report")
    p.add_argument("--parallel", type=number(int, 1), default=1,
                   help="searches at once, each its own process (and Ray instance; its trials still --concurrent "
                        "at once)")
    p.add_argument("--emulate", action="store_true",
                   help="each search in this process without Tune's controller (Ray's ASHA and the searcher, "
                        "no sleeps): fast, for exploring; its figures are the Tuner's, one trial at a time")
    p.add_argument("--json", type=out_file, help="write every figure there (checked before any search runs)")
    p.add_argument("--one", nargs=3, metavar=("METHOD", "SEED", "TASK"), help=argparse.SUPPRESS)
    return p


def _arguments() -> argparse.Namespace:
    """The command line, every flag checked before any search runs."""
    p = _parser()
    args = p.parse_args()
    args.methods = args.methods.split(",")
    for method in args.methods:
        if method not in METHODS:
            p.error(f"--methods: {method!r} is not one of {','.join(METHODS)}")
    if len(set(args.methods)) < len(args.methods):
        p.error(f"--methods: {','.join(args.methods)} names a method twice")
    if "random" not in args.methods:
        p.error("--methods: random must be among them: it is the reference of every ratio")
    for flag in ("points", "tasks", "lcbench"):
        if getattr(args, flag) is not None and args.benchmark != "lcbench":
            p.error(f"--{flag}: only with --benchmark lcbench")
    args.tasks = (args.tasks or "7593").split(",") if args.benchmark == "lcbench" else ["synthetic"]
    args.lcbench = args.lcbench or lcbench.DEFAULT_DIR
    _check_space(p, args)
    if args.benchmark == "lcbench":
        try:
            folder = lcbench.read_folder(args.lcbench)
        except lcbench.LCBenchError as e:
            p.error(f"--lcbench {e}")
        try:
            lcbench.check_tasks(folder, args.tasks)
        except lcbench.LCBenchError as e:
            p.error(f"--tasks: {e}")
    return args


def _check_space(p: ArgumentParser, args: argparse.Namespace) -> None:
    """--space: a search's space file, whose max_t (LCBench's 52 epochs in its place) bounds --grace-period."""
    from search.settings import load_spec
    from search.validation import SpaceError

    try:
        spec = load_spec(args.space)
    except SpaceError as e:
        p.error(f"--space {e}")
    if spec.space.presets:
        p.error(f"--space {args.space}: runs presets, not a search; give a space file with a searcher")
    max_t = lcbench.EPOCHS if args.benchmark == "lcbench" else spec.search.asha.max_t
    if args.grace_period is not None and args.grace_period > max_t:
        p.error(f"--grace-period: {args.grace_period} is more than the {max_t} epochs a trial runs")


def main() -> None:
    args = _arguments()
    if args.one:
        method, seed, task = args.one
        if args.emulate:  # the GP's asks run on torch's threads: the cores shared among the searches at once
            import torch

            torch.set_num_threads(max(1, (os.cpu_count() or 1) // args.parallel))
        print(json.dumps((emulated_search if args.emulate else one_search)(args, method, int(seed), task)))
        return
    schedule = "the schedule" if args.grace_period is None else f"grace period {args.grace_period}"
    space = args.space.relative_to(ROOT) if args.space.is_relative_to(ROOT) else args.space
    table = f" (the nearest of {args.points} random points)" if args.points else ""
    print(f"{args.benchmark} benchmark{table}, {space}'s searcher and {schedule}: {args.seeds} seeds x "
          f"{args.trials} trials, {args.concurrent} at once, on the CPU; reference: random (search + ASHA)")
    tasks = {}
    for task in args.tasks:
        searches = _searches(args, task)
        tasks[task] = efficiency.measure(searches)
        _print_task(task, tasks[task], searches, "seconds" if args.benchmark == "lcbench" else "epochs")
    figures = {"tasks": tasks, "median_ratio": efficiency.median_ratios(tasks)}
    print("median ratio over tasks: " + ", ".join(f"{m} {'inf' if r is None else f'{r:.2f}'}"
                                                  for m, r in figures["median_ratio"].items()))
    print("target: configured's median ratio <= 0.50 (inf: never reached random search's best)")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=1) + "\n")
        print(f"figures in {args.json}")


if __name__ == "__main__":
    main()
