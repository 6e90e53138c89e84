"""Every benchmark runs end to end at its smallest settings: a refactor that breaks one fails here,
not when someone needs its figures. Nothing is timed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from cli import ROOT
from conftest import make_tree

pytestmark = pytest.mark.slow

TINY = ["--device", "cpu", "--preset", "mlp-M1"]
BENCHES = {
    "train_throughput": [*TINY, "--n-train", "40", "--epochs", "2", "--batch-size", "20"],
    "search_throughput": [*TINY, "--n-train", "40", "--epochs", "2", "--batch-size", "20", "--per-device", "2",
                          "--checkpoint-every", "1", "--s3", "--repeats", "2"],
    "objective_cost": [*TINY, "--n-train", "40", "--n-val", "40", "--epochs", "2", "--score-at", "2",
                       "--batch-size", "20", "--space", "spaces/smoke.yaml", "--reference-n", "20",
                       "--extractor", "tiny-random"],
    "score_cost": ["--device", "cpu", "--n", "40", "--extractor", "tiny-random", "--repeats", "1"],
    "quality": ["--device", "cpu", "--n-train", "512", "--n-val", "20", "--minutes", "0.001", "--samples-per-class",
                "3", "--reference-n", "20", "--extractor", "tiny-random", "--two-stage-width", "8",
                "--two-stage-epochs", "1",
                "--config", '{"model": {"family": "resnet", "latent": 4, "width": 4, "scales": 2, "blocks": 1}, '
                '"recipe": {"batch_size": 20}}'],
    "search_efficiency": ["--seeds", "1", "--trials", "3", "--concurrent", "2", "--grace-period", "15",
                          "--methods", "random,configured", "--epoch-seconds", "0.001"],
    "driver_scale": ["--trials", "3", "--concurrent", "2", "--epochs", "2", "--epoch-seconds", "0.01"],
    "ask_cost": ["--trials", "14", "--concurrent", "2"],  # past the GP's 10 start-up trials
    "milestone_ranking": ["--tasks", "7593", "--configs", "20"],
}
DATALESS = {"driver_scale", "search_efficiency", "ask_cost", "milestone_ranking"}
PER_CLASS = {"quality": 52}  # the report's batch of 512 needs 512 training images


@pytest.mark.parametrize("name", sorted(BENCHES))
def test_benchmark_runs(name, tmp_path):
    """... and leaves nothing of its own in the temp folder (Ray's and torch.compile's caches aside, and
    onnxruntime's `.ses`, which it writes on every start, its telemetry off or on)."""
    data = [] if name in DATALESS else ["--data", str(make_tree(tmp_path / "tree", per_class=PER_CLASS.get(name, 4)))]
    with tempfile.TemporaryDirectory(prefix="bench-") as temp:  # short: Ray's socket paths live under it
        out = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), *BENCHES[name], *data], cwd=ROOT,
                             capture_output=True, text=True, timeout=300, env={**os.environ, "TMPDIR": temp})
        left = {p.name for p in Path(temp).iterdir()}
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.strip(), "a benchmark prints its figures"
    assert {n for n in left if n not in ("ray", ".ses") and not n.startswith("torchinductor_")} == set()



@pytest.mark.parametrize("name", sorted(BENCHES))
def test_a_benchmark_answers_help_without_torch_or_ray(name):
    code = (f"import runpy, sys; sys.argv = ['{name}.py', '--help']; sys.path.insert(0, 'bench')\n"
            f"try:\n    runpy.run_path('bench/{name}.py', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "loaded = {'torch', 'ray'} & set(sys.modules); assert not loaded, loaded")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "usage:" in out.stdout, out.stderr[-2000:]


@pytest.mark.parametrize("name, args, message", [
    ("objective_cost", ["--epochs", "1"], "argument --epochs: 1 must be >= 2"),
    ("objective_cost", ["--epochs", "3", "--score-at", "5"],
     "--score-at: none of [5] is an epoch from 2 to --epochs 3"),
    ("search_throughput", ["--preset", "nope"], "argument --preset: invalid choice: 'nope'"),
    ("train_throughput", ["--data", "/nonexistent.zip"], "error: --data: "),
    ("quality", ["--config", "{"], "error: --config: "),
])
def test_a_benchmarks_bad_input_is_one_line(name, args, message, tmp_path):
    out = subprocess.run([sys.executable, str(ROOT / "bench" / f"{name}.py"), "--device", "cpu", *args], cwd=ROOT,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and message in out.stderr and "Traceback" not in out.stderr, out.stderr[-2000:]


@pytest.mark.parametrize("args, message", [
    (["--grace-period", "101"], "error: --grace-period: 101 is more than the 100 epochs a trial runs"),
    (["--space", "spaces/seed.yaml"], "error: --space spaces/seed.yaml: runs presets, not a search"),
    (["--tasks", "7593"], "error: --tasks: only with --benchmark lcbench"),
    (["--methods", "random,random"], "error: --methods: random,random names a method twice"),
    (["--epoch-seconds", "nan"], "error: argument --epoch-seconds: 'nan' is not a finite number"),
    (["--json", "TMP"], "error: argument --json: TMP: is a folder"),
])
def test_search_efficiencys_bad_input_is_one_line_before_any_search(args, message, tmp_path):
    args = [a.replace("TMP", str(tmp_path)) for a in args]
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "search_efficiency.py"), "--seeds", "1", *args],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    lines = out.stderr.splitlines()
    assert out.returncode == 2 and len(lines) == 1 and lines[0].startswith(message.replace("TMP", str(tmp_path))), lines


