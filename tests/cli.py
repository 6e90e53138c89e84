"""Helpers for tests that run the commands in subprocesses, as a user does."""

from __future__ import annotations

import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# The cheapest final stage that still trains, samples with both samplers and scores.
TINY_FINAL = {"top_k": 1, "max_epochs": 2, "patience": 2, "checkpoint_every": 1, "samples_per_class": 3,
              "samplers": ["prior", "gmm"], "gmm_components": 2, "feature_extractor": "tiny-random"}


# Trials ranked by FID/KID of 30 samples against the whole (tiny) train split, with the tiny extractor.
TINY_OBJECTIVE = {"metric": "fid", "samples_per_class": 3, "reference": {"n": None}, "feature_extractor": "tiny-random"}


def tiny_space(tmp_path: Path, final: dict | None = None, **search) -> Path:
    raw = {
        "name": "t",
        "space": {"family": "mlp", "mlp": {"layers": 1, "width": 32}, "latent": 4,
                  "lr": {"loguniform": [1e-3, 1e-2]}, "batch_size": 40},
        "search": {"num_samples": 3, "max_concurrent": 1, "searcher": {"n_startup_trials": 3},
                   "asha": {"max_t": 4, "grace_period": 4, "reduction_factor": 2},
                   "patience": 10, "checkpoint_every": 1, "grid_every": 2, "resources": {"cpu": 1},
                   "objective": TINY_OBJECTIVE, **search},
        "final": {**TINY_FINAL, **(final or {})},
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def command(space: Path, data: Path, storage: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "search.run", "--space", str(space), "--data", str(data),
            "--storage", str(storage), *extra]


def final_command(run_dir: Path, data: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "search.final", str(run_dir), "--data", str(data), *extra]


def _environment(env: dict[str, str] | None) -> dict[str, str] | None:
    """This environment with `env` added, the project importable from any working folder (None:
    this environment as it is, for a command run from the project's root)."""
    return None if env is None else {**os.environ, **env, "PYTHONPATH": str(ROOT)}


def run(cmd, timeout=300, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`cmd` to its end, from `cwd` (a user's working folder) with `env` added."""
    return subprocess.run(cmd, cwd=cwd, env=_environment(env), capture_output=True, text=True, timeout=timeout)


def in_process(cmd) -> subprocess.CompletedProcess:
    """`run(cmd)` as a call of the command's `main` in this process, on one Ray cluster per test
    session (fixture `ray_session`: the first command starts it, the later ones keep it): the same
    code without a Ray start per command. What the command changes process-wide (environment,
    signal handlers) is put back."""
    import importlib

    assert cmd[:2] == [sys.executable, "-m"], cmd
    main = importlib.import_module(cmd[2]).main
    environ, handlers = dict(os.environ), {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(cmd[3:])
            except SystemExit as e:  # argparse
                code = e.code
    finally:
        os.environ.clear()
        os.environ.update(environ)
        for s, handler in handlers.items():
            signal.signal(s, handler)
    return subprocess.CompletedProcess(cmd, code, out.getvalue(), err.getvalue())


def start(cmd, cwd: Path = ROOT, env: dict[str, str] | None = None) -> subprocess.Popen:
    """As `run`, in its own process group, so a test can SIGKILL it with every Ray process it
    started. Its output goes to a file (a pipe nobody reads would fill up and stall it): `output(proc)`."""
    log = tempfile.NamedTemporaryFile("w+", prefix="cmd-", suffix=".log", delete=False)
    proc = subprocess.Popen(cmd, cwd=cwd, env=_environment(env), stdout=log, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    proc.log_path = log.name
    return proc


def output(proc: subprocess.Popen) -> str:
    return Path(proc.log_path).read_text()


def kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    """The command and every process it started: every process of its session (start() gives it
    one). Its process group alone is not all: Ray gives each worker a group of its own, and a worker
    left alive went on training and uploading for a second or two, into what the test read next."""
    for pid in _session(proc.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
    proc.wait()


def _session(sid: int) -> list[int]:
    """The processes of session `sid` (Linux's /proc)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):  # a process that ended meanwhile
            fields = stat.read_text().rsplit(")", 1)[1].split()  # after the command name: state ppid pgrp session
            if int(fields[3]) == sid:
                pids.append(int(stat.parent.name))
    return pids


def wait_for(predicate, proc, timeout=240, what="the kill point"):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if predicate():
            return
        if proc.poll() is not None:
            raise AssertionError(f"command ended before {what}:\n{output(proc)[-3000:]}")
        time.sleep(0.05)
    kill(proc)
    raise AssertionError(f"{what} never reached:\n{output(proc)[-3000:]}")


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on (for a server a test starts, or an endpoint that never answers)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60.0) -> None:
    """Until a server a test started accepts connections on 127.0.0.1:`port` (at most `timeout` s)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)


def records(trial_dir: Path, name: str = "metrics.jsonl") -> list[dict]:
    """The JSON lines a trial appended to one of its files (metrics.jsonl, scores.jsonl)."""
    f = Path(trial_dir) / name
    return [json.loads(line) for line in f.read_text().splitlines() if line] if f.exists() else []


def epochs_done(folder: Path, pattern: str = "*/metrics.jsonl") -> dict[str, list[int]]:
    out = {}
    for f in folder.glob(pattern):
        out[f.parent.name] = [json.loads(line)["epoch"] for line in f.read_text().splitlines() if line]
    return out


def assert_study_matches_trials(run_dir: Path) -> None:
    """The run's Optuna study holds exactly one finished trial per finished row of trials.parquet,
    with its score (COMPLETE) or as failed (FAIL), and nothing still running."""
    import pandas as pd
    from optuna.trial import TrialState

    from cvae_core.atomic import read_records
    from results import study as study_files

    table = pd.read_parquet(Path(run_dir) / "trials.parquet").set_index("trial_id")
    trials = study_files.load_study(run_dir).trials
    assert not [t.number for t in trials if t.state == TrialState.RUNNING], "a study trial is still running"
    by_tune_id = {}
    for t in trials:
        by_tune_id.setdefault(t.user_attrs[study_files.TUNE_TRIAL_ID], []).append(t)
    assert sorted(by_tune_id) == sorted(table.index), (sorted(by_tune_id), sorted(table.index))
    for tune_id, row in table.iterrows():
        [t] = by_tune_id[tune_id]
        # What TPE is fitted on (search.milestone_view): the trial's scores, at the epochs they were computed
        scores = {}
        for r in read_records(Path(row["trial_dir"]) / "scores.jsonl"):
            scores.setdefault(r["score_epoch"], []).append(r["score"])  # a resumed trial may score an epoch again
        assert set(t.intermediate_values) == set(scores), (tune_id, t.intermediate_values, scores)
        assert all(v in scores[e] for e, v in t.intermediate_values.items()), (tune_id, t.intermediate_values, scores)
        if row["status"] == "TERMINATED":
            assert t.state == TrialState.COMPLETE and t.value == row["score"], (tune_id, t.state, t.value, row["score"])
            assert t.user_attrs[study_files.STOP_REASON] == row["stop_reason"]
        else:
            assert t.state == TrialState.FAIL, (tune_id, t.state)
