#!/usr/bin/env bash
# The reference recipe on one GPU: 7,861 synthetic cucumbers split 6:2:2, ResNet v2 depth 29,
# batch 32, 200 epochs, with the defaults `imgrade train` uses on a GPU (bf16 autocast,
# channels_last, the data set and its augmentation on the GPU). Prints the GPU, training
# images/s and the wall time. Goal: the whole `imgrade train` under 3 minutes on one H200.
#
# usage: scripts/gpu_check.sh [EPOCHS] [more `imgrade train` flags]
#   scripts/gpu_check.sh                  # the full recipe
#   scripts/gpu_check.sh 200 --compile    # the same with torch.compile (compiling adds about a minute)
#   scripts/gpu_check.sh 20               # a quick look
#   PYTHON=/opt/py/bin/python scripts/gpu_check.sh    # a Python whose torch sees the GPU
#   DEVICE=cpu scripts/gpu_check.sh 2     # tries the script itself on a machine without a GPU
#
# Sized for a 10-minute call: making the data takes ~10 s, training is stopped at LIMIT_S
# (default 480 s); a stopped run still reports the epochs it finished and the time 200 would take.
# Needs torch with CUDA and imgrade's other dependencies in that Python; imgrade itself comes from src/.
set -euo pipefail
cd "$(dirname "$0")/.."
epochs="${1:-200}"
[ $# -gt 0 ] && shift

device="${DEVICE:-cuda}"
py="${PYTHON:-}"
if [ -z "$py" ]; then
  for candidate in .venv/bin/python python3 python; do
    if command -v "$candidate" >/dev/null 2>&1 && "$candidate" -c "import sys, torch; sys.exit('$device' == 'cuda' and not torch.cuda.is_available())" 2>/dev/null; then
      py="$candidate"
      break
    fi
  done
fi
if [ -z "$py" ]; then
  echo "gpu_check: no Python here has a torch that sees a GPU; set PYTHON=/path/to/python" >&2
  exit 2
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
"$py" -c "import imgrade.pipeline" || { echo "gpu_check: $py lacks imgrade's dependencies (pip install -e . or the packages in pyproject.toml)" >&2; exit 2; }
if [ "$device" = cuda ]; then
  "$py" -c "import torch; p = torch.cuda.get_device_properties(0); print(f'gpu: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}')"
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
t0=$(date +%s.%N)
"$py" -m imgrade data synth --out "$work/synth" --n 7861 --seed 0 >"$work/synth.log" 2>&1 || { cat "$work/synth.log" >&2; exit 2; }
t1=$(date +%s.%N)
status=0
timeout "${LIMIT_S:-480}" "$py" -m imgrade train --data "$work/synth" --epochs "$epochs" --device "$device" --out "$work/run" "$@" \
  >"$work/train.log" 2>&1 || status=$?
t2=$(date +%s.%N)
# the log without most epoch lines: the first, every 20th and the last
awk -v last="$epochs" '!/^epoch [0-9]+\// { print; next } { split($2, e, "/"); if (e[1] == 1 || e[1] % 20 == 0 || e[1] == last) print }' "$work/train.log"

"$py" - "$work/run" "$epochs" "$t0" "$t1" "$t2" "$status" <<'EOF'
import csv, json, sys
from pathlib import Path

run, epochs, t0, t1, t2, status = Path(sys.argv[1]), int(sys.argv[2]), *map(float, sys.argv[3:6]), int(sys.argv[6])
history = list(csv.DictReader(open(run / "history.csv"))) if (run / "history.csv").exists() else []
if not history:
    sys.exit(f"gpu_check: no epoch finished (exit status {status})")
n_train = len(json.loads((run / "split.json").read_text())["train"])
seconds = [float(row["seconds"]) for row in history]
steady = seconds[1:] or seconds  # the first epoch pays for cuDNN autotuning (and compiling)
print(f"data: 7861 synthetic images, {n_train} for training; made in {t1 - t0:.0f} s")
print(f"epochs: {len(history)}/{epochs}; first {seconds[0]:.2f} s, then {sum(steady) / len(steady):.3f} s each (training + validation)")
print(f"training: {n_train * len(steady) / sum(steady):.0f} images/s after the first epoch, {n_train * len(history) / sum(seconds):.0f} over all epochs")
print(f"final: val_loss {float(history[-1]['val_loss']):.4f}, val_mae {float(history[-1]['val_mae']):.3f}")
wall = t2 - t1
if len(history) == epochs and status == 0:
    goal = f" ({'under' if wall < 180 else 'OVER'} the 3-minute goal)" if epochs == 200 else ""
    print(f"wall time of imgrade train: {wall:.1f} s{goal}")
    if epochs != 200:
        print(f"200 epochs would take about {wall + (200 - epochs) * sum(steady) / len(steady):.0f} s (the goal: under 180)")
else:
    estimate = wall + (epochs - len(history)) * sum(steady) / len(steady)
    print(f"stopped after {wall:.0f} s (exit status {status}); {epochs} epochs would take about {estimate:.0f} s")
EOF
