#!/usr/bin/env bash
# What only a CUDA GPU runs, in one go and within 12 minutes: the gpu tests (tests/test_gpu.py),
# each benchmark's GPU command cut to fit, then a spaces/cnn.yaml search for the time left (10
# minutes at most), printing every figure. From the repository root: bash bench/gpu_check.sh
#
# Data: $CVAE_DATA, else ../shared/data/cifar10-jpeg.zip; without either, a synthetic CIFAR-shaped
# image tree, on which the timings hold but FID says nothing of CIFAR-10.
# GPU_CHECK_BUDGET_S (default 720) shortens the whole, e.g. to fit a 10-minute job limit.
# Without a CUDA GPU it stops at once, saying so, with exit status 1; a step that fails or runs
# out of time is reported and the next one runs, and the exit status is 1 if any did.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! nvidia-smi -L >/dev/null 2>&1; then
  echo "gpu_check: no CUDA GPU here (nvidia-smi lists none); nothing was run" >&2
  exit 1
fi
if [ -z "${VIRTUAL_ENV:-}" ] && [ -f .venv/bin/activate ]; then
  . .venv/bin/activate
fi
if ! python -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
  echo "gpu_check: torch sees no CUDA GPU (torch.cuda.is_available() is False); nothing was run" >&2
  exit 1
fi

BUDGET_S=${GPU_CHECK_BUDGET_S:-720}
DEADLINE=$BUDGET_S  # bash's SECONDS counts from the script's start
SEARCH_MIN_S=120  # the search's least share: time for its first trials to reach their first score
SHUTDOWN_S=60     # a stopped search saving Tune's state and ending Ray, then its figures
WORK=runs/gpu_check  # runs/ is ignored by git; kept after the check, to look into
failed=()

# step TITLE CAP_S COMMAND...: a header, then COMMAND for at most CAP_S seconds, and never into
# the time kept for the search. A failure or timeout is reported, recorded in `failed` and returned:
# `step ... || true` goes on to the next step.
step() {
  local title=$1 cap=$2
  shift 2
  local left=$((DEADLINE - SECONDS - SEARCH_MIN_S - SHUTDOWN_S))
  local limit=$((cap < left ? cap : left))
  echo
  echo "=== $title  [${SECONDS} s in; at most ${limit} s]"
  if ((limit <= 10)); then
    echo "--- skipped: no time left"
    failed+=("$title: skipped, no time left")
    return 1
  fi
  local t0=$SECONDS rc=0
  # SIGTERM, then SIGKILL 10 s later: the limit holds even for a command that ignores the first
  timeout -k 10 $((limit - 10)) "$@" || rc=$?
  if ((rc == 124 || rc == 137)); then
    echo "--- TIMED OUT after $((SECONDS - t0)) s"
    failed+=("$title: timed out")
  elif ((rc != 0)); then
    echo "--- FAILED (exit status $rc) after $((SECONDS - t0)) s"
    failed+=("$title: exit status $rc")
  else
    echo "--- done in $((SECONDS - t0)) s"
  fi
  return "$rc"
}

echo "=== GPU"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print(f'torch {torch.__version__}, CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}')"
echo "budget: ${BUDGET_S} s"

step "tests/test_gpu.py: compiled training, 4 trials on one GPU, real Inception on CUDA" 300 \
  python -m pytest -q -m gpu -rs --durations=0 tests/test_gpu.py || true

mkdir -p "$WORK"
DATA=${CVAE_DATA:-../shared/data/cifar10-jpeg.zip}
if [ -z "${CVAE_DATA:-}" ] && [ ! -e "$DATA" ]; then
  echo
  echo "(no $DATA and no \$CVAE_DATA: a synthetic CIFAR-shaped tree stands in; FID figures below are not CIFAR-10's)"
  DATA=$WORK/synthetic
  if [ ! -d "$DATA" ]; then
    # written aside and renamed: a tree cut short by the time limit is never read as the data
    rm -rf "$DATA.partial"
    step "data: a synthetic tree, 1,000 images per class and split" 120 \
      python -c "import sys; from pathlib import Path; sys.path.insert(0, 'tests'); from conftest import make_tree; make_tree(Path(sys.argv[1]), per_class=1000)" \
      "$DATA.partial" && mv "$DATA.partial" "$DATA" || true
  fi
fi
# Decoded once here and cached: the benches and the search read the cache, and their figures
# leave decoding out.
if ! step "data: $DATA" 180 \
  python -c "import sys; from cvae_core.data import load_data; d = load_data(sys.argv[1]); print(f'{d.source}: {len(d.train_x)} train + {len(d.test_x)} test images, {d.shape}')" \
  "$DATA"; then
  echo
  echo "gpu_check: the data cannot be read, so neither the benches nor the search can run; set CVAE_DATA" >&2
  printf 'failed: %s\n' "${failed[@]}" >&2
  exit 1
