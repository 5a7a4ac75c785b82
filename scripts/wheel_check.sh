#!/usr/bin/env bash
# CI: build the wheel and the sdist, install the wheel alone (`pip install imgrade`: no torch) into a
# fresh venv and grade a photo there with an .onnx file that VENV (the full install) trained and exported.
#   scripts/wheel_check.sh            (VENV=.venv, PYTHON=python3 for the fresh venv)
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
PYTHON=${PYTHON:-python3}
unset PYTHONPATH
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$VENV/bin/python" -m build --outdir "$work/dist" . >"$work/build.log" 2>&1 || { cat "$work/build.log" >&2; exit 1; }
wheel=$(ls "$work"/dist/imgrade-*.whl)
sdist=$(ls "$work"/dist/imgrade-*.tar.gz)
unzip -l "$wheel" >"$work/wheel.txt"
tar tzf "$sdist" >"$work/sdist.txt"
for member in imgrade/py.typed imgrade/serve/static/index.html LICENSE; do
  grep -q "$member" "$work/wheel.txt" || { echo "the wheel lacks $member" >&2; exit 1; }
  grep -q "$member" "$work/sdist.txt" || { echo "the sdist lacks $member" >&2; exit 1; }
done
echo "built $(basename "$wheel") and $(basename "$sdist")"

# a tiny model, made with the full install
"$VENV/bin/imgrade" -q data synth --out "$work/synth" --n 60 --seed 0 --format folders
"$VENV/bin/imgrade" -q train --data "$work/synth" --epochs 1 --depth 11 --out "$work/run"
"$VENV/bin/imgrade" -q export "$work/run" --out "$work/model.onnx"
photo=$(find "$work/synth" -name '*.png' | head -1)

# the base install, in a venv that has never seen torch
"$PYTHON" -m venv "$work/base"
"$work/base/bin/python" -m pip install --quiet --disable-pip-version-check "$wheel"
if "$work/base/bin/python" -c "import torch" 2>/dev/null; then
  echo "torch is importable in the base install" >&2
  exit 1
fi
"$work/base/bin/imgrade" predict "$work/model.onnx" "$photo" --format json >"$work/grades.json"
"$work/base/bin/python" - "$work/grades.json" "$work/model.onnx" <<'EOF'
import json
import sys

import imgrade
from imgrade.runtime import load_grader

(row,) = json.load(open(sys.argv[1]))
grades = load_grader(sys.argv[2]).grade_names
assert row["grade"] in grades, (row, grades)
assert "site-packages" in imgrade.__file__, imgrade.__file__
print(f"the base install graded {row['image'].rsplit('/', 1)[-1]}: {row['grade']} (score {row['score']})")
EOF
# and a verb that needs an extra says which
if "$work/base/bin/imgrade" train --data "$work/synth" --out "$work/run2" 2>"$work/train.err"; then
  echo "imgrade train ran without torch" >&2
  exit 1
fi
grep -qx "imgrade train needs PyTorch: pip install 'imgrade\[train\]'" "$work/train.err" || { cat "$work/train.err" >&2; exit 1; }
echo "without the train extra: $(cat "$work/train.err")"