def test_the_baselines_are_tpe_and_random_search_whatever_the_space_configures():
    """spaces/cnn.yaml's searcher is a GP: the methods it is measured against stay what users would
    pick instead (random search, TPE with Optuna's defaults, TPE without early stopping), with plain ASHA."""
    sys.path.insert(0, str(ROOT / "bench"))
    from search_efficiency import method_search

    from search.settings import load_spec

    search = load_spec(ROOT / "spaces" / "cnn.yaml").search
    assert (search.searcher.model, search.searcher.fit_on) == ("gp", "last")
    rule = {"min_agreement": 0.5, "run_to_end_every": 8}
    search = search.model_copy(update={"asha": search.asha.model_copy(update=rule)})
    runs = {m: method_search(m, search, trials=128, grace_period=None) for m in
            ("random", "tpe-defaults", "no-early-stopping", "configured")}
    assert runs["configured"].searcher == search.searcher and runs["configured"].asha == search.asha
    # asha's rule is the configured search's own: the baselines run plain ASHA
    assert [(r.asha.min_agreement, r.asha.run_to_end_every) for m, r in runs.items() if m != "configured"] == \
        [(None, None)] * 3
    assert {m: r.searcher.model for m, r in runs.items()} == {"random": "tpe", "tpe-defaults": "tpe",
                                                              "no-early-stopping": "tpe", "configured": "gp"}
    assert runs["random"].searcher.n_startup_trials == 128  # TPE that never leaves its random start-up
    assert runs["no-early-stopping"].asha.grace_period == search.asha.max_t


def test_the_synthetic_noise_is_another_draw_in_each_seed():
    """Trial k of one seed's search and trial k of another's draw other noise (a seed is a search's
    own luck), and the same seed the same noise."""
    sys.path.insert(0, str(ROOT / "bench"))
    import optuna
    from search_efficiency import synthetic_curve

    from search.seeds import TRIAL_NUMBER
    from search.settings import load_spec

    space = load_spec(ROOT / "spaces" / "cnn.yaml").space
    config = {**space(optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1)).ask()), TRIAL_NUMBER: 3}
    scores = [[synthetic_curve(config, seed)[0](epoch) for epoch in (5, 15, 45)] for seed in (0, 1, 0)]
    assert scores[0] != scores[1] and scores[0] == scores[2]


def test_a_tuners_spend_when_a_trial_ends_counts_the_epochs_of_the_trials_still_running(tmp_path):
    """Each trial logs its epoch ends (when, its cumulative seconds); what the search had spent at a
    moment is every trial's epochs by then, up to the last epoch Tune took in from it."""
    sys.path.insert(0, str(ROOT / "bench"))
    from search_efficiency import _epoch_ends, _spent_when

    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    a.write_text("".join(json.dumps([t, 10.0 * t]) + "\n" for t in (1, 2, 3)))
    # b ended an epoch after its last one Tune took in, before its actor went
    b.write_text("".join(json.dumps([t + 0.5, 5.0 * (t + 1)]) + "\n" for t in (1, 2, 3, 4, 5)))
    ends = [_epoch_ends(a, 3), _epoch_ends(b, 4)]
    assert len(ends[1]) == 4
    assert _spent_when(ends, 3.0) == (3 + 2, 30.0 + 15.0)  # a's three epochs and b's two so far
    assert _spent_when(ends, 10.0) == (7, 30.0 + 25.0)
    assert _spent_when([_epoch_ends(tmp_path / "never-started.jsonl", 0)], 3.0) == (0, 0)


def test_lcbench_keeps_each_milestone_at_its_share_of_training():
    """cnn.yaml's milestones come at 5, 15 and 45 of 100 epochs; on LCBench's 52, at 3, 9 and 27."""
    sys.path.insert(0, str(ROOT / "bench"))
    from search_efficiency import lcbench_schedule

    from search.objective import milestones
    from search.settings import load_spec

    asha = lcbench_schedule(load_spec(ROOT / "spaces" / "cnn.yaml").search.asha)
    assert asha.max_t == 52 and milestones(asha.grace_period, asha.reduction_factor, asha.max_t) == {3, 9, 27}


