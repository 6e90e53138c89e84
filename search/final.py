"""Run the final stage alone: `python -m search.final RUN_DIR [--data PATH] [--address auto] [--rescore]`.

It runs at the end of `python -m search.run` too (search.finalists): the best trials are
retrained to convergence, sampled and scored into RUN_DIR/leaderboard.parquet; a rerun does only
what is missing. The command line and the run folder are checked before torch or Ray is imported.
"""

from __future__ import annotations

import sys

from cvae_core.cli import ArgumentParser, path, show_logs, stop_on_sigterm
from cvae_core.sources import DataError
from results.run_folder import RunFileError, open_run
from results.storage import StorageError

from .cluster import ClusterError, check_address
from .settings import RunFolderError, load_spec
from .validation import SpaceError


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m search.final", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=path,
                   help="a search's run folder (holding space.yaml and trials.parquet), or its URI")
    p.add_argument("--data", type=path, default=None, help="the data to use (default: what the search recorded)")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or HOST:PORT)")
    p.add_argument("--rescore", action="store_true",
                   help="score again the rows written before a leaderboard column existed (keeps the training)")
    p.add_argument("--inception-weights", type=path, default=None,
                   help="torch-fidelity's Inception weights file (pt_inception-2015-12-05), for FID and IS offline")
    args = p.parse_args(argv)
    show_logs()
    try:
        check_address(args.address)
        run = open_run(args.run_dir, reader=False)
        if not run.trials_table.exists():
            raise RunFolderError(f"{run.location}: no {run.trials_table.name}; run python -m search.run first")
        run.check_tables()
        spec = load_spec(run.space_file, inception_weights=args.inception_weights)

        from cvae_core.data import load_data  # the heavy part starts here

        from .cluster import check_capacity, connect

        data = load_data(run.source(args.data))
        run.check_data(data)
        res = spec.search.resources
        connect(args.address)
        check_capacity(res.cpu, res.gpu, f"{spec.path}: search.resources")
    except (SpaceError, RunFolderError, RunFileError, DataError, ClusterError, StorageError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for notice in spec.notices:
        print(f"notice: {spec.path}: {notice}", file=sys.stderr)
    from .finalists import run_and_report

    stop_on_sigterm()
    return run_and_report(run, spec, data, args.rescore)


if __name__ == "__main__":
    sys.exit(main())
