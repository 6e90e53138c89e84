"""One importable training function for a cVAE, used by the CLI and the Ray trainable.

The data lives on the training device as uint8 tensors for the whole run; each step indexes
a random permutation and converts to float there (no DataLoader, no per-image Python).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from .atomic import append_records, atomic_torch_save, keep_records
from .config import (
    GRID_EVERY,
    MAX_EPOCHS,
    MAX_EPOCHS_STOP,
    PATIENCE,
    PATIENCE_STOP,
    REDUCTION,
    REDUCTIONS,
    REPORT,
    ConfigError,
    ModelConfig,
    Recipe,
    batch_size_problem,
)
from .grids import first_of_each_class, save_training_grids
from .layout import BEST_FILE, CHECKPOINT_FILE, GRID_CLASSES, GRIDS_DIR, METRICS_FILE, grids_after
from .losses import neg_elbo
from .models import CVAE, build_model

VAL_BATCH = 2048
VAL_SEED = 1234  # the same validation noise every epoch, so epochs compare without sampling noise


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite; training stopped instead of hiding it."""

    def __init__(self, epoch: int, train_loss: float, val_loss: float):
        self.epoch, self.train_loss, self.val_loss = epoch, train_loss, val_loss
        super().__init__(f"loss diverged at epoch {epoch} (train_loss={train_loss}, val_loss={val_loss})")

    def __reduce__(self):
        # Ray pickles a trial's exception to record it; the default reduce passes only the message.
        return type(self), (self.epoch, self.train_loss, self.val_loss)


@dataclass(frozen=True)
class TrainResult:
    best_val_loss: float  # the training objective per validation image, nats (see evaluate)
    best_epoch: int
    epochs_run: int
    stop_reason: str  # one of config.STOP_REASONS (_Progress.stop_reason)
    model: CVAE  # holding the best weights


def resolve_device(device: str | torch.device | None = None) -> torch.device:
    """The one place that decides device and precision: cuda when present, TF32 matmuls there."""
    dev = torch.device(device) if device is not None else torch.device(
        "cuda" if torch.cuda.is_available() else "cpu"
    )
    if dev.type == "cuda":
        # TF32 and autotuned convs were measured faster; bf16 autocast was slower for these
        # small, launch-bound models (issue 2), so the loop stays fp32.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
    return dev


def _check_args(recipe, epochs, patience, reduction, grid_every, checkpoint_every, n_train):
    if not isinstance(recipe, Recipe):
        raise ValueError(f"recipe={recipe!r} must be a cvae_core.Recipe")
    if problem := batch_size_problem(recipe.batch_size, n_train):
        raise ValueError(f"recipe.batch_size: {problem}")
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ValueError(f"{epochs=} must be an integer >= 1")
    if not (isinstance(patience, int) and patience >= 1):
        raise ValueError(f"{patience=} must be an integer >= 1")
    if reduction not in REDUCTIONS:
        raise ValueError(f"{reduction=} must be one of {list(REDUCTIONS)}")
    if not (isinstance(grid_every, int) and grid_every >= 0):
        raise ValueError(f"{grid_every=} must be an integer >= 0 (0 = never)")
    if not (isinstance(checkpoint_every, int) and checkpoint_every >= 0):
        raise ValueError(f"{checkpoint_every=} must be an integer >= 0 (0 = never)")


def _optimizer(model: CVAE, recipe: Recipe, device: torch.device) -> torch.optim.Optimizer:
    """Adam, the report's; AdamW (decoupled weight decay, Loshchilov & Hutter 2019) when the recipe
    decays the weights."""
    fused = device.type == "cuda"
    if recipe.weight_decay:
        return torch.optim.AdamW(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay, fused=fused)
    return torch.optim.Adam(model.parameters(), lr=recipe.lr, fused=fused)


def _averaged(model: CVAE, recipe: Recipe) -> AveragedModel | None:
    """The exponential moving average of the weights (and of BatchNorm's statistics) when the
    recipe keeps one: torch's AveragedModel, updated after every step."""
    if not recipe.ema:
        return None
    return AveragedModel(model, multi_avg_fn=get_ema_multi_avg_fn(recipe.ema), use_buffers=True)


def _loss(model: CVAE, x, y, beta: float, reduction: str, generator=None) -> torch.Tensor:
    logits, mu, logvar = model(x, y, generator)
    cfg = model.cfg
    return neg_elbo(
        logits, x, mu, logvar,
        likelihood=cfg.likelihood, sigma=cfg.sigma, log_sigma=model.log_sigma,
        beta=beta, reduction=reduction,
    )


