"""Print a run's leaderboard and write a small report beside it.

    python -m results.show RUN_DIR [--top 5] [--out DIR]

RUN_DIR (a folder, or a URI such as s3://bucket/prefix/NAME) /report/, or --out DIR, gets
report.md (the top rows, linking the figures), samples.png (the per-class sample grids of the top
rows), per_class.png (their FID and class accuracy per class), precision_recall.png (every row),
fid_vs_params.png and val_loss.png (validation-loss curves of every finalist training), and a
section on the search (results.search_report): search_history.png, search_slice.png, asha.png and
the importance of each setting. Everything is read from files the run already holds; before the
final stage the report shows the search alone.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from cvae_core.cli import ArgumentParser, file_in_the_way, not_a_folder, number, out_folder, path

from .run_folder import REPORT_FILE, RunFileError, open_run
from .storage import StorageError

TOP = 5  # leaderboard rows printed and shown


def report_folder(text: str) -> Path:
    """An argparse type for --out: a folder the report may write its files into, replacing those
    of the same names, so one that is new, empty, or an earlier report's (it holds report.md); a
    folder of other files may hold the user's own samples.png."""
    out = out_folder(text)
    try:  # hidden files aside (.DS_Store): the report writes none
        others = out.is_dir() and not (out / REPORT_FILE).exists() and any(
            not entry.name.startswith(".") for entry in out.iterdir())
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{text}: cannot be read ({e.strerror})") from None
    if others:
        raise argparse.ArgumentTypeError(f"{text}: holds other files and no {REPORT_FILE}, and the report would "
                                         "replace any of the same names; name a new or empty folder")
    return out


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m results.show", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=path, help="a run folder, or its URI")
    p.add_argument("--top", type=number(int, at_least=1), default=TOP, help="rows to print and show samples of")
    p.add_argument("--out", type=report_folder, default=None,
                   help="a new or empty folder, or an earlier report's, to write the report in "
                        "(default: RUN_DIR/report)")
    args = p.parse_args(argv)
    try:
        run = open_run(args.run_dir)
    except StorageError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if not run.path.is_dir():  # a mistyped path: search.final would not find it either
        print(f"error: {run.location}: no run folder there", file=sys.stderr)
        return 2
    # a search still running (or killed) has its study, and trials.parquet only once it has ended
    if not any(path.exists() for path in (run.leaderboard, run.trials_table, run.study_journal)):
        problem = ("its search has not ended (running, or interrupted: its search.run command resumes it) and has "
                   "nothing to show yet" if run.is_run() else "not a run folder (python -m search.run makes one)")
        print(f"error: {run.location}: {problem}", file=sys.stderr)
        return 2
    if args.out is None and (file := file_in_the_way(run.report_dir)) is not None:
        print(f"error: {file} {not_a_folder(file)}: the report goes there (or give --out DIR)", file=sys.stderr)
        return 2
    run.pull(keep=lambda path: path.suffix != ".pt")  # a run at a URI: its records and images, not its weights
    try:
        run.check_tables()
    except RunFileError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import pandas as pd  # only now: --help and input errors answer at once

    from .leaderboard import NO_ROWS, SHOWN, read_leaderboard
    from .report import write_report

    board = read_leaderboard(run.path) if run.leaderboard.exists() else None
    if board is not None and len(board):
        with pd.option_context("display.width", 200, "display.max_columns", 20):
            print(board.head(args.top)[SHOWN].to_string(index=False))
    elif board is not None:
        print(f"{NO_ROWS} (python -m search.final {args.run_dir} retries them); the report shows the search")
    elif run.trials_table.exists():
        print(f"no leaderboard yet (python -m search.final {args.run_dir}); the report shows the search")
    else:
        print("the search has not ended (no trials.parquet yet): the report shows its study so far")
    report = write_report(run, args.top, args.out)
    if args.out is None and run.remote:
        run.push(run.report_dir)
        report = f"{run.location}/{report.relative_to(run.path).as_posix()}"
    print(f"report: {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