def test_search_efficiency_on_lcbench_writes_every_figure(tmp_path):
    """Every method on two real tasks, in the JSON docs/benchmarks.md describes (one seed: 8 real searches,
    each its own Ray instance; two seeds made it the suite's longest test)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "search_efficiency.py"), "--benchmark", "lcbench",
                          "--tasks", "7593,126025", "--seeds", "1", "--trials", "4", "--concurrent", "2",
                          "--epoch-seconds", "0.001", "--json", str(tmp_path / "figures.json")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    methods = ["random", "tpe-defaults", "no-early-stopping", "configured"]
    assert sorted(figures["tasks"]) == ["126025", "7593"] and list(figures["median_ratio"]) == methods
    for task in figures["tasks"].values():
        assert list(task) == methods
        for f in task.values():
            assert {"median_best", "ratio", "interval", "ratio_time"} <= set(f) and len(f["interval"]) == 2
            assert f["median_best"] is None or 0 < f["median_best"] < 100  # a validation error in percent


# seed 4: among its first 16 trials, spaces/cnn.yaml's searcher samples diverging ones (seed 0: none);
# with asha's rule, every 2nd trial runs to the end and a milestone stops cutting once 3 ended trials
# show it ranks them badly
@pytest.mark.parametrize("benchmark, task, seed, asha", [("synthetic", "synthetic", 4, {}), ("lcbench", "7593", 0, {}),
                                                         ("lcbench", "7593", 0, {"min_agreement": 0.5,
                                                                                 "min_finished": 3,
                                                                                 "run_to_end_every": 2})])
def test_the_emulated_search_is_the_tuners_trial_for_trial(benchmark, task, seed, asha, tmp_path):
    """One trial at a time, past the searcher's start-up (10 trials) and, on the synthetic function,
    through failing trials: the same trials end in the same order with the same scores after the
    same epochs."""
    if benchmark == "lcbench" and not (ROOT.parent / "shared" / "benchmarks" / "lcbench").is_dir():
        pytest.skip("no LCBench beside the repository")
    raw = yaml.safe_load((ROOT / "spaces" / "cnn.yaml").read_text())
    raw["search"]["asha"].update(asha)
    space = tmp_path / "space.yaml"
    space.write_text(yaml.safe_dump(raw))

    def ended(*emulate):
        out = subprocess.run([sys.executable, str(ROOT / "bench" / "search_efficiency.py"), "--benchmark", benchmark,
                              "--trials", "16", "--concurrent", "1", "--epoch-seconds", "0", "--space", str(space),
                              *emulate, "--one", "configured", str(seed), task],
                             cwd=ROOT, capture_output=True, text=True, timeout=300)
        assert out.returncode == 0, out.stderr[-3000:]
        return json.loads(out.stdout.strip().splitlines()[-1])

    tuner = ended()
    assert len(tuner) == 16 and not all(t[1] for t in tuner)  # ASHA stopped some
    assert benchmark == "lcbench" or any(t[0] is None for t in tuner)  # a diverging trial failed
    assert ended("--emulate") == tuner


def test_an_emulated_search_counts_the_epochs_of_the_trials_still_running():
    """Every trial to max_t, 4 at once: when the first ends (epoch 100) the other three have trained
    about as long, and the search spends 8 x 100 trial-epochs in all (seed 0: no trial diverges)."""
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "search_efficiency.py"), "--emulate", "--trials", "8",
                          "--concurrent", "4", "--one", "no-early-stopping", "0", "synthetic"],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    ended = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(ended) == 8 and all(full for _, full, _, _ in ended)
    assert ended[0][2] >= 4 * 100 - 3 and ended[-1][2] == 8 * 100  # the running trials' epochs, all but a step's


def _emulated_bench(*flags: str) -> str:
    out = subprocess.run([sys.executable, str(ROOT / "bench" / "search_efficiency.py"), "--emulate", "--trials", "16",
                          *flags], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def _per_seed(stdout: str) -> list[str]:
    """Each method's per-seed (final best, trial-epochs) as the bench prints them."""
    return [line.split(": ", 1)[1].split("), (") for line in stdout.splitlines() if "per seed" in line]


def test_the_emulated_benchmark_writes_every_figure(tmp_path):
    two = _emulated_bench("--seeds", "2", "--json", str(tmp_path / "figures.json"))
    figures = json.loads((tmp_path / "figures.json").read_text())
    assert list(figures["tasks"]) == ["synthetic"] and len(figures["median_ratio"]) == 4
    # --first-seed 1 runs the second of those seeds, the same searches
    second = _emulated_bench("--seeds", "1", "--first-seed", "1")
    assert len(_per_seed(second)) == 4 and all(len(seeds) == 2 for seeds in _per_seed(two))
    assert [seeds[1].strip("()") for seeds in _per_seed(two)] == [s.strip("()") for [s] in _per_seed(second)]
    # --parallel 2: the same searches, two at once in processes of their own
    _emulated_bench("--seeds", "2", "--parallel", "2", "--json", str(tmp_path / "parallel.json"))
    assert json.loads((tmp_path / "parallel.json").read_text()) == figures
