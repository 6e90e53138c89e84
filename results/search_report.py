"""The search itself, for results.show: how the score improved, which settings mattered, what ASHA
cut and whether its milestones rank trials as their ends do, from the run's Optuna study
(results.study) and its trials' own records.

The history, the importances and the slice view are Optuna's own (optuna.visualization.matplotlib,
optuna.importance with PED-ANOVA, Optuna 5's default, named here since earlier versions default
to fANOVA). The ASHA figure is drawn here, from each trial's own records: Optuna's
intermediate-value plot knows neither ASHA's milestones nor which trials it stopped, and a presets
run has no study.
"""

from __future__ import annotations

import math
import warnings
from collections import Counter
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from cvae_core.atomic import read_records
from cvae_core.config import STOP_REASONS

from .run_folder import RunFolder, read_table
from .study import ASHA_STOP, FITTED_ON, FITTED_ON_LAST, NoStudy, latest_attempts, study_of

IMPORTANCE = "PED-ANOVA (Optuna's PedAnovaImportanceEvaluator)"
MIN_FOR_IMPORTANCE = 3  # finished trials with a score, fewer give no ranking to speak of
MIN_FOR_AGREEMENT = 4  # trials that ran to their own end, fewer give no rank correlation to speak of


def _save(axes, path: Path) -> None:
    """The figure of Optuna's axes (or of ours), cropped to what is drawn: Optuna lays out its own
    colour bars, which tight_layout would move onto the plots."""
    fig = np.atleast_1d(axes).flat[0].figure
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def _target(study):
    """What the plots show: the score (the first objective, the one ASHA prunes on)."""
    name = (study.metric_names or ["score"])[0]
    if len(study.directions) == 1:
        return None, name
    return (lambda t: t.values[0]), name


def importances(study) -> dict[str, float]:
    from optuna.importance import PedAnovaImportanceEvaluator, get_param_importances

    target, _ = _target(study)
    with warnings.catch_warnings():  # PED-ANOVA is marked experimental in some Optuna versions
        warnings.simplefilter("ignore")
        return get_param_importances(study, evaluator=PedAnovaImportanceEvaluator(), target=target)


def _scores(run: RunFolder, trials: pd.DataFrame) -> dict[str, dict[int, float]]:
    """Each trial's scores (by its trial_dir) by the epoch they were computed at (RunFolder.scores)."""
    return {row.trial_dir: run.scores(Path(row.trial_dir).name, row.objective) for row in trials.itertuples()}


def _milestones(run: RunFolder) -> list[int]:
    return sorted({r["milestone"] for r in read_records(run.asha_state) if "milestone" in r})


