"""Regenerate images from a leaderboard row.

    python -m results.sample RUN_DIR --row 0 [--class cat] [--n 64] [--sampler gmm] [--seed 0] --out grid.png

--row is the position in the leaderboard (0 = lowest FID). Without --class the grid has one
row per class. Everything comes from the row: its weights, its sampler (unless --sampler says
otherwise) and that sampler's settings, and the data it was trained on ("gmm" refits its
mixtures on those training images; --data points elsewhere; "two_stage" loads the second VAE the
final stage fitted and saved beside the weights).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd

from cvae_core.cli import ArgumentParser, number
from cvae_core.sources import absolute_source

from .names import SAMPLERS
from .run_folder import Finalist, RunFolder


def class_index(name: str, classes: list[str]) -> int:
    if name in classes:
        return classes.index(name)
    if name.isdigit() and int(name) < len(classes):
        return int(name)
    raise ValueError(f"--class {name!r} is not one of {list(classes)} or an index below {len(classes)}")


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m results.sample", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=Path)
    p.add_argument("--row", type=int, default=0, help="leaderboard position, 0 = best FID")
    p.add_argument("--class", dest="cls", default=None, help="class name or index (default: every class)")
    p.add_argument("--n", type=number(int, at_least=1), default=10, help="images (per class without --class)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the row's sampler")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data", default=None, help="default: the data the row was trained on")
    p.add_argument("--device", default=None, help="default: cuda when present")
    p.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = p.parse_args(argv)
    run = RunFolder(args.run_dir)
    try:
        if not run.leaderboard.exists():
            raise ValueError(f"{run.leaderboard}: no leaderboard; run python -m search.final {args.run_dir}")
        board = pd.read_parquet(run.leaderboard)
        if not 0 <= args.row < len(board):
            raise ValueError(f"--row {args.row}: the leaderboard has rows 0..{len(board) - 1}")
        row = board.iloc[args.row]
        if not Path(row["checkpoint"]).exists():
            raise ValueError(f"{row['checkpoint']}: checkpoint of row {args.row} not found")
        if any(pd.isna(row[c]) for c in ("train_on", "gmm_components", "data_source")):
            raise ValueError(f"row {args.row} was written before rows named their data and sampler settings; "
                             f"fill them in with python -m search.final {args.run_dir} --rescore")
        sampler = args.sampler or row["sampler"]
        fitted = Finalist(Path(row["checkpoint"]).parent).two_stage
        if sampler == "two_stage" and not fitted.exists():
            raise ValueError(f"{fitted}: row {args.row} has no fitted two_stage sampler; the final stage fits one "
                             "when final.samplers lists two_stage")

        from cvae_core.data import load_data, split  # the heavy part starts here

        data = load_data(absolute_source(args.data) if args.data is not None else row["data_source"])
        cls = class_index(args.cls, list(data.classes)) if args.cls is not None else None
    except ValueError as e:  # DataError included
        print(f"error: {e}", file=sys.stderr)
        return 2

    from cvae_core.grids import image_grid
    from cvae_core.training import load_model, resolve_device

    from . import two_stage
    from .samplers import generate, save_sample_grid

    train_x, train_y, _, _ = split(data, row["train_on"])
    device = resolve_device(args.device)
    model = load_model(row["checkpoint"], device)
    second = two_stage.load(fitted, device) if sampler == "two_stage" else None
    images = generate(model, sampler, args.n, train_x, train_y, components=int(row["gmm_components"]),
                      seed=args.seed, second_stage=second)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    if cls is not None:
        images = images[cls * args.n : (cls + 1) * args.n]
        image_grid(images, nrow=math.ceil(math.sqrt(args.n))).save(args.out)
    else:
        save_sample_grid(images, args.n, args.out, data.classes, columns=args.n)
    what = data.classes[cls] if cls is not None else "every class"
    print(f"{args.out}: {len(images)} images of {what} from row {args.row} "
          f"({row['trial_id']} seed {row['seed']}, {sampler})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
