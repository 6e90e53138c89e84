"""Which data a run used, kept in RUN_DIR/data.json so later commands need not be told again."""

from __future__ import annotations

import json
from pathlib import Path

from cvae_core.atomic import atomic_write_text
from cvae_core.data import DataError, default_source, is_torchvision

DATA_FILE = "data.json"


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