@torch.no_grad()
def evaluate(model: CVAE, x_u8: torch.Tensor, y: torch.Tensor) -> float:
    """The training objective (reconstruction + beta * KL, summed over pixels and latents) per image,
    in nats: the negative ELBO when beta = 1, the report's. With the model's own beta, since the kept
    weights are chosen by it: a beta-VAE's KL grows as it trains, and its ELBO would keep the first
    epoch's weights."""
    was_training = model.training
    model.eval()
    gen = torch.Generator(device=x_u8.device).manual_seed(VAL_SEED)
    total = torch.zeros((), device=x_u8.device, dtype=torch.float64)
    for i in range(0, len(x_u8), VAL_BATCH):
        x = x_u8[i : i + VAL_BATCH].float().div_(255)
        total += _loss(model, x, y[i : i + VAL_BATCH], model.cfg.beta, "sum", gen).double()
    model.train(was_training)
    return total.item() / len(x_u8)


def _rng_state(device: torch.device) -> dict[str, torch.Tensor]:
    state = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def epoch_line(metrics: dict[str, Any]) -> str:
    """One epoch's record as a progress line."""
    return (f"epoch {metrics['epoch']:4d}  train {metrics['train_loss']:.2f}  val {metrics['val_loss']:.2f}  "
            f"best {metrics['best_val_loss']:.2f} (epoch {metrics['best_epoch']})")


@dataclass
class _Progress:
    """Where a training stands: with the weights, the optimiser and the RNG, what a checkpoint holds."""

    epoch: int = 0
    best_val_loss: float = math.inf
    best_epoch: int = 0
    epochs_since_best: int = 0

    def stop_reason(self, patience: int, epochs: int) -> str | None:
        if self.epochs_since_best >= patience:
            return PATIENCE_STOP
        return MAX_EPOCHS_STOP if self.epoch >= epochs else None


def _copy(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


def _lr_factor(recipe: Recipe, steps_per_epoch: int, epochs: int) -> Callable[[int], float]:
    """The learning rate's factor after `step` optimiser steps: a linear warm-up over
    recipe.warmup_epochs, then constant or a cosine decay to 0 at the end of epoch `epochs`."""
    warm, total = recipe.warmup_epochs * steps_per_epoch, epochs * steps_per_epoch

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if recipe.lr_schedule == "cosine":
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warm) / max(1, total - warm))))
        return 1.0

    return factor


class _Training:
    """One training's model, optimiser, learning-rate schedule, averaged weights and progress: what
    a checkpoint holds. `steps_per_epoch` and `epochs` place the schedule."""

    def __init__(self, model_cfg: ModelConfig, recipe: Recipe, dev: torch.device, compile: bool,
                 steps_per_epoch: int, epochs: int):
        self.model_cfg, self.recipe, self.dev = model_cfg, recipe, dev
        self.model = build_model(model_cfg).to(dev)
        self.optimizer = _optimizer(self.model, recipe, dev)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(self.optimizer, _lr_factor(recipe, steps_per_epoch, epochs))
        self.ema = _averaged(self.model, recipe)
        self.kept = self.ema.module if self.ema is not None else self.model  # validated, kept, drawn, saved
        # CUDA graphs ("reduce-overhead") were measured fastest for these launch-bound models.
        mode = "reduce-overhead" if dev.type == "cuda" else None
        self.step_model = torch.compile(self.model, mode=mode) if compile else self.model
        self.progress, self.best_state = _Progress(), _copy(self.kept.state_dict())

    def restore(self, checkpoint: dict[str, Any]) -> None:
        """Continue from `checkpoint` (see `make_checkpoint`), bit for bit."""
        self.model.load_state_dict(checkpoint["model"])
        self.optimizer.load_state_dict(checkpoint["optimizer"])
        if "lr_schedule" in checkpoint:  # a checkpoint from before schedules had a constant rate
            self.schedule.load_state_dict(checkpoint["lr_schedule"])
        if self.ema is not None:
            self.ema.load_state_dict(checkpoint["ema"])
        self.best_state = {k: v.to(self.dev) for k, v in checkpoint["best_state"].items()}
        self.progress = _Progress(checkpoint["epoch"], checkpoint["best_val_loss"], checkpoint["best_epoch"],
                                  checkpoint["epochs_since_best"])
        _set_rng_state(checkpoint["rng"], self.dev)

    def _train_epoch(self, x_u8: torch.Tensor, y: torch.Tensor, reduction: str) -> float:
        """floor(N / batch_size) steps over a fresh permutation; the mean loss per image ("sum") or
        per element ("mean")."""
        recipe, n = self.recipe, len(x_u8)
        steps, size = n // recipe.batch_size, recipe.batch_size
        perm = torch.randperm(n, device=x_u8.device)
        total = torch.zeros((), device=x_u8.device)
        for i in range(steps):
            idx = perm[i * size : (i + 1) * size]
            loss = _loss(self.step_model, x_u8[idx].float().div_(255), y[idx], self.model_cfg.beta, reduction)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if recipe.grad_clip:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), recipe.grad_clip)
            self.optimizer.step()
            self.schedule.step()
            if self.ema is not None:
                self.ema.update_parameters(self.model)
            total += loss.detach()
        return total.item() / steps / (size if reduction == "sum" else 1)

    def make_checkpoint(self) -> dict[str, Any]:
        return {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
                "lr_schedule": self.schedule.state_dict(),
                "best_state": self.best_state, **asdict(self.progress), "rng": _rng_state(self.dev),
                "model_config": self.model_cfg.to_dict(),
                **({"ema": self.ema.state_dict()} if self.ema is not None else {})}

    def epoch(self, train_x, train_y, val_x, val_y, reduction: str, patience: int, epochs: int) -> dict[str, Any]:
        """Train one epoch, validate, keep the weights when they are the best so far: the epoch's record."""
        progress = self.progress
        progress.epoch += 1
        t0 = time.perf_counter()
        lr = self.optimizer.param_groups[0]["lr"]
        train_loss = self._train_epoch(train_x, train_y, reduction)
        step_seconds = time.perf_counter() - t0
        val_loss = evaluate(self.kept, val_x, val_y)
        if math.isfinite(train_loss) and math.isfinite(val_loss) and val_loss < progress.best_val_loss:
            progress.best_val_loss, progress.best_epoch, progress.epochs_since_best = val_loss, progress.epoch, 0
            self.best_state = _copy(self.kept.state_dict())
        else:
            progress.epochs_since_best += 1
        stop = progress.stop_reason(patience, epochs)
        return {**_epoch_record(progress, train_loss, val_loss, stop, step_seconds, t0), "lr": lr, **_sigma(self.kept)}

    def finish(self, stop: str, out: Path | None) -> TrainResult:
        """Load the best weights (and save them as BEST_FILE in `out`); the model, in eval mode, as
        best.pt gives it, so that whatever encodes with it next leaves BatchNorm's statistics alone."""
        self.model.load_state_dict(self.best_state)
        self.model.eval()
        if out is not None:
            atomic_torch_save({"model": self.model.state_dict(), "model_config": self.model_cfg.to_dict(),
                               "epoch": self.progress.best_epoch}, out / BEST_FILE)
        return TrainResult(best_val_loss=self.progress.best_val_loss, best_epoch=self.progress.best_epoch,
                           epochs_run=self.progress.epoch, stop_reason=stop, model=self.model)


