"""What one ask of spaces/cnn.yaml's searcher costs the driver, with greenlet and without, in one run.

Tune's driver asks the searcher for each new trial's settings (OptunaSearch.suggest) and handles
nothing else meanwhile. cnn.yaml's Gaussian process (Optuna's GPSampler) optimises its
acquisition function with L-BFGS-B from several starting points; with the `greenlet` package
Optuna runs those starts as one batch of torch calls, without it one after another (Optuna warns
so). This bench asks the configured sampler for --trials trials, one at a time, each told the
synthetic function's final score of its settings (bench/search_efficiency.final_score, plus the
same noise) once --concurrent trials run (the GP then optimises qLogEI, over the running trials
too, which costs more than the EI of one), and prints the median seconds per ask over windows of the study's size: with
greenlet (this process), without it (a process of its own in which `import greenlet` fails), and
TPE's (search.settings.Searcher's defaults, the earlier default, told last scores: these trials
have no milestone scores for its milestone view to fit on). Each
run samples its own trials (batched and sequential optimisation differ in their last digits, so
the studies part), so compare windows, not trials. torch's threads: all cores, as in a driver.

    python bench/ask_cost.py
    python bench/ask_cost.py --trials 256 --concurrent 8
"""

from __future__ import annotations

import argparse
import json
import math
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

from search_efficiency import SPACE_FILE, final_score  # noqa: E402  (bench/, beside this script)


def ask_seconds(model: str, trials: int, concurrent: int, seed: int) -> list[float]:
    """Seconds of each ask (the sampler's work for every setting of a new trial), trial by trial,
    `concurrent` trials running: each ask comes after the oldest running trial is told its score."""
    import optuna

    from search.searcher import new_sampler
    from search.settings import Searcher, load_spec

    optuna.logging.set_verbosity(optuna.logging.ERROR)
    spec = load_spec(SPACE_FILE)
    searcher = spec.search.searcher
    if model == "tpe":
        searcher = Searcher(n_startup_trials=searcher.n_startup_trials, fit_on="last")
    study = optuna.create_study(sampler=new_sampler(searcher, seed))
    noise, seconds, running = random.Random(seed), [], []
    for _ in range(trials):
        if len(running) == concurrent:
            trial, score = running.pop(0)
            study.tell(trial, state=optuna.trial.TrialState.FAIL) if math.isinf(score) else study.tell(trial, score)
        start = time.perf_counter()
        trial = study.ask()
        config = spec.space(trial)
        seconds.append(time.perf_counter() - start)
        running.append((trial, final_score(config) + noise.gauss(0.0, 3.0)))
    return seconds


def without_greenlet() -> list[float]:
    """The GP's ask seconds, with this run's flags, in a process of its own where `import greenlet`
    fails, as where it is not installed."""
    cmd = [sys.executable, __file__, "--without-greenlet", *sys.argv[1:]]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"error: the run without greenlet failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def windows(trials: int, start: int) -> list[tuple[int, int]]:
    """[first, last) trial indices: the start-up (random: no model), then windows doubling from 32 up to --trials."""
    edges, edge = [0, min(start, trials)], 32
    while edge < trials:
        if edge > edges[-1]:
            edges.append(edge)
        edge *= 2
    edges.append(trials)
    return [(first, last) for first, last in zip(edges, edges[1:]) if first < last]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=128)
    p.add_argument("--concurrent", type=int, default=4, help="trials running at each ask, as in a search (cnn.yaml: "
                   "4 on a GPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--without-greenlet", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args()
    for flag in ("trials", "concurrent"):
        if getattr(args, flag) < 1:
            p.exit(2, f"error: --{flag}: {getattr(args, flag)} must be >= 1\n")
    if args.without_greenlet:
        sys.modules["greenlet"] = None  # before Optuna is imported: its try_import then fails
        print(json.dumps(ask_seconds("gp", args.trials, args.concurrent, args.seed)))
        return
    import importlib.util

    import torch

    from search.settings import load_spec

    if importlib.util.find_spec("greenlet") is None:
        sys.exit("error: greenlet is not installed here; pip install -e . installs it")
    searcher = load_spec(SPACE_FILE).search.searcher
    if searcher.model != "gp":
        sys.exit(f"error: {SPACE_FILE}: its searcher is {searcher.model}, not a Gaussian process")
    print(f"spaces/cnn.yaml's searcher (a GP, {searcher.n_startup_trials} start-up trials), {args.trials} asks, "
          f"{args.concurrent} trials running, on the CPU with {torch.get_num_threads()} torch threads; "
          "median seconds per ask")
    runs = {"GP with greenlet": ask_seconds("gp", args.trials, args.concurrent, args.seed),
            "GP without greenlet": without_greenlet(),
            "TPE": ask_seconds("tpe", args.trials, args.concurrent, args.seed)}
    print(f"  {'trials':<12}" + "".join(f"{name:>24}" for name in runs) + f"{'speed-up':>10}")
    for first, last in windows(args.trials, searcher.n_startup_trials):
        medians = [statistics.median(s[first:last]) for s in runs.values()]
        print(f"  {f'{first + 1}-{last}':<12}" + "".join(f"{m:>24.3f}" for m in medians)
              + f"{medians[1] / medians[0]:>9.1f}x")
    totals = [sum(s) for s in runs.values()]
    print(f"  {'all, total':<12}" + "".join(f"{t:>23.1f}s" for t in totals) + f"{totals[1] / totals[0]:>9.1f}x")


if __name__ == "__main__":
    main()
