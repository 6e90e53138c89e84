"""Run a search: `python -m search.run --space spaces/cnn.yaml [--data PATH] [--storage DIR] ...`.

The run folder STORAGE/NAME holds the resolved space file (space.yaml), Tune's experiment
state, one folder per trial (metrics.jsonl, grids/, checkpoints) and trials.parquet.
Running the same command again resumes an interrupted search; --fresh starts over.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from dataclasses import replace
from pathlib import Path

import yaml
from optuna.samplers import TPESampler
from ray import tune

from cvae_core.cli import ArgumentParser
from cvae_core.data import DataError, ImageData, default_source, load_data, split
from results.features import Reference

from .cluster import ClusterError, check_capacity, connect, parse_address
from .final import run_and_report
from .objective import METRIC, MODE, milestones
from .record import absolute_source, check_recorded, record, recorded_extractor
from .schedulers import PatienceStopper, PersistentASHA, ScoreOptunaSearch
from .space import Objective, SpaceError, SpaceFile, load_space, parse_space, run_name_problem, with_inception_weights
from .trainable import prime_on_worker, run_trial, trial_dir_name
from .trials import write_trials_table

SPACE_COPY = "space.yaml"
ASHA_STATE = "asha_state.json"


def trial_dirname(trial) -> str:
    """Short, readable trial folder names: cnn_1a2b3c4d, cnn-arch3-M3_5e6f7a8b."""
    return trial_dir_name(trial.config, trial.trial_id)


def _build_tuner(spec: SpaceFile, run_dir: Path, trainable, resources: dict[str, float]):
    s = spec.search
    scheduler = PersistentASHA(
        run_dir / ASHA_STATE, time_attr="epoch", max_t=s.max_t,
        grace_period=s.grace_period, reduction_factor=s.reduction_factor, metric=METRIC, mode=MODE,
    )
    if spec.space.presets:
        search_alg = None
        param_space = {"preset": tune.grid_search(list(spec.space.presets)),
                       **{k: d.value for k, d in spec.space.top.items()}}
        num_samples = 1
    else:
        sampler = TPESampler(seed=s.seed, n_startup_trials=s.n_startup_trials)
        # A define-by-run space takes metric/mode here (OptunaSearch ignores TuneConfig's),
        # so they are given to the searcher and scheduler and not to TuneConfig.
        search_alg = ScoreOptunaSearch(space=spec.space, metric=METRIC, mode=MODE, sampler=sampler, seed=s.seed)
        param_space, num_samples = None, s.num_samples
    return tune.Tuner(
        tune.with_resources(trainable, resources),
        param_space=param_space,
        tune_config=tune.TuneConfig(
            search_alg=search_alg, scheduler=scheduler,
            num_samples=num_samples, trial_dirname_creator=trial_dirname,
            max_concurrent_trials=s.max_concurrent or None,
        ),
        run_config=tune.RunConfig(
            name=run_dir.name,
            storage_path=str(run_dir.parent),
            stop=PatienceStopper(s.patience),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=2),  # by recency: see README
            failure_config=tune.FailureConfig(max_failures=0),
            verbose=1,
        ),
    )


def _prepare_objective(run_dir: Path, spec: SpaceFile, data: ImageData) -> Objective:
    """Resolve the objective's feature extractor once, here, and cache the reference's features
    and statistics before any trial needs them (on a GPU node when trials use GPUs)."""
    objective, res = spec.search.objective, spec.search.resources
    weights = spec.final.inception_weights
    extractor = recorded_extractor(run_dir, "search", objective.feature_extractor, weights)
    reference = Reference(data, objective.reference_split, objective.reference_n)
    print(f"search objective: {objective.metric} of {10 * objective.samples_per_class} samples against "
          f"{reference.label}, features from {extractor}", flush=True)
    prime_on_worker(reference, extractor, weights, res.cpu, res.gpu)
    return replace(objective, feature_extractor=extractor)


def _check_storage(storage: Path) -> None:
    """The parent of the run folders is a folder, or can be made one, before anything starts."""
    if storage.exists():
        if not storage.is_dir():
            raise SpaceError(f"--storage {storage}: is a file, not a folder")
        if not os.access(storage, os.W_OK | os.X_OK):
            raise SpaceError(f"--storage {storage}: this user cannot write in it")
        return
    ancestor = next(p for p in storage.parents if p.exists())
    if not ancestor.is_dir() or not os.access(ancestor, os.W_OK | os.X_OK):
        raise SpaceError(f"--storage {storage}: cannot be created ({ancestor} is not a folder this user can write in)")


def _check_run_dir(spec: SpaceFile, run_dir: Path, fresh: bool, source: str) -> bool:
    """Check an existing run folder against this command, changing nothing; True to resume."""
    if not run_dir.exists():
        return False
    if not run_dir.is_dir():
        raise SpaceError(f"{run_dir}: exists and is not a folder; pass another --name")
    if not any(run_dir.iterdir()):
        return False
    copy = run_dir / SPACE_COPY
    if not copy.exists():
        # --fresh deletes a run folder, never a folder of the user's that happens to have the name
        raise SpaceError(f"{run_dir}: exists and is not a search run (no {SPACE_COPY}); "
                         f"nothing was deleted; pass another --name or --storage")
    if fresh:
        return False
    if yaml.safe_load(copy.read_text()) != spec.raw:
        raise SpaceError(
            f"{spec.path}: differs from {copy}, which this run started with; "
            "pass --fresh to start over or --name for a new run"
        )
    check_recorded(run_dir, source)
    return tune.Tuner.can_restore(str(run_dir))


def _check_batch_size(spec: SpaceFile, n_train: int) -> None:
    largest = max(spec.space.top["batch_size"].values())
    if largest > n_train:
        raise SpaceError(f"{spec.path}: space.batch_size: {largest} is more than the {n_train} training images")


def _with_num_samples(spec: SpaceFile, n: int | None) -> SpaceFile:
    """The spec with --num-samples applied; it becomes part of the space as run."""
    if n is None:
        return spec
    if n < 1:
        raise SpaceError(f"--num-samples {n}: must be >= 1")
    if spec.space.presets:
        raise SpaceError(f"--num-samples {n}: not used with space.presets in {spec.path} (each preset runs once)")
    search = {**(spec.raw.get("search") or {}), "num_samples": n}
    return parse_space({**spec.raw, "search": search}, str(spec.path), default_name=spec.name)


def _create_run_dir(spec: SpaceFile, run_dir: Path, fresh: bool, resuming: bool, source: str) -> None:
    if fresh and run_dir.exists():
        shutil.rmtree(run_dir)  # _check_run_dir made sure it is a run folder
    if not resuming:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / SPACE_COPY).write_text(yaml.safe_dump(spec.raw, sort_keys=False))
    record(run_dir, source)


def main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="python -m search.run", description=__doc__.splitlines()[0])
    p.add_argument("--space", required=True, type=Path, help="search space YAML (spaces/*.yaml)")
    p.add_argument("--data", default=None, help=f"zip, image folder or cifar10[:ROOT] (default: {default_source()})")
    p.add_argument("--storage", type=Path, default=Path("runs"), help="parent folder of run folders")
    p.add_argument("--name", default=None, help="run folder name (default: the space's name)")
    p.add_argument("--num-samples", type=int, default=None, help="override search.num_samples")
    p.add_argument("--address", default=None, help="join a running Ray cluster ('auto' or HOST:PORT)")
    p.add_argument("--fresh", action="store_true", help="delete an existing run folder and start over")
    p.add_argument("--inception-weights", default=None,
                   help="torch-fidelity's Inception weights file (pt_inception-2015-12-05), for FID and IS offline")
    args = p.parse_args(argv)

    try:
        if args.name is not None and (problem := run_name_problem(args.name)):
            raise SpaceError(f"--name: {problem}")
        parse_address(args.address)
        spec = _with_num_samples(load_space(args.space), args.num_samples)
        spec = with_inception_weights(spec, args.inception_weights)
        storage = args.storage.expanduser().resolve()
        _check_storage(storage)
        run_dir = storage / (args.name or spec.name)
        source = absolute_source(args.data)
        resuming = _check_run_dir(spec, run_dir, args.fresh, source)
        data = load_data(source)
        _check_batch_size(spec, len(split(data, spec.search.train_on)[0]))
        res = spec.search.resources
        connect(args.address)
        check_capacity(res.cpu, res.gpu, f"{spec.path}: search.resources")
    except (SpaceError, DataError, ClusterError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2

    _create_run_dir(spec, run_dir, args.fresh, resuming, source)
    # Tune saves its experiment state at most every 10 s by default; a kill inside that window
    # would forget trials started meanwhile. Once a second keeps the loss to under a second.
    os.environ.setdefault("TUNE_GLOBAL_CHECKPOINT_S", "1")
    # A trial's score exists from its first ASHA milestone on; Tune would refuse earlier results.
    os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    # A preempted node sends SIGTERM: let Tune save its state as it does for Ctrl-C.
    signal.signal(signal.SIGTERM, lambda *_: os.kill(os.getpid(), signal.SIGINT))

    s = spec.search
    objective = s.objective
    if objective.metric != "val_loss":
        try:
            objective = _prepare_objective(run_dir, spec, data)
        except Exception as e:  # the extractor cannot load, the reference cannot be computed
            print(f"error: search.objective: {e}", file=sys.stderr)
            return 1
    trainable = tune.with_parameters(
        run_trial, data=data, run_dir=str(run_dir), train_on=s.train_on, max_t=s.max_t, patience=s.patience,
        checkpoint_every=s.checkpoint_every, gpu_share=res.gpu, cpus=res.cpu, objective=objective,
        inception_weights=spec.final.inception_weights,
        score_at=milestones(s.grace_period, s.reduction_factor, s.max_t),
    )
    resources = {"cpu": res.cpu, "gpu": res.gpu}
    if resuming:
        print(f"resuming {run_dir}")
        tuner = tune.Tuner.restore(str(run_dir), tune.with_resources(trainable, resources), resume_errored=True)
    else:
        print(f"starting {run_dir}")
        tuner = _build_tuner(spec, run_dir, trainable, resources)
    results = tuner.fit()
    table = write_trials_table(run_dir, patience=spec.search.patience, max_t=spec.search.max_t)
    done = int(table["status"].isin(["TERMINATED", "ERROR"]).sum())
    print(f"{done}/{len(table)} trials finished, {int((table['status'] == 'ERROR').sum())} failed; "
          f"table in {run_dir / 'trials.parquet'}")
    if results.num_terminated + results.num_errors < spec.search.num_samples:
        print(f"interrupted: run the same command to resume {run_dir}")
        return 130
    return run_and_report(run_dir, spec, data)


if __name__ == "__main__":
    # Ray and Tune pickle what this module hands them by reference to it, not by value from __main__.
    from search.run import main as importable_main

    sys.exit(importable_main())