def train(
    model_cfg: ModelConfig,
    train_x: torch.Tensor,
    train_y: torch.Tensor,
    val_x: torch.Tensor,
    val_y: torch.Tensor,
    *,
    recipe: Recipe = REPORT,
    epochs: int = MAX_EPOCHS,
    patience: int = PATIENCE,
    reduction: str = REDUCTION,
    seed: int = 0,
    device: str | torch.device | None = None,
    compile: bool = False,
    out_dir: str | Path | None = None,
    grid_every: int = GRID_EVERY,
    checkpoint_every: int = 1,
    resume: dict[str, Any] | None = None,
    callback: Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None] | None = None,
) -> TrainResult:
    """Train with the recipe's optimiser until `epochs` or `patience` epochs without a better
    validation loss.

    Images are uint8 (N, C, S, S) as model_cfg is built for, labels int64; they are moved to `device` once. Every
    epoch trains on floor(N / recipe.batch_size) full batches of a fresh permutation. With
    `recipe.ema` the averaged weights are the ones validated, kept, drawn in grids and saved.

    out_dir: if given, receives METRICS_FILE (one record per epoch), GRIDS_DIR every
    `grid_every` epochs, CHECKPOINT_FILE every `checkpoint_every` epochs and at the last, and
    BEST_FILE at the end.
    Each epoch's record says whether training stops after it (`stop`: one of config.STOP_REASONS, or None).
    resume: a checkpoint dict (see `make_checkpoint`) to continue from, bit for bit.
    callback(metrics, make_checkpoint) is called after every epoch; make_checkpoint() builds
    the checkpoint dict only when the caller wants one.
    Raises TrainingDiverged on a NaN/inf loss.
    """
    _check_args(recipe, epochs, patience, reduction, grid_every, checkpoint_every, len(train_x))
    _check_data(model_cfg, train_x, train_y)
    _check_data(model_cfg, val_x, val_y)
    dev = resolve_device(device)
    out = Path(out_dir) if out_dir is not None else None
    torch.manual_seed(seed)
    run = _Training(model_cfg, recipe, dev, compile, len(train_x) // recipe.batch_size, epochs)
    train_x, train_y, val_x, val_y = train_x.to(dev), train_y.to(dev), val_x.to(dev), val_y.to(dev)
    if resume is not None:
        run.restore(resume)
    if out is not None:
        _forget_unfinished(out, run.progress.epoch)
    fixed = {} if out is None or not grid_every else _grid_images(train_x, train_y, val_x, val_y,
                                                                   model_cfg.num_classes)
    stop = run.progress.stop_reason(patience, epochs)  # a resumed run may already be done
    run.model.train()
    while stop is None:
        metrics = run.epoch(train_x, train_y, val_x, val_y, reduction, patience, epochs)
        stop = metrics["stop"]
        if out is not None:
            out.mkdir(parents=True, exist_ok=True)
            append_records(out / METRICS_FILE, [metrics])
        if not (math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])):
            raise TrainingDiverged(metrics["epoch"], metrics["train_loss"], metrics["val_loss"])
        if out is not None:
            _save_epoch_files(run, out, metrics, fixed, grid_every, checkpoint_every)
        if callback is not None:
            callback(metrics, run.make_checkpoint)
    return run.finish(stop, out)


