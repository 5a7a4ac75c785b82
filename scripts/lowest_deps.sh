#!/usr/bin/env bash
# CI: install the lowest versions pyproject.toml allows (scripts/lowest_constraints.py: base, serve,
# train and the test tools, each ==minimum) into a fresh venv and run a smoke subset of the tests against them.
# torch stays the CPU build pinned in constraints.txt: an older torch from the index is a multi-GB
# CUDA build, so torch's minimum (2.10: the APIs used and torch.load's CVEs, see pyproject.toml) is
# not installed here; tests/unit/test_torch_floor.py checks that imgrade refuses an older one at run time.
#   scripts/lowest_deps.sh            (PYTHON=python3.11 to choose the interpreter)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
unset PYTHONPATH  # the tests must import the installed package, not src/
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

"$PYTHON" scripts/lowest_constraints.py serve train test >"$work/lowest.txt"
echo "lowest versions: $(tr '\n' ' ' <"$work/lowest.txt")"
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install --quiet --disable-pip-version-check \
  -c constraints.txt -c "$work/lowest.txt" ".[test]"
# what was installed, so a failure names the versions it ran with
"$work/venv/bin/python" -m pip list --disable-pip-version-check 2>/dev/null \
  | grep -iE "^($(cut -d= -f1 "$work/lowest.txt" | paste -sd'|')|torch|starlette|pydantic) " | tr -s ' ' | paste -sd',' -

# the smoke subset: readers, calibration (SciPy), plots (matplotlib), config (PyYAML), the ONNX export
# and runtime, the HTTP API (FastAPI, uvicorn's protocol, python-multipart), the torch-free install
"$work/venv/bin/python" -m pytest -q -p no:cacheprovider -o addopts="--import-mode=importlib -ra" \
  tests/unit/test_cucumber9.py \
  tests/unit/test_images.py \
  tests/unit/test_calibrate.py \
  tests/unit/test_stats.py \
  "tests/unit/test_plots.py::test_confusion" \
  "tests/unit/test_plots.py::test_scatter_ordinal" \
  "tests/unit/test_config.py::test_round_trip_through_dict" \
  "tests/e2e/test_export.py::test_the_file_alone_is_a_complete_grader" \
  "tests/e2e/test_export.py::test_foreign_onnx_files_are_refused_in_one_line" \
  "tests/e2e/test_extras.py::test_predict_with_an_onnx_file_needs_no_extra" \
  "tests/unit/test_serve_api.py::test_health_and_model_card" \
  "tests/unit/test_serve_api.py::test_grades_equal_the_grader_on_every_image_mode" \
  "tests/unit/test_serve_api.py::test_exif_rotation_is_applied" \
  "tests/unit/test_serve_api.py::test_a_file_that_is_not_a_usable_image_is_a_400_naming_it" \
  "tests/unit/test_serve_api.py::test_a_malformed_request_is_a_4xx_saying_how_to_send" \
  "tests/unit/test_serve_api.py::test_a_request_past_its_timeout_is_a_408_while_its_body_is_late_and_a_503_after" \
  "tests/unit/test_serve_api.py::test_headers_over_the_limit_are_a_431" \
  "tests/unit/test_serve_api.py::test_a_token_guards_every_api_route_and_nothing_else" \
  tests/unit/test_torch_floor.py
