"""Train one cVAE: `python -m cvae_core.train --preset cnn-arch3-M3 --data PATH --epochs N --out DIR`.

Writes DIR/config.json (the resolved settings) and a training folder (cvae_core.layout):
metrics.jsonl, grids/*.png, checkpoint.pt (for --resume) and best.pt (the best weights).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import fields
from pathlib import Path

from .atomic import atomic_write_text
from .cli import ArgumentParser, device, number, out_folder, path
from .config import (
    CHOICES,
    CIFAR10_SHAPE,
    GRID_EVERY,
    MAX_EPOCHS,
    MAX_SEED,
    PATIENCE,
    RANGES,
    REDUCTION,
    REDUCTIONS,
    REPORT,
    Recipe,
    TrialConfig,
    batch_size_problem,
    describe_shape,
)
from .layout import BEST_FILE, CHECKPOINT_FILE, CONFIG_FILE, GRIDS_DIR, METRICS_FILE
from .presets import PRESETS, preset_config
from .sources import TORCHVISION_NAMES, TRAIN_ON, DataError, absolute_source, default_source


def _in_range(name: str):
    """An argparse type for a numeric Recipe field: its range (cvae_core.config.RANGES), answered at once."""
    r = RANGES[name]
    parse = number(int if r.kind == "int" else float)

    def in_range(text: str):
        value = parse(text)
        if problem := r.bound_problem(value):
            raise argparse.ArgumentTypeError(f"{value} {problem}")
        return value

    return in_range


def _flag(field: str) -> str:
    return "--" + field.replace("_", "-")


def _add_recipe_flags(p: ArgumentParser) -> None:
    """A flag per Recipe field (--batch-size for batch_size), its default the report's recipe's
    and its help the field's."""
    for f in fields(Recipe):
        default, help = getattr(REPORT, f.name), f.metadata["help"]
        check = {"choices": CHOICES[f.name]} if f.name in CHOICES else {"type": _in_range(f.name)}
        p.add_argument(_flag(f.name), **check, default=default, help=f"{help} (default {default})")


def _parser() -> ArgumentParser:
    p = ArgumentParser(prog="python -m cvae_core.train", description=__doc__.splitlines()[0])
    p.add_argument("--preset", required=True, choices=sorted(PRESETS), metavar="NAME",
                   help=f"one of the report's models: {', '.join(sorted(PRESETS))}")
    p.add_argument("--data", type=path, default=None,
                   help=f"zip, image folder, or {'|'.join(TORCHVISION_NAMES)}[:ROOT] (default: {default_source()})")
    p.add_argument("--out", required=True, type=out_folder, help="output folder")
    p.add_argument("--epochs", type=number(int, at_least=1), default=MAX_EPOCHS)
    _add_recipe_flags(p)
    p.add_argument("--patience", type=number(int, at_least=1), default=PATIENCE,
                   help="epochs without a better val loss before stopping")
    p.add_argument("--reduction", choices=REDUCTIONS, default=REDUCTION)
    p.add_argument("--train-on", choices=TRAIN_ON, default="train",
                   help="'all' adds the test split to training, as the report did")
    p.add_argument("--seed", type=number(int, at_least=0, at_most=MAX_SEED), default=0)
    p.add_argument("--device", type=device, default=None, help="default: cuda when present, else cpu")
    p.add_argument("--compile", action="store_true", help="torch.compile the model")
    p.add_argument("--grid-every", type=number(int, at_least=0), default=GRID_EVERY,
                   help="epochs between image grids (0 = never)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/checkpoint.pt")
    return p