def _save_epoch_files(run: _Training, out: Path, metrics: dict[str, Any], fixed, grid_every: int,
                      checkpoint_every: int) -> None:
    """The grids every `grid_every` epochs and the checkpoint every `checkpoint_every` epochs and at the last."""
    if grid_every and metrics["epoch"] % grid_every == 0:
        save_training_grids(run.kept, out / GRIDS_DIR, metrics["epoch"], fixed)
    # At the last epoch too: a run resumed after it was done knows it, and trains no more.
    if checkpoint_every and (metrics["epoch"] % checkpoint_every == 0 or metrics["stop"] is not None):
        atomic_torch_save(run.make_checkpoint(), out / CHECKPOINT_FILE)


def _forget_unfinished(out: Path, epoch: int) -> None:
    """The records and grids of epochs after `epoch`, where training starts: an attempt killed
    after its last checkpoint left them, and this one may not get as far (a GPU does not repeat a
    run bit for bit; patience may stop it sooner), so they would read as this run's."""
    keep_records(out / METRICS_FILE, lambda r: r["epoch"] <= epoch)
    for grid in grids_after(out, epoch):
        grid.unlink()


def _check_data(cfg: ModelConfig, x: torch.Tensor, y: torch.Tensor) -> None:
    """The model is built for these images and labels (ModelConfig's data fields)."""
    if x.dtype != torch.uint8:  # as floats they would train at the wrong scale, and the validation
        # images would be divided by 255 in place every epoch
        raise ConfigError(f"images are {x.dtype}; train() takes uint8 images (0..255), as ImageData holds them")
    want = (cfg.channels, cfg.image_size, cfg.image_size)
    if tuple(x.shape[1:]) != want:
        raise ConfigError(f"the model is built for images {want} (channels, height, width); the data's are "
                          f"{tuple(x.shape[1:])}: build its ModelConfig with the data's shape (ImageData.shape)")
    if len(y) and int(y.max()) >= cfg.num_classes:
        raise ConfigError(f"the model is built for {cfg.num_classes} classes; the data has label {int(y.max())}")


def _grid_images(train_x, train_y, val_x, val_y, classes: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """The images the training grids reconstruct every time: the first of each class per split
    (of the first GRID_CLASSES classes)."""
    shown = min(classes, GRID_CLASSES)
    first_train, first_val = first_of_each_class(train_y, shown), first_of_each_class(val_y, shown)
    return {"train": (train_x[first_train], train_y[first_train]), "test": (val_x[first_val], val_y[first_val])}


def _epoch_record(progress: _Progress, train_loss: float, val_loss: float, stop: str | None, step_seconds: float,
                  t0: float) -> dict[str, Any]:
    return {
        "epoch": progress.epoch,
        "train_loss": train_loss,
        "val_loss": val_loss,
        "best_val_loss": progress.best_val_loss,
        "best_epoch": progress.best_epoch,
        "epochs_since_best": progress.epochs_since_best,
        "stop": stop,
        "step_seconds": step_seconds,  # the optimisation steps alone
        "epoch_seconds": time.perf_counter() - t0,  # plus validation
        "time": time.time(),  # wall clock at the epoch's end, for throughput across processes
    }


def _sigma(model: CVAE) -> dict[str, float]:
    """The learned sigma of a gaussian_learned model, in pixel units."""
    return {"sigma": model.log_sigma.detach().exp().item()} if model.log_sigma is not None else {}


def load_model(path: str | Path, device: str | torch.device = "cpu") -> CVAE:
    """A model saved as BEST_FILE (or any dict with "model" and "model_config")."""
    blob = torch.load(path, map_location=device, weights_only=True)
    model = build_model(ModelConfig.from_dict(blob["model_config"])).to(device)
    model.load_state_dict(blob["model"])
    return model.eval()
