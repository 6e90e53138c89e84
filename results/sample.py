"""Regenerate images from a leaderboard row.

    python -m results.sample RUN_DIR --row 0 [--class cat] [--n 64] [--sampler gmm] [--seed 0] --out grid.png

--row is the position in the leaderboard (0 = lowest FID). Without --class the grid has one
row per class. Everything comes from the row: its weights, its sampler (unless --sampler says
otherwise) and that sampler's settings, and the data it was trained on ("gmm" refits its
mixtures on those training images; --data points elsewhere; "two_stage" loads the second VAE the
final stage fitted and saved beside the weights).

By default the draw is the one the row was scored on: the row's seed and its images per class
(n_samples over the number of classes), on the kind of device the row was scored on, so the
images are those its FID was computed from: exactly on a CPU (tests/test_sample.py), on a GPU up to
cuDNN's rounding. --seed, --n, --sampler or --device draw others.
"""

from __future__ import annotations

import argparse
import io
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cvae_core.atomic import image_format
from cvae_core.cli import ArgumentParser, HeldStderr, device, first_line, number, out_file, path
from cvae_core.config import MAX_SEED
from cvae_core.sources import absolute_source

from .names import SAMPLERS
from .run_folder import Finalist, RunFileError, open_run

if TYPE_CHECKING:  # imported where used: --help and argument errors answer at once
    import pandas as pd


def class_index(name: str, classes: list[str]) -> int:
    if name in classes:
        return classes.index(name)
    if name.isascii() and name.isdigit() and int(name) < len(classes):
        return int(name)
    raise ValueError(f"--class {name!r} is not one of {list(classes)} or an index below {len(classes)}")


def scored_per_class(row: pd.Series, classes: int) -> int:
    """The images per class the row was scored on: its n_samples are `classes` x that many."""
    import pandas as pd

    if pd.isna(row["n_samples"]):
        raise ValueError("the row does not say how many images it scored; give --n")
    return int(row["n_samples"]) // classes


def scored_device(row: pd.Series) -> str | None:
    """The row's kind of device (None: cuda when present): drawn on another kind, the decoder's
    rounding may differ in a pixel or a GMM's fit in its last digits."""
    return "cpu" if row.get("device") == "cpu" else None


def _image_file(text: str) -> Path:
    """--out: a file name whose suffix is a format Pillow writes, where a file can be made."""
    out = out_file(text)
    if image_format(out) is None:  # Pillow's formats; light, unlike what drawing needs
        raise argparse.ArgumentTypeError(f"{text}: not an image file name (its suffix picks the format: .png, .jpg)")
    return out


def parse_args(argv: list[str] | None):
    p = ArgumentParser(prog="python -m results.sample", description=__doc__.splitlines()[0])
    p.add_argument("run_dir", type=path, help="a run folder, or its URI")
    p.add_argument("--row", type=int, default=0, help="leaderboard position, 0 = best FID")
    p.add_argument("--class", dest="cls", default=None, help="class name or index (default: every class)")
    p.add_argument("--n", type=number(int, at_least=1), default=None,
                   help="images per class (default: as many as the row scored)")
    p.add_argument("--sampler", choices=SAMPLERS, default=None, help="default: the row's sampler")
    p.add_argument("--seed", type=number(int, at_least=0, at_most=MAX_SEED), default=None,
                   help="default: the row's seed, which its images were drawn with")
    p.add_argument("--data", type=path, default=None, help="default: the data the row was trained on")
    p.add_argument("--device", type=device, default=None,
                   help="default: the kind the row was scored on (cpu, else cuda when present)")
    p.add_argument("--out", type=_image_file, required=True, help="image to write, e.g. samples.png")
    return p.parse_args(argv)