def _checkpoint_path(p: ArgumentParser, args: argparse.Namespace) -> Path:
    """OUT's checkpoint: there to resume from, and never silently overwritten; without --resume
    OUT is empty or new, so that no file of the user's is written over."""
    ckpt_path = args.out / CHECKPOINT_FILE
    if ckpt_path.exists() and not args.resume:
        p.error(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
    if args.resume and not ckpt_path.exists():
        p.error(f"--resume: {ckpt_path} does not exist")
    held = sorted(f.name for f in args.out.iterdir()) if args.out.is_dir() else []
    if not args.resume and held and not _left_in_a_first_epoch(args.out, held):
        p.error(f"argument --out: {args.out} holds {len(held)} file(s) ({', '.join(held[:3])}"
                f"{', ...' if len(held) > 3 else ''}) and no run to resume: choose an empty or new folder")
    return ckpt_path


def _left_in_a_first_epoch(out: Path, held: list[str]) -> bool:
    """Whether OUT holds only what this command, stopped before its first checkpoint, left: its
    config.json, and the records and grids train() forgets as it starts again."""
    if CONFIG_FILE not in held or not set(held) <= {CONFIG_FILE, METRICS_FILE, GRIDS_DIR}:
        return False
    try:
        recorded = json.loads((out / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(recorded, dict) and "args" in recorded


def _read_checkpoint(p: ArgumentParser, path: Path) -> dict:
    """The checkpoint to resume from, read before anything is written."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch's own message, for a file it cannot unpickle, is about weights_only
        p.error(f"argument --resume: {path} cannot be read as a checkpoint ({type(e).__name__}): cut short, "
                "or not one this program wrote; choose another --out to start over")


def _write_config(args: argparse.Namespace, trial: TrialConfig) -> None:
    """OUT/config.json: the resolved settings, and the command line's arguments with the data's
    source made absolute (`source`), which a resume compares."""
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    settings["source"] = absolute_source(args.data)
    args.out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(args.out / CONFIG_FILE, json.dumps({**trial.to_dict(), "args": settings}, indent=2))


# Flags besides the recipe that a run keeps: the data it trains on and the loss it minimises.
_RESUMED_AS_STARTED = ("train_on", "reduction")


def _resume_problem(args: argparse.Namespace, trial: TrialConfig) -> str | None:
    """Why OUT's run cannot go on with these flags: its model, recipe, training split or loss
    differs from theirs (a checkpoint restores the weights and optimizer it was saved with, and
    would ignore a new --lr), or, under a cosine schedule, its number of epochs."""
    path = args.out / CONFIG_FILE
    try:
        recorded = json.loads(path.read_text())
        was_args = recorded.pop("args", {}) if isinstance(recorded, dict) else {}
        was = TrialConfig.from_dict(recorded)
    except (OSError, ValueError) as e:
        return f"{path} cannot be read ({e}): the run's settings are unknown"
    if was.model != trial.model:
        return f"{args.out} trained --preset {was_args.get('preset')}, not {args.preset}"
    if "source" in was_args and was_args["source"] != absolute_source(args.data):  # recorded since stop 53
        return f"{args.out} trained on --data {was_args['source']}, not {absolute_source(args.data)}"
    old = {**was.recipe.to_dict(), **{k: was_args.get(k, getattr(args, k)) for k in _RESUMED_AS_STARTED}}
    new = {**trial.recipe.to_dict(), **{k: getattr(args, k) for k in _RESUMED_AS_STARTED}}
    if trial.recipe.lr_schedule == "cosine":  # its decay ends with the last epoch
        old["epochs"], new["epochs"] = was_args.get("epochs", args.epochs), args.epochs
    changed = [f"{_flag(k)} {old[k]} (not {new[k]})" for k in new if old[k] != new[k]]
    return f"{args.out} trained with {', '.join(changed)}" if changed else None


def main(argv: list[str] | None = None) -> int:
    p = _parser()
    args = p.parse_args(argv)
    ckpt_path = _checkpoint_path(p, args)

    from .data import load_data, split  # torch only now: --help and input errors answer at once
    from .training import TrainingDiverged, epoch_line, train

    cfg = preset_config(args.preset)
    recipe = Recipe(**{f.name: getattr(args, f.name) for f in fields(Recipe)})
    if args.resume and (problem := _resume_problem(args, TrialConfig(cfg, recipe))):
        p.error(f"argument --resume: {problem}; continue it with the same settings, or choose another --out")
    try:
        data = load_data(args.data)
    except DataError as e:
        print(f"error: --data: {e}", file=sys.stderr)
        return 2
    if data.shape != CIFAR10_SHAPE:
        p.error(f"argument --preset: the report's presets are CIFAR-10 models ({describe_shape(CIFAR10_SHAPE)}); "
                f"--data {data.source} is {describe_shape(data.shape)}")
    train_x, train_y, val_x, val_y = split(data, args.train_on)
    if problem := batch_size_problem(args.batch_size, len(train_x)):
        p.error(f"argument --batch-size: {problem}")
    resume = _read_checkpoint(p, ckpt_path) if args.resume else None
    _write_config(args, TrialConfig(cfg, recipe))

    def show(metrics, _make_checkpoint):
        print(f"{epoch_line(metrics)}  {metrics['epoch_seconds']:.2f}s", flush=True)

    try:
        result = train(
            cfg, train_x, train_y, val_x, val_y,
            recipe=recipe, epochs=args.epochs, patience=args.patience,
            reduction=args.reduction, seed=args.seed, device=args.device, compile=args.compile,
            out_dir=args.out, grid_every=args.grid_every, resume=resume, callback=show,
        )
    except TrainingDiverged as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(
        f"stopped ({result.stop_reason}) after {result.epochs_run} epochs; best val loss "
        f"{result.best_val_loss:.2f} at epoch {result.best_epoch}; weights in {args.out / BEST_FILE}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
