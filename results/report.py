"""The report results.show writes: the leaderboard's figures and report.md, whose section on the
search results.search_report writes. Imported by the command only once its arguments are read:
matplotlib and pandas take a second to load."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on a GPU node
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import EngFormatter, MaxNLocator, NullFormatter  # noqa: E402
from PIL import Image  # noqa: E402

from cvae_core.atomic import atomic_write_text  # noqa: E402
from cvae_core.layout import GRID_CLASSES, read_metrics  # noqa: E402

from .leaderboard import NO_ROWS, SHOWN, read_leaderboard  # noqa: E402
from .run_folder import REPORT_FILE, RunFolder  # noqa: E402
from .search_report import write_search_section  # noqa: E402


def located(run: RunFolder, board: pd.DataFrame) -> pd.DataFrame:
    """The leaderboard with its finalists' files where they are now (RunFolder.finalist_file)."""
    return board.assign(**{c: board[c].map(lambda p: str(run.finalist_file(p))) for c in ("checkpoint", "sample_grid")})


def label(row) -> str:
    return f"{row.trial_id} s{row.seed} {row.sampler}"


def plot_samples(top: pd.DataFrame, path: Path) -> None:
    fig, axes = plt.subplots(1, len(top), figsize=(4 * len(top), 4.8), squeeze=False)
    for ax, row in zip(axes[0], top.itertuples()):
        if Path(row.sample_grid).exists():
            ax.imshow(Image.open(row.sample_grid))
        ax.set_title(f"{label(row)}\nFID {row.fid:.1f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _class_bars(ax, names: list[str], values, color: str, lower_is_better: bool, title: str) -> None:
    """One bar per class, named; with more classes than GRID_CLASSES (CIFAR-100's 100), sorted from
    best to worst with only the best and the worst named, which stays readable."""
    values = np.asarray(values, dtype=float)
    if len(names) <= GRID_CLASSES:
        ax.bar(names, values, color=color)
        ax.tick_params(axis="x", labelrotation=45, labelsize=8)
        ax.set_title(title, fontsize=9)
        return
    order = np.argsort(values if lower_is_better else -values, kind="stable")
    ax.bar(range(len(order)), values[order], color=color, width=1.0)
    ax.set_xticks([0, len(order) - 1], [names[order[0]], names[order[-1]]], fontsize=8)
    ax.set_xlabel(f"{len(names)} classes, best to worst", fontsize=8)
    best, worst = order[0], order[-1]
    ax.set_title(f"{title}\nbest {names[best]} {values[best]:.2f}, worst {names[worst]} {values[worst]:.2f}",
                 fontsize=9)


def plot_per_class(top: pd.DataFrame, path: Path) -> None:
    """Per top row: each class's FID against its real images, and how often the probe recognises it."""
    fig, axes = plt.subplots(len(top), 2, figsize=(11, 2.6 * len(top)), squeeze=False)
    for (ax_fid, ax_acc), row in zip(axes, top.itertuples()):
        if row.fid_per_class is None:  # scored before per-class measures existed
            for ax in (ax_fid, ax_acc):
                ax.text(0.5, 0.5, "not scored per class (rescore: search.final --rescore)", ha="center")
                ax.axis("off")
            continue
        names = list(row.classes) if row.classes is not None else [str(c) for c in range(len(row.fid_per_class))]
        _class_bars(ax_fid, names, row.fid_per_class, "tab:red", lower_is_better=True,
                    title=f"{label(row)}: FID per class (intra-FID {row.intra_fid:.1f})")
        _class_bars(ax_acc, names, row.class_accuracy_per_class, "tab:blue", lower_is_better=False,
                    title=f"{label(row)}: recognised as its class ({row.class_accuracy:.2f})")
        ax_acc.axhline(row.probe_accuracy_real, color="k", ls="--", lw=1, label="real test images")
        ax_acc.set_ylim(0, 1)
        ax_acc.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_precision_recall(board: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(5, 4.5))
    measured = board.dropna(subset=["precision", "recall"])
    for sampler, group in measured.groupby("sampler"):
        ax.scatter(group["recall"], group["precision"], label=sampler, alpha=0.8)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("recall (real images covered)")
    ax.set_ylabel("precision (samples that look real)")
    if len(measured):
        ax.legend(title="sampler")
    else:  # scored before precision/recall existed
        ax.text(0.5, 0.5, "not measured (rescore: search.final --rescore)", ha="center")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def fid_vs_params_figure(board: pd.DataFrame):
    """FID against parameters, each sampler's Pareto front (leaderboard `pareto`) joined by a line."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for sampler, group in board.groupby("sampler"):
        points = ax.scatter(group["params"], group["fid"], label=sampler, alpha=0.8)
        if "pareto" in group:
            front = group[group["pareto"].fillna(False).astype(bool)].sort_values("params")
            ax.step(front["params"], front["fid"], where="post", color=points.get_facecolor()[0], lw=1, alpha=0.6)
    # Within a decade a log axis labels its minor ticks and they collide: stay linear there.
    if board["params"].max() >= 10 * board["params"].min():
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(NullFormatter())
    else:
        ax.xaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_formatter(EngFormatter())
    ax.set_xlabel("parameters")
    ax.set_ylabel("FID (lower is better)")
    ax.legend(title="sampler")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


def plot_fid_vs_params(board: pd.DataFrame, path: Path) -> None:
    fig = fid_vs_params_figure(board)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_val_loss(board: pd.DataFrame, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    # one curve per training: both samplers of a (trial, seed) share it
    for row in board.drop_duplicates(["trial_id", "seed"]).itertuples():
        records = read_metrics(Path(row.checkpoint).parent)
        if records:
            ax.plot([r["epoch"] for r in records], [r["val_loss"] for r in records],
                    label=f"{row.trial_id} s{row.seed}")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation loss (rec. + β·KL per image)")
    if ax.lines:
        ax.legend(fontsize=8)
    else:  # the finalists' folders are not where the leaderboard says (moved without them)
        ax.text(0.5, 0.5, "no finalist's training records found", ha="center", transform=ax.transAxes)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def leaderboard_section(board: pd.DataFrame, top_n: int, out: Path) -> list[str]:
    """Write the leaderboard's figures into `out`; the markdown lines of report.md's section on it."""
    top = board.head(top_n)
    plot_samples(top, out / "samples.png")
    plot_per_class(top, out / "per_class.png")
    plot_precision_recall(board, out / "precision_recall.png")
    plot_fid_vs_params(board, out / "fid_vs_params.png")
    plot_val_loss(board, out / "val_loss.png")
    return [
        "## Leaderboard",
        "",
        f"{len(board)} rows; reference `{', '.join(board['reference'].unique())}`, "
        f"feature extractor `{', '.join(board['feature_extractor'].unique())}`.",
        "",
        "```",
        top[SHOWN].to_string(index=False),
        "```",
        "",
        "![samples of the top rows](samples.png)",
        "![per-class FID and class accuracy of the top rows](per_class.png)",
        "![precision and recall of every row](precision_recall.png)",
        "![FID vs parameters](fid_vs_params.png)",
        "![validation loss of the finalists](val_loss.png)",
        "",
    ]


def write_report(run: RunFolder, top_n: int, out: Path | None = None) -> Path:
    """Write RUN/report/, or `out` (the leaderboard, once there is one, and the search), and
    return the path of its report.md. Its commands name the run as the user does (its URI, for a
    run in a bucket), not this node's copy."""
    out = out or run.report_dir
    out.mkdir(parents=True, exist_ok=True)
    md = [f"# {run.name}", ""]
    board = read_leaderboard(run.path) if run.leaderboard.exists() else None
    if board is not None and len(board):
        md += leaderboard_section(located(run, board), top_n, out)
    elif board is not None:
        md += [f"{NO_ROWS} (`python -m search.final {run.location}` retries them).", ""]
    else:
        md += [f"No leaderboard yet: run `python -m search.final {run.location}`.", ""]
    md += write_search_section(run, out)
    atomic_write_text(out / REPORT_FILE, "\n".join(md))
    return out / REPORT_FILE