def plot_asha(trials: pd.DataFrame, scored: dict[str, dict[int, float]], milestones: list[int], path: Path) -> None:
    """Each trial's score against the epoch it was computed at (`scored`: _scores); the trials ASHA
    stopped marked where they stopped, its milestones as vertical lines."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in trials.itertuples():
        scores = scored[row.trial_dir]
        if not scores:
            continue
        epochs, values = list(scores), list(scores.values())
        stopped = row.stop_reason == ASHA_STOP
        ax.plot(epochs, values, color="tab:red" if stopped else "tab:blue", alpha=0.6, lw=1, marker=".")
        if stopped:
            ax.plot(epochs[-1], values[-1], "x", color="tab:red", ms=8)
    for m in milestones:
        ax.axvline(m, color="k", lw=0.6, ls=":")
    ax.plot([], [], color="tab:blue", label="ran on")
    ax.plot([], [], "x-", color="tab:red", label="stopped by ASHA")
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"score ({trials['objective'].dropna().iloc[0] if trials['objective'].notna().any() else ''})")
    ax.set_title("ASHA: every trial's score at its milestones (dotted)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    _save(ax, path)


def rung_agreement(trials: pd.DataFrame, scored: dict[str, dict[int, float]], milestones: list[int]) -> list[str]:
    """Whether ASHA's milestones rank trials as their ends do: among the trials that ran to their own
    end, the rank correlation of the score at each milestone with the last score. Where it is low,
    ASHA is likely stopping trials that would have ended best (models that converge slowly look
    worst early, as in bench/search_efficiency.py's function), and a longer grace_period would keep
    them. Markdown lines."""
    ended = [s for row in trials.itertuples() if (s := scored[row.trial_dir]) and row.stop_reason in STOP_REASONS]
    if len(ended) < MIN_FOR_AGREEMENT:
        return [(f"Whether ASHA's milestones rank trials as their ends do needs at least {MIN_FOR_AGREEMENT} "
                 f"trials that ran to their own end; this search has {len(ended)}."), ""]
    last = pd.Series([s[max(s)] for s in ended])
    lines = [(f"Do ASHA's milestones rank trials as their ends do? Among the {len(ended)} trials that ran to their "
              "own end (ones ASHA let run on), the rank correlation (Spearman) of each milestone's score with the "
              "last: near 1, the milestone ranks as the end does; near 0 or below, ASHA is likely stopping trials "
              "that would have ended well, and a longer `grace_period` would keep them."), "",
             "| epoch | trials | Spearman |", "|---|---|---|"]
    for m in milestones:
        at = pd.Series([s.get(m, math.nan) if m < max(s) else math.nan for s in ended])
        pairs = at.notna()
        if pairs.sum() >= MIN_FOR_AGREEMENT:
            lines.append(f"| {m} | {pairs.sum()} | {at[pairs].corr(last[pairs], method='spearman'):.2f} |")
    return lines + [""]


def asha_decisions(run: RunFolder, trials: pd.DataFrame) -> list[str]:
    """What ASHA decided: at each milestone, how many trials were scored there, how many it stopped,
    how many it let on because the milestone was not trusted (asha.min_agreement) and how many
    because they run to the end (asha.run_to_end_every); then each stop, on what (the trial's score
    against the cutoff: the best 1/reduction_factor of the scores recorded there before it).
    Markdown lines."""
    records = read_records(run.asha_state)
    forgotten = {r["forget"] for r in records if "forget" in r}  # trials a resume lost (PersistentASHA.keep_only)
    records = [r for r in records if r.get("trial", r.get("let_on")) not in forgotten]
    stops = sorted((r for r in records if "stopped" in r and "milestone" in r),
                   key=lambda r: (r["milestone"], r["score"]))
    let_on = [r for r in records if "let_on" in r and not r.get("runs_to_end")]
    to_end = [r for r in records if "let_on" in r and r.get("runs_to_end")]
    if not stops and not let_on and not to_end:
        return ["ASHA stopped no trial at a milestone.", ""]
    names = {row.trial_id: Path(row.trial_dir).name for row in trials.itertuples()}
    extra = [h for h, kept in [("let on, the milestone not trusted", let_on), ("let on, running to the end", to_end)]
             if kept]
    lines = ["What ASHA decided at each milestone:", "",
             "| " + " | ".join(["epoch", "trials scored there", "stopped there", *extra]) + " |",
             "|---" * (3 + len(extra)) + "|"]
    for m in _milestones(run):
        scored = sum(1 for r in records if r.get("milestone") == m and "rung" in r)
        row = f"| {m} | {scored} | {sum(1 for r in stops if r['milestone'] == m)} |"
        if let_on:
            kept = [r for r in let_on if r["milestone"] == m]
            row += f" {len(kept)}" + (f" (the last: Spearman {_agreement(kept[-1])} over {kept[-1]['finished']} "
                                      "ended trials)" if kept else "") + " |"
        if to_end:
            row += f" {sum(1 for r in to_end if r['milestone'] == m)} |"
        lines.append(row)
    if let_on:
        lines += ["", ("`asha.min_agreement`: ASHA stopped cutting at a milestone where the trials that ended by "
                       "themselves showed that its scores rank them unlike their final scores (below the last "
                       "milestone before the end, judged against its scores where a trial had no final one); "
                       "trials it would have stopped there were let on.")]
    if to_end:
        lines += ["", "`asha.run_to_end_every`: every Nth trial ran to the end whatever its milestones said."]
    if stops:
        lines += ["", "Each stop: the trial's score at the milestone against the cutoff it had to beat.", "",
                  "| trial | stopped at epoch | its score | cutoff | scores compared |", "|---|---|---|---|---|"]
        lines += [f"| {names.get(r['trial'], r['trial'])} | {r['milestone']} | {r['score']:.4g} | "
                  f"{r['cutoff']:.4g} | {r['compared']} |" for r in stops]
    return lines + [""]


def _agreement(record: dict) -> str:
    return "undefined" if record["agreement"] is None else f"{record['agreement']:.2f}"


def searcher_decisions(study) -> list[str]:
    """What the searcher was fitted on to sample each trial (search.milestone_view): how many trials it sampled
    at random, how many from each milestone's scores and how many from every ended trial's last score.
    Markdown lines."""
    counts = Counter(t.user_attrs.get(FITTED_ON) for t in latest_attempts(study.trials))  # None: at random
    if not counts.keys() - {None}:  # no study trials, or none fitted on anything
        return []
    milestones = sorted(k for k in counts if k not in (None, FITTED_ON_LAST))
    rows = [("at random", counts[None]), *((f"from epoch-{m} scores", counts[m]) for m in milestones),
            ("from last scores", counts[FITTED_ON_LAST])]
    lines = ["How the searcher sampled each trial: at random (its start-up), fitted on the scores at one milestone "
             "(the highest with enough of them), or on the last score of every trial that had ended:", "",
             "| sampled | trials |", "|---|---|"]
    return lines + [f"| {label} | {n} |" for label, n in rows if n] + [""]


def _study_figures(study, out: Path) -> list[str]:
    """Optuna's history and slice figures, and the importances table; markdown lines."""
    import optuna.visualization.matplotlib as ovm

    target, name = _target(study)
    finished = [t for t in study.trials if t.state.is_finished() and t.values is not None]
    lines = [f"{len(study.trials)} study trials ({len(finished)} with a score).", ""]
    with warnings.catch_warnings():  # Optuna marks its matplotlib plots experimental
        warnings.simplefilter("ignore")
        if finished:
            _save(ovm.plot_optimization_history(study, target=target, target_name=name), out / "search_history.png")
            _save(ovm.plot_slice(study, target=target, target_name=name), out / "search_slice.png")
            lines += ["![the score over the trials](search_history.png)",
                      "![the score against each setting](search_slice.png)", ""]
            if len(study.directions) > 1:
                _save(ovm.plot_pareto_front(study, target_names=study.metric_names), out / "search_pareto.png")
                lines += [f"![the trials' Pareto front of {', '.join(study.metric_names)}](search_pareto.png)", ""]
    if len(finished) < MIN_FOR_IMPORTANCE:
        return lines + [f"Importances need at least {MIN_FOR_IMPORTANCE} trials with a score; "
                        f"this search has {len(finished)}.", ""]
    ranked = importances(study)
    lines += [f"Which settings mattered for {name}, by {IMPORTANCE}:", "", "| setting | importance |", "|---|---|"]
    lines += [f"| `{k}` | {v:.3f} |" for k, v in ranked.items() if not math.isnan(v)]
    return lines + [""]


def write_search_section(run: RunFolder, out: Path) -> list[str]:
    """Write the search's figures into `out`; the markdown lines of report.md's section on it."""
    lines = ["## The search", ""]
    if run.trials_table.exists():
        trials = read_table(run.trials_table)
        scored, milestones = _scores(run, trials), _milestones(run)
        plot_asha(trials, scored, milestones, out / "asha.png")
        lines += ["![ASHA: the score of every trial at its milestones](asha.png)", "",
                  *rung_agreement(trials, scored, milestones), *asha_decisions(run, trials)]
    try:
        study = study_of(run)  # its files pulled already
    except NoStudy as e:
        return lines + [f"{e}.", ""]
    return lines + searcher_decisions(study) + _study_figures(study, out)