def leaderboard_row(run_dir: str | Path, index: int) -> pd.Series:
    """Row `index` of the run's leaderboard (a run at a URI: with its finalist's weights brought to
    this node), checked to hold what regenerating its images needs."""
    run = open_run(run_dir)
    if not run.path.is_dir():  # a mistyped path
        raise ValueError(f"{run.location}: no run folder there")
    if not run.leaderboard.exists():
        raise ValueError(f"{run.location}/{run.leaderboard.name}: no leaderboard; run python -m search.final "
                         f"{run_dir}")
    import pandas as pd

    from .leaderboard import NO_ROWS, read_leaderboard

    board = read_leaderboard(run.path)
    if board.empty:
        raise ValueError(f"{run.location}/{run.leaderboard.name}: {NO_ROWS}; python -m search.final {run_dir} "
                         "retries them")
    if not 0 <= index < len(board):
        raise ValueError(f"--row {index}: the leaderboard has rows 0..{len(board) - 1}")
    row = board.iloc[index].copy()
    row["checkpoint"] = str(run.finalist_file(row["checkpoint"]))
    run.pull(Path(row["checkpoint"]).parent, recursive=False)
    if not Path(row["checkpoint"]).exists():
        raise ValueError(f"{row['checkpoint']}: checkpoint of row {index} not found")
    if any(pd.isna(row[c]) for c in ("train_on", "gmm_components", "data_source")):
        raise ValueError(f"row {index} was written before rows named their data and sampler settings; "
                         f"fill them in with python -m search.final {run_dir} --rescore")
    return row


def fitted_second_stage(row: pd.Series, sampler: str, index: int) -> Path:
    """Where the row's two_stage fit is saved; a ValueError when the sampler needs it and it is not there."""
    fitted = Finalist(Path(row["checkpoint"]).parent).two_stage
    if sampler == "two_stage" and not fitted.exists():
        raise ValueError(f"{fitted}: row {index} has no fitted two_stage sampler; the final stage fits one "
                         "when final.samplers lists two_stage")
    return fitted


def load_weights(row: pd.Series, sampler: str, index: int, device: str | None):
    """The row's model on `device`, and its two_stage fit when `sampler` draws with it: read before
    the data, so that a damaged file costs no loading, as one RunFileError naming it."""
    from cvae_core.training import load_model, resolve_device

    from . import two_stage

    fitted = fitted_second_stage(row, sampler, index)
    device = resolve_device(device)
    model = _read_weights(load_model, Path(row["checkpoint"]), device, f"row {index}'s weights do")
    if sampler != "two_stage":
        return model, None
    return model, _read_weights(two_stage.load, fitted, device, f"row {index}'s two_stage fit does")


def _read_weights(load, path: Path, device, what: str):
    try:
        return load(path, device)
    except Exception as e:  # torch fails in many ways on a file it cannot read: RuntimeError (cut short),
        # IsADirectoryError, UnpicklingError, a KeyError for another kind of checkpoint; what it said is
        # kept, for the failure that is not the file's (out of memory on the device)
        raise RunFileError(f"{path}: {what} not read back (cut short, or not a checkpoint?): "
                           f"{type(e).__name__}: {first_line(e)}") from None


def check_shape(row: pd.Series, data, index: int) -> None:
    """A ValueError when `data` is not what the row's model was built for: its images and classes
    could not go through the encoder (gmm, two_stage) nor be told apart by the classes."""
    from cvae_core.config import DATA_FIELDS, describe_shape

    built_for = {k: int(row[k]) for k in DATA_FIELDS}
    if built_for != data.shape:
        raise ValueError(f"--data {data.source}: holds {describe_shape(data.shape)}; row {index}'s model was built "
                         f"for {describe_shape(built_for)}: pass the data it was trained on")


def draw(row: pd.Series, sampler: str, per_class: int, seed: int, data, model, second):
    """The row's model's images, `per_class` per class, class by class: as the final stage drew them."""
    from cvae_core.data import split

    from .samplers import generate

    train_x, train_y, _, _ = split(data, row["train_on"])
    return generate(model, sampler, per_class, train_x, train_y, components=int(row["gmm_components"]),
                    seed=seed, second_stage=second)


def _square(n: int) -> int:
    """Columns of a one-class grid: as many as its rows."""
    return math.ceil(math.sqrt(n))