fi

# The docstrings' GPU commands on fewer images and shorter budgets, so that they and the search
# fit: their figures say whether the GPU paths run and roughly how fast, not the docstrings' targets.
# objective_cost and quality share one cached reference (a fixed 10,000 of the train split), which
# the search reads too.
step "bench/train_throughput.py: seconds per epoch, DataLoader vs the project's loop vs + torch.compile" 120 \
  python bench/train_throughput.py --device cuda --compile --data "$DATA" --n-train 5000 --epochs 2 || true
step "bench/objective_cost.py: scoring's share of a trial under spaces/cnn.yaml's schedule" 90 \
  python bench/objective_cost.py --device cuda --data "$DATA" --n-train 5000 --n-val 1000 || true
step "bench/score_cost.py: a leaderboard row's scoring, FID alone vs every measure" 90 \
  python bench/score_cost.py --device cuda --data "$DATA" --n 2000 --reference-n 2000 --repeats 1 || true
step "bench/quality.py: FID at equal training time, the report's model vs a resnet of spaces/cnn.yaml" 120 \
  python bench/quality.py --device cuda --data "$DATA" --minutes 0.25 --n-train 5000 --n-val 1000 \
    --samples-per-class 50 --reference-n 10000 --two-stage-epochs 10 || true

# The search as spaces/cnn.yaml sets it (4 trials per GPU: resources gpu 0.25), stopped when its
# time is up as a preempted job is: SIGTERM to the command alone, which saves Tune's state and
# writes trials.parquet, so its figures are read from the run folder.
search_s=$((DEADLINE - SECONDS - SHUTDOWN_S))
search_s=$((search_s < 600 ? search_s : 600))
echo
echo "=== spaces/cnn.yaml search for ${search_s} s  [${SECONDS} s in]"
t0=$SECONDS rc=0
timeout --foreground -k 40 "$search_s" \
  python -m search.run --space spaces/cnn.yaml --data "$DATA" --storage "$WORK" --fresh || rc=$?
# 124: stopped when its time was up, as planned (32 trials do not end in 10 minutes)
if ((rc == 0 || rc == 124)); then
  echo "--- done in $((SECONDS - t0)) s"
else
  echo "--- FAILED (exit status $rc) after $((SECONDS - t0)) s"
  failed+=("spaces/cnn.yaml search: exit status $rc")
fi
python - "$WORK/cnn" <<'EOF' || failed+=("spaces/cnn.yaml search: no figures")
"""The search's figures from its run folder: trials, trial-epochs, throughput, concurrency, scores."""
import sys
from collections import Counter
from pathlib import Path

import pandas as pd

from cvae_core.atomic import read_records
from cvae_core.layout import METRICS_FILE
from results.run_folder import RunFolder

run = RunFolder(Path(sys.argv[1]))
spans, epochs, scores = {}, 0, []
for f in sorted(run.path.glob(f"*/{METRICS_FILE}")):
    records = read_records(f)
    if records:
        spans[f.parent.name] = (records[0]["time"] - records[0]["epoch_seconds"], records[-1]["time"])
        epochs += len(records)
    scores += [(s["fid"], s["score_epoch"], s["score_seconds"], f.parent.name)
               for s in read_records(run.scores_file(f.parent.name))]
if not spans:
    sys.exit(f"search: no trial trained an epoch in {run.path}")
begin, end = min(s for s, _ in spans.values()), max(e for _, e in spans.values())
events = sorted([(s, 1) for s, _ in spans.values()] + [(e, -1) for _, e in spans.values()])
running = most = 0
for _, change in events:
    running += change
    most = max(most, running)
print(f"search: {len(spans)} trials trained {epochs} epochs in {end - begin:.0f} s: "
      f"{60 * epochs / (end - begin):.1f} trial-epochs a minute, at most {most} trials at once")
if run.trials_table.exists():
    table = pd.read_parquet(run.trials_table)
    print(f"  {run.trials_table.name}: {dict(Counter(table['status']))}, stop reasons {dict(Counter(table['stop_reason']))}, "
          f"{table['node_id'].nunique()} node(s)")
if scores:
    best = min(scores)
    print(f"  {len(scores)} scores, {sum(s[2] for s in scores) / len(scores):.1f} s each; best FID {best[0]:.1f} "
          f"({best[3]}, epoch {best[1]})")
for name, (start, stop) in sorted(spans.items(), key=lambda item: item[1]):
    print(f"  {name}: from {start - begin:5.0f} s to {stop - begin:5.0f} s")
EOF

echo
echo "=== gpu_check: $SECONDS s in all"
if ((${#failed[@]})); then
  printf 'failed: %s\n' "${failed[@]}"
  exit 1
fi
echo "every step passed"
