"""How well each milestone ranks configurations as their final scores do, synthetic vs LCBench.

The synthetic function and LCBench's real curves are bench/search_efficiency.py's two benchmarks
(CPU, nothing trained, no search here).

ASHA cuts a trial on its score at a milestone. Where that score ranks the configurations a search
is after (the best ones) as their final scores do, cutting costs little; where it does not, it cuts
the trials the search is for. For --configs random configurations (Optuna's RandomSampler,
--seed) this prints, per benchmark, the Spearman correlation of each milestone's score with the
final one: over the best 10% by final score, and over all of them (a diverging configuration of
the synthetic function is left out). The synthetic function (spaces/cnn.yaml's space, with its
noise) is read at cnn.yaml's ASHA milestones, 5, 15 and 45 of 100 epochs; each LCBench task, the
baseline beside it, at the same milestones of its 52 epochs (as search_efficiency.py runs it) and
at the same shares of its horizon (3, 8, 23 of 52). About 40 s for all 34 tasks on 2 idle cores.

    python bench/milestone_ranking.py
    python bench/milestone_ranking.py --tasks 7593,126025 --configs 1000
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(ROOT / "bench"))

import lcbench  # noqa: E402  (bench/, beside this script)
import search_efficiency  # noqa: E402

BEST_SHARE = 0.1  # "the best": this share of the configurations by final score (at least MIN_BEST of them)
MIN_BEST = 10


def rank_agreement(scores: list[dict[int, float]], final: int) -> dict[int, tuple[float, float]]:
    """For each epoch but `final`: Spearman's correlation of the scores there with those at `final`,
    over the best BEST_SHARE by final score and over all."""
    import pandas as pd

    df = pd.DataFrame(scores)
    best = df.nsmallest(max(MIN_BEST, round(BEST_SHARE * len(df))), final)
    return {int(e): (best[e].corr(best[final], method="spearman"), df[e].corr(df[final], method="spearman"))
            for e in df.columns if e != final}


def _configs(space, n: int, seed: int):
    """n configurations of `space` (a define-by-run function of an Optuna trial), drawn at random."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(n):
        trial = study.ask()
        yield trial.number, space(trial)
        study.tell(trial, 0.0)


def synthetic_scores(n: int, seed: int) -> tuple[list[dict[int, float]], tuple[int, ...], int]:
    """The synthetic function's scores at cnn.yaml's milestones and max_t, for n random configurations."""
    from search.objective import milestones
    from search.seeds import TRIAL_NUMBER
    from search.settings import load_spec

    spec = load_spec(search_efficiency.SPACE_FILE)
    asha = spec.search.asha
    epochs = tuple(sorted(milestones(asha.grace_period, asha.reduction_factor, asha.max_t) - {asha.max_t}))
    scores = []
    for number, config in _configs(spec.space, n, seed):
        score, _, fail_at = search_efficiency.synthetic_curve({**config, TRIAL_NUMBER: number}, seed)
        if fail_at is None:
            scores.append({e: score(e) for e in (*epochs, asha.max_t)})
    return scores, epochs, asha.max_t


def lcbench_scores(folder: lcbench.Folder, task: str, epochs: tuple[int, ...], n: int,
                   seed: int) -> list[dict[int, float]]:
    """The task's validation error at `epochs` and the last epoch, for n random configurations."""
    scores = []
    for _, config in _configs(lcbench.Space(folder), n, seed):
        error, _ = lcbench.curve(folder, task, config)
        scores.append({e: error[e - 1] for e in (*epochs, lcbench.EPOCHS)})
    return scores


def _row(name: str, agreement: dict[int, tuple[float, float]]) -> str:
    cells = (f"{e}: {best:+.2f} / {every:+.2f}" for e, (best, every) in agreement.items())
    return f"  {name:<10}" + "".join(f"{cell:>22}" for cell in cells)


def _arguments() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", help="LCBench's OpenML task ids, comma-separated (default: every task)")
    p.add_argument("--lcbench", type=Path, default=lcbench.DEFAULT_DIR, help="the surrogate's folder")
    p.add_argument("--configs", type=int, default=400, help="random configurations per benchmark")
    p.add_argument("--seed", type=int, default=0, help="seeds the random configurations")
    args = p.parse_args()
    if args.configs < MIN_BEST:
        p.exit(2, f"error: --configs: {args.configs} must be >= {MIN_BEST}\n")
    try:
        args.folder = lcbench.read_folder(args.lcbench)
    except lcbench.LCBenchError as e:
        p.exit(2, f"error: --lcbench {e}\n")
    args.tasks = sorted(args.folder.task_codes) if args.tasks is None else args.tasks.split(",")
    try:
        lcbench.check_tasks(args.folder, args.tasks)
    except lcbench.LCBenchError as e:
        p.exit(2, f"error: --tasks: {e}\n")
    return args


def main() -> None:
    args = _arguments()
    scores, epochs, max_t = synthetic_scores(args.configs, args.seed)
    shares = tuple(max(1, round(e * lcbench.EPOCHS / max_t)) for e in epochs)
    print(f"Spearman correlation with the final score, best {BEST_SHARE:.0%} / all of {args.configs} random "
          f"configurations (epoch: best / all)")
    print(f"synthetic ({max_t} epochs):")
    print(_row("", rank_agreement(scores, max_t)))
    print(f"LCBench ({lcbench.EPOCHS} epochs), at the same milestones and at the same shares of the horizon:")
    read_at = tuple(sorted({*epochs, *shares}))
    among_best = {e: [] for e in read_at}  # each task's correlation over its best configurations
    for task in args.tasks:
        agreement = rank_agreement(lcbench_scores(args.folder, task, read_at, args.configs, args.seed), lcbench.EPOCHS)
        print(_row(task, agreement), flush=True)
        for e, (best, _) in agreement.items():
            among_best[e].append(best)
    print("LCBench over its tasks, the best configurations (lowest / median): " + ", ".join(
        f"epoch {e}: {min(r):+.2f} / {statistics.median(r):+.2f}" for e, r in among_best.items()))


if __name__ == "__main__":
    main()
