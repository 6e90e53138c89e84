"""What a run fixed at its start, kept in its folder so later commands agree with it.

RUN_DIR/data.json: the data source, so later commands need not be told again.
RUN_DIR/feature_extractor.json: the feature network each scoring stage resolved `auto` to, once,
on the driver: scores from different networks are not comparable, so a run keeps one.
"""

from __future__ import annotations

import json
from pathlib import Path

from cvae_core.atomic import atomic_write_text
from cvae_core.data import DataError, default_source, is_torchvision

DATA_FILE = "data.json"
EXTRACTOR_FILE = "feature_extractor.json"


def absolute_source(source: str | None) -> str:
    """A path made absolute (trials and later commands run elsewhere); 'cifar10[:ROOT]' as is."""
    source = source if source is not None else default_source()
    if is_torchvision(source):
        return source
    return str(Path(source).expanduser().resolve())


def check_recorded(run_dir: Path, source: str) -> None:
    """Refuse to resume a run on other data than it started with."""
    f = run_dir / DATA_FILE
    if f.exists() and (recorded := json.loads(f.read_text())["source"]) != source:
        raise DataError(f"--data {source}: this run started with {recorded} (in {f}); "
                        "pass that, or --fresh to start over")


def record(run_dir: Path, source: str) -> None:
    if not (run_dir / DATA_FILE).exists():
        atomic_write_text(run_dir / DATA_FILE, json.dumps({"source": source}))


def recorded_source(run_dir: Path, given: str | None) -> str:
    """--data when given, else the data the run recorded, else the default."""
    if given is not None:
        return absolute_source(given)
    f = run_dir / DATA_FILE
    return json.loads(f.read_text())["source"] if f.exists() else absolute_source(None)


def recorded_extractor(run_dir: Path, stage: str, requested: str, inception_weights: str | None) -> str:
    """The feature extractor `stage` scores with: the one the run recorded, else `requested`
    resolved on this machine and recorded. Raises ValueError for an explicit other one."""
    from results.extractors import resolve_extractor

    f = run_dir / EXTRACTOR_FILE
    recorded = json.loads(f.read_text()) if f.exists() else {}
    if stage in recorded:
        if requested not in ("auto", recorded[stage]):
            raise ValueError(f"{stage}.feature_extractor: {requested} differs from {recorded[stage]}, which this "
                             f"run's {stage} scores were computed with (in {f}); scores of two networks do not compare")
        return recorded[stage]
    name = resolve_extractor(requested, inception_weights)
    atomic_write_text(f, json.dumps({**recorded, stage: name}))
    return name