def grid_image(per_class: int, cls: int | None, classes: Sequence[str], shape: dict[str, int]) -> tuple[str, int, int]:
    """(Pillow mode, width, height) of the image `save` writes."""
    from cvae_core.grids import grid_size

    from .samplers import sample_grid_size

    side = shape["image_size"]
    if cls is not None:
        return ("L" if shape["channels"] == 1 else "RGB", *grid_size(per_class, _square(per_class), side, side))
    return ("RGB", *sample_grid_size(per_class, classes, side, side, columns=per_class))


def check_writable(image: tuple[str, int, int], out: Path, per_class: int) -> None:
    """A ValueError, before any image is drawn, when Pillow cannot write `image` in `out`'s format
    (JPEG and WebP bound each side, GIF's header holds 16 bits) or would refuse to open it (more
    than twice Image.MAX_IMAGE_PIXELS, its guard against decompression bombs)."""
    from PIL import Image

    mode, width, height = image
    grid = f"{out}: {per_class} images per class make a grid of {width:,} x {height:,} pixels"
    limit = Image.MAX_IMAGE_PIXELS and 2 * Image.MAX_IMAGE_PIXELS
    if limit and width * height > limit:
        raise ValueError(f"{grid}, more than Pillow opens ({limit:,}); give a smaller --n")
    fmt = image_format(out)
    for size in ((1, 1), (width, 1), (1, height)):  # a format's bounds are per side: thin probes cost nothing
        if (reason := _write_problem(Image.new(mode, size), fmt)) is None:
            continue
        if size == (1, 1):
            raise ValueError(f"{out}: Pillow cannot write {mode} images as {fmt} ({reason}); write a .png")
        raise ValueError(f"{grid}, more than a {out.suffix} file holds ({reason}); give a smaller --n, or write "
                         "a .png")


def _write_problem(image, fmt: str) -> str | None:
    """Why Pillow cannot write `image` as `fmt`, or None. Its writers fail in many ways (OSError,
    ValueError, OverflowError, struct.error...), and libjpeg prints its reason to fd 2 first."""
    held = HeldStderr()
    try:
        image.save(io.BytesIO(), format=fmt)
        error = None
    except Exception as e:  # any of them means the file cannot be written
        error = e
    finally:
        printed = held.release().strip()
    return None if error is None else (printed or first_line(error))


def save(images, per_class: int, cls: int | None, classes, out: Path) -> None:
    from cvae_core.atomic import atomic_save_image
    from cvae_core.grids import image_grid

    from .samplers import save_sample_grid

    out.parent.mkdir(parents=True, exist_ok=True)
    if cls is not None:
        grid = image_grid(images[cls * per_class : (cls + 1) * per_class], nrow=_square(per_class))
        atomic_save_image(grid, out)
    else:
        save_sample_grid(images, per_class, out, classes, columns=per_class)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        row = leaderboard_row(args.run_dir, args.row)
        sampler = args.sampler or row["sampler"]
        device = args.device if args.device is not None else scored_device(row)
        model, second = load_weights(row, sampler, args.row, device)

        from cvae_core.data import load_data  # the heavy part, after every file of the run is read

        data = load_data(absolute_source(args.data) if args.data is not None else row["data_source"])
        check_shape(row, data, args.row)
        cls = class_index(args.cls, list(data.classes)) if args.cls is not None else None
        per_class = args.n if args.n is not None else scored_per_class(row, len(data.classes))
        check_writable(grid_image(per_class, cls, data.classes, data.shape), args.out, per_class)
    except ValueError as e:  # DataError included
        print(f"error: {e}", file=sys.stderr)
        return 2
    seed = args.seed if args.seed is not None else int(row["seed"])
    images = draw(row, sampler, per_class, seed, data, model, second)
    save(images, per_class, cls, data.classes, args.out)
    what = data.classes[cls] if cls is not None else "every class"
    count = per_class if cls is not None else len(images)
    print(f"{args.out}: {count} images of {what} from row {args.row} "
          f"({row['trial_id']} seed {row['seed']}, {sampler}; drawn with seed {seed}, {per_class} per class)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
